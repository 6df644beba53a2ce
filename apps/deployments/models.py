from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from inference_backend.config import BATCHING_FIELDS, BatchingSettings


class Hardware(models.TextChoices):
    CPU = "cpu", "CPU"
    GPU = "gpu", "GPU"
    NPU = "npu", "NPU"


class ServerState(models.TextChoices):
    UNKNOWN = "unknown", _("Unknown")
    UP = "up", _("Up")
    DOWN = "down", _("Down")


# Django's URLValidator refuses single-label hosts ("http://triton-1:8000"), which is exactly how
# Compose and Kubernetes name services; accept any host name, IPv4 or [IPv6], optional port.
server_url_validator = RegexValidator(
    r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?)(:\d{1,5})?/?$",
    "Enter an http(s) URL with a host and optional port, e.g. http://triton-1:8000",
    code="invalid_server_url",
)


class Backend(models.TextChoices):
    """Triton backends a server runs. The CPU language-model path is the python backend; GPU hosts
    declare vllm or tensorrtllm for the layouts the registry renders (docs/llm.md)."""

    PYTHON = "python"
    ONNXRUNTIME = "onnxruntime"
    VLLM = "vllm"
    TENSORRTLLM = "tensorrtllm"


def default_backends() -> list[str]:
    return [Backend.PYTHON.value, Backend.ONNXRUNTIME.value]


def validate_backends(value) -> None:
    from django.core.exceptions import ValidationError
    from django.utils.translation import gettext

    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValidationError(gettext("backends must be a non-empty list of names"), code="invalid_backends")
    unknown = sorted(set(value) - set(Backend.values))
    if unknown:
        raise ValidationError(
            gettext("unknown backend(s) %(unknown)s; known: %(known)s")
            % {"unknown": ", ".join(unknown)[:200], "known": ", ".join(Backend.values)},
            code="invalid_backends",
        )
    if len(set(value)) != len(value):
        raise ValidationError(gettext("backends lists a name twice"), code="invalid_backends")


class InferenceServer(models.Model):
    """A Triton Inference Server endpoint the portal deploys onto (no shared disk assumed)."""

    name = models.CharField(max_length=63, unique=True)
    http_url = models.CharField(
        max_length=300, validators=[server_url_validator], help_text=_("e.g. http://triton-1:8000")
    )
    grpc_url = models.CharField(max_length=200, blank=True, help_text=_("host:port of the gRPC endpoint"))
    hardware = models.CharField(max_length=8, choices=Hardware.choices, default=Hardware.CPU)
    backends = models.JSONField(
        default=default_backends,
        blank=True,  # empty in a form means the default
        validators=[validate_backends],
        help_text=_("Triton backends this server runs: python, onnxruntime, vllm, tensorrtllm"),
    )
    # Issue 15: the credential Triton's restricted APIs require (docs/triton-credential.md), sealed
    # under its own data key (AES/SM4-GCM, wrapped by the KEK); never stored or shown in clear.
    credential_ciphertext = models.BinaryField(blank=True, default=b"", editable=False)
    credential_key = models.OneToOneField(
        "keys.DataKey", null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    # Issue 16: what the scheduler places on. Accelerators other than the CPU cannot be tested here:
    # they are declared (kind, model, memory), and their metrics read from Triton where present.
    accelerator_model = models.CharField(max_length=100, blank=True, help_text=_("e.g. A100-80GB, Ascend 910B"))
    memory_mb = models.PositiveIntegerField(
        default=0, help_text=_("memory the scheduler may fill with replicas (MiB); 0: not declared, no bin-packing")
    )
    labels = models.JSONField(default=dict, blank=True, help_text='free-form labels, e.g. {"zone": "phi"}')
    metrics_url = models.CharField(
        max_length=300, blank=True, help_text=_("Triton's metrics endpoint, e.g. http://triton-1:8002/metrics")
    )
    state = models.CharField(max_length=16, choices=ServerState.choices, default=ServerState.UNKNOWN)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # Issue 17: how the health checks went lately, so that an unreachable server says so at once.
    failures = models.PositiveIntegerField(
        default=0,
        help_text=_("checks in a row (probes and deployments) that could not reach the server; 0 once it answers"),
    )
    checked_at = models.DateTimeField(null=True, blank=True, help_text=_("the last check, answered or not"))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_credential(self) -> bool:
        """True when the portal holds a restricted-API credential for this server."""
        return self.credential_key_id is not None


class Desired(models.TextChoices):
    ACTIVE = "active", _("Active")
    INACTIVE = "inactive", _("Inactive")


class Observed(models.TextChoices):
    PENDING = "pending", _("Pending")
    LOADING = "loading", _("Loading")
    ACTIVE = "active", _("Active")
    UNLOADING = "unloading", _("Unloading")
    INACTIVE = "inactive", _("Inactive")
    FAILED = "failed", _("Failed")


class Kind(models.TextChoices):
    CPU = "KIND_CPU"
    GPU = "KIND_GPU"


def triton_model_name(model_name: str, version: int) -> str:
    """The name a model version is loaded under on Triton: the version travels in the name, so that
    several versions of one model can run side by side on one server. Unique: the suffix is always
    the last "--v<digits>" (model names may hold "-" and digits, never a suffix-free ambiguity)."""
    return f"{model_name}--v{int(version)}"


class ReplicaSetState(models.TextChoices):
    ACTIVE = "active", _("Active")
    RETIRED = "retired", _("Retired")


class AutoscaleMetric(models.TextChoices):
    """What the autoscaler measures per replica (docs/fleet.md, "Autoscaling")."""

    IN_FLIGHT = "in_flight", _("in-flight requests per replica (Triton's pending requests)")
    QUEUE_MS = "queue_ms", _("queue time per request (ms, Triton's counters over the last interval)")


class ReplicaSet(models.Model):
    """N replicas of one model version, with placement constraints and a share of the model's
    traffic. The scheduler turns it into Deployment rows (one per replica, each on a server).

    With `autoscale` on, the autoscaler (apps/deployments/autoscale.py) keeps `replicas` within
    [min_replicas, max_replicas] at the number the load asks for: ceil(load / autoscale_target)."""

    model = models.ForeignKey("registry.Model", on_delete=models.PROTECT, related_name="replica_sets")
    model_version = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="replica_sets")
    replicas = models.PositiveIntegerField(default=1)
    min_replicas = models.PositiveIntegerField(default=1)
    max_replicas = models.PositiveIntegerField(default=1)
    # placement: every label here must be on the server (key=value); accelerator/backend blank = any
    labels = models.JSONField(default=dict, blank=True)
    accelerator = models.CharField(max_length=8, choices=Hardware.choices, blank=True)
    memory_mb = models.PositiveIntegerField(default=0, help_text=_("memory one replica needs (MiB); 0: not estimated"))
    # percent of the model's unversioned calls this version receives (the live sets of a model sum to 100)
    traffic_weight = models.PositiveSmallIntegerField(default=0)
    state = models.CharField(max_length=16, choices=ReplicaSetState.choices, default=ReplicaSetState.ACTIVE)
    # Issue 16, autoscaling (off by default): changed only by services.configure_autoscale.
    autoscale = models.BooleanField(default=False)
    autoscale_metric = models.CharField(
        max_length=16, choices=AutoscaleMetric.choices, default=AutoscaleMetric.IN_FLIGHT
    )
    autoscale_target = models.FloatField(default=4.0, help_text=_("the metric's target per replica"))
    autoscale_cooldown_seconds = models.PositiveIntegerField(
        default=300, help_text=_("no change within this time of the last; scale-down after this long below target")
    )
    scaled_at = models.DateTimeField(null=True, blank=True, help_text=_("when the number of replicas last changed"))
    # The controller's memory between ticks (counters, since when the load is low, the last decision):
    # an observation, kept out of the field log, written with QuerySet.update.
    autoscale_state = models.JSONField(default=dict, blank=True, editable=False)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_version"], condition=Q(state="active"), name="one_active_replica_set_per_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_version} ×{self.replicas}"


class Deployment(models.Model):
    """One replica: a model version placed on a server. The database holds the desired state; the
    reconcile task moves Triton toward it and records each observed state in DeploymentTransition.

    A version is loaded on Triton under triton_model_name(model, version), so several versions of
    one model may run on one server; at most one deployment per (version, server) may be desired
    active.
    """

    model = models.ForeignKey("registry.Model", on_delete=models.PROTECT, related_name="deployments")
    model_version = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="deployments")
    replica_set = models.ForeignKey(
        ReplicaSet, null=True, blank=True, on_delete=models.PROTECT, related_name="deployments"
    )
    server = models.ForeignKey(InferenceServer, on_delete=models.PROTECT, related_name="deployments")
    max_batch_size = models.PositiveIntegerField(default=8)
    dynamic_batching = models.BooleanField(default=True)
    preferred_batch_sizes = models.JSONField(default=list, blank=True)
    max_queue_delay_us = models.PositiveIntegerField(default=100)
    instance_count = models.PositiveIntegerField(default=1)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.CPU)
    # The batching Triton was last loaded with (BatchingSettings.as_dict()); {} before the first load
    # (or for rows older than config rollouts). When it differs from the columns above, the reconcile
    # reloads the model in place: Triton keeps serving the old config until the new one is ready.
    applied_batching = models.JSONField(default=dict, blank=True, editable=False)
    desired_state = models.CharField(max_length=16, choices=Desired.choices, default=Desired.ACTIVE)
    observed_state = models.CharField(max_length=16, choices=Observed.choices, default=Observed.PENDING)
    last_error = models.TextField(blank=True)
    # Issue 17: a reconcile that could not reach the server is retried with backoff; how many times
    # so far and when the next try is due (both cleared when the deployment changes state).
    retries = models.PositiveSmallIntegerField(default=0, help_text=_("retries so far: the server did not answer"))
    retry_at = models.DateTimeField(null=True, blank=True, help_text=_("when the next retry is due"))
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "server"],
                condition=Q(desired_state="active"),
                name="one_active_deployment_per_version_server",
            )
        ]
        indexes = [models.Index(fields=["model", "observed_state"])]

    def __str__(self) -> str:
        return f"{self.model_version} on {self.server}"

    @property
    def triton_name(self) -> str:
        """The name this replica's version is loaded under on Triton (triton_model_name)."""
        return triton_model_name(self.model.name, self.model_version.version)

    def batching(self) -> BatchingSettings:
        return BatchingSettings(**{name: getattr(self, name) for name in BATCHING_FIELDS})

    @property
    def reload_pending(self) -> bool:
        """True when the batching asked for is not the one Triton was last loaded with."""
        return bool(self.applied_batching) and self.applied_batching != self.batching().as_dict()


class DeploymentTransition(models.Model):
    """The history of a deployment: every observed-state change with its time and error text."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=16, choices=Observed.choices, blank=True)
    to_state = models.CharField(max_length=16, choices=Observed.choices)
    message = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.from_state or '-'} → {self.to_state}"


class RolloutStrategy(models.TextChoices):
    BLUE_GREEN = "blue_green", _("blue-green")
    CANARY = "canary", _("canary")


class RolloutKind(models.TextChoices):
    VERSION = "version", _("version")  # traffic from one version's set to another's
    CONFIG = "config", _("batching configuration")  # one set's replicas reconfigured, replica by replica


class RolloutState(models.TextChoices):
    PENDING = "pending", _("Pending")
    WAITING_READY = "waiting_ready", _("Waiting Ready")
    RUNNING = "running", _("Running")
    PROMOTED = "promoted", _("Promoted")
    ROLLED_BACK = "rolled_back", _("Rolled Back")
    ABORTED = "aborted", _("Aborted")
    FAILED = "failed", _("Failed")


UNFINISHED_ROLLOUT_STATES = (RolloutState.PENDING, RolloutState.WAITING_READY, RolloutState.RUNNING)


class Rollout(models.Model):
    """Moving a model's traffic from one replica set (the live version) to another (the new one),
    in weighted steps held for a while each, judged by the gateway's own figures of the new
    version (apps/deployments/slo.py); docs/rollouts.md. Changed only by apps.deployments.services."""

    model = models.ForeignKey("registry.Model", on_delete=models.PROTECT, related_name="rollouts")
    from_set = models.ForeignKey(ReplicaSet, on_delete=models.PROTECT, related_name="rollouts_from")
    to_set = models.ForeignKey(ReplicaSet, on_delete=models.PROTECT, related_name="rollouts_to")
    strategy = models.CharField(max_length=16, choices=RolloutStrategy.choices, default=RolloutStrategy.CANARY)
    kind = models.CharField(max_length=8, choices=RolloutKind.choices, default=RolloutKind.VERSION)
    # A config rollout (kind=config, from_set == to_set): {"after": batching, "before": {deployment id:
    # batching}, "canary": [deployment ids reconfigured first], "surge": deployment id or None}.
    config = models.JSONField(default=dict, blank=True)
    sweep = models.ForeignKey(
        "BatchingSweep", null=True, blank=True, on_delete=models.PROTECT, related_name="rollouts",
        help_text=_("the batching sweep whose chosen configuration this config rollout applies"),
    )  # fmt: skip
    steps = models.JSONField(default=list, help_text=_("the new version's weight at each step, ending in 100"))
    hold_seconds = models.PositiveIntegerField(default=60, help_text=_("how long each step is held before the next"))
    slo_max_error_rate = models.FloatField(default=0.01, help_text=_("fraction of failed calls (5xx) that rolls back"))
    slo_max_p95_ms = models.FloatField(default=1000.0, help_text=_("p95 latency (ms) that rolls back"))
    min_calls = models.PositiveIntegerField(default=20, help_text=_("calls a step needs before it is judged"))
    state = models.CharField(max_length=16, choices=RolloutState.choices, default=RolloutState.PENDING)
    current_step = models.PositiveSmallIntegerField(default=0, help_text=_("index into steps"))
    step_started_at = models.DateTimeField(null=True, blank=True)
    forced = models.BooleanField(default=False, help_text=_("started despite breaking signature changes"))
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["model"],
                condition=Q(state__in=["pending", "waiting_ready", "running"]),
                name="one_unfinished_rollout_per_model",
            )
        ]

    def __str__(self) -> str:
        if self.kind == RolloutKind.CONFIG:
            return f"{self.model} v{self.to_set.model_version.version} batching"
        return f"{self.model} v{self.from_set.model_version.version}→v{self.to_set.model_version.version}"

    @property
    def finished(self) -> bool:
        return self.state not in UNFINISHED_ROLLOUT_STATES

    @property
    def target_weight(self) -> int:
        """The new version's weight at the current step (0 before the first step runs)."""
        if self.state != RolloutState.RUNNING or not self.steps:
            return 0
        return int(self.steps[min(self.current_step, len(self.steps) - 1)])


class SweepState(models.TextChoices):
    PENDING = "pending", _("Pending")
    RUNNING = "running", _("Running")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")


class ArrivalKind(models.TextChoices):
    RECORDED = "recorded", _("recorded (the gateway's figures of the version)")
    SYNTHETIC = "synthetic", _("synthetic (a rate given explicitly)")


UNFINISHED_SWEEP_STATES = (SweepState.PENDING, SweepState.RUNNING)


class BatchingSweep(models.Model):
    """A batching tuner run for one replica set (docs/tuning.md): every configuration of `grid`
    (max_batch_size × max_queue_delay_us × preferred_batch_sizes × instance_count) is loaded on a
    dedicated replica — its own Triton name (`tune_name`), never a Deployment row, so the gateway
    never routes to it — and driven open-loop at the arrival pattern `repeats` times; `points` holds
    throughput and p99 (mean and spread) and errors per configuration, `chosen` the configuration
    with the most throughput whose p99 stays under `slo_p99_ms`, `reason` why. Changed only by
    apps.deployments.tuning; at most one unfinished sweep per replica set."""

    replica_set = models.ForeignKey(ReplicaSet, on_delete=models.PROTECT, related_name="sweeps")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=16, choices=SweepState.choices, default=SweepState.PENDING)
    arrival = models.CharField(max_length=16, choices=ArrivalKind.choices, default=ArrivalKind.RECORDED)
    rate_per_second = models.FloatField(help_text=_("calls per second the sweep offers"))
    burstiness = models.FloatField(
        default=1.0, help_text=_("coefficient of variation of the gaps between calls: 1 Poisson, <1 regular, >1 bursty")
    )
    window_seconds = models.PositiveIntegerField(default=0, help_text=_("recorded: the window the rate was read over"))
    slo_p99_ms = models.FloatField(
        help_text=_("a configuration qualifies when its p99 (mean of repeats) is under this")
    )
    grid = models.JSONField(default=dict, help_text=_("the values swept, per batching setting"))
    repeats = models.PositiveSmallIntegerField(default=3)
    point_seconds = models.FloatField(default=10.0, help_text=_("how long each repeat of each point is driven"))
    warmup_seconds = models.FloatField(default=1.0, help_text=_("driven before each point's repeats, not measured"))
    points = models.JSONField(default=list, blank=True, help_text=_("one row per configuration, in grid order"))
    chosen = models.JSONField(null=True, blank=True, help_text=_("the configuration picked (batching settings)"))
    reason = models.TextField(blank=True)
    server = models.ForeignKey(InferenceServer, null=True, blank=True, on_delete=models.SET_NULL, related_name="sweeps")
    tune_name = models.CharField(max_length=160, blank=True, help_text=_("the dedicated replica's Triton name"))
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["replica_set"],
                condition=Q(state__in=["pending", "running"]),
                name="one_unfinished_sweep_per_replica_set",
            )
        ]

    def __str__(self) -> str:
        return f"sweep #{self.pk} of {self.replica_set.model_version}"

    @property
    def finished(self) -> bool:
        return self.state not in UNFINISHED_SWEEP_STATES


def tune_model_name(model_name: str, version: int, sweep_id: int) -> str:
    """The dedicated replica's Triton name: the version's own name plus `--tune<sweep id>`. No
    Deployment row carries it, so no gateway route leads to it."""
    return f"{triton_model_name(model_name, version)}--tune{int(sweep_id)}"
