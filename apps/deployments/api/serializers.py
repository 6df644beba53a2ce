from rest_framework import serializers

from inference_backend.config import BATCHING_FIELDS

from .. import services
from ..models import (
    ArrivalKind,
    BatchingSweep,
    Deployment,
    DeploymentTransition,
    Desired,
    Hardware,
    InferenceServer,
    Kind,
    Observed,
    ReplicaSet,
    Rollout,
    RolloutKind,
    RolloutStrategy,
)
from ..selectors import gateway_says


class InferenceServerSerializer(serializers.ModelSerializer):
    # validated by the service (audited refusal `invalid_backends`), not here
    backends = serializers.ListField(
        child=serializers.CharField(max_length=32),
        required=False,
        help_text="Triton backends the server runs: python, onnxruntime, vllm, tensorrtllm "
        "(default python and onnxruntime)",
    )
    # Write-only: validated and sealed by the service; never shown back (docs/triton-credential.md).
    credential = serializers.CharField(
        write_only=True,
        required=False,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="The server's restricted-API credential (the value Triton was started with in "
        "--http-restricted-api / --grpc-restricted-protocol); stored sealed, never returned",
    )
    has_credential = serializers.BooleanField(read_only=True)
    gateway_says = serializers.SerializerMethodField(
        help_text="the gateway data plane's own experience of the server: its circuit breaker and last error"
    )
    # validated by the service (`invalid_labels`), not here: any JSON reaches it
    labels = serializers.JSONField(
        required=False, help_text='free-form labels the scheduler matches, e.g. {"zone": "phi", "site": "beijing"}'
    )
    metrics_url = serializers.CharField(
        max_length=300,
        required=False,
        allow_blank=True,
        help_text="Triton's metrics endpoint, e.g. http://triton-1:8002/metrics (same address policy as http_url)",
    )

    class Meta:
        model = InferenceServer
        fields = [
            "id",
            "name",
            "http_url",
            "grpc_url",
            "hardware",
            "accelerator_model",
            "memory_mb",
            "backends",
            "labels",
            "metrics_url",
            "credential",
            "has_credential",
            "state",
            "last_seen_at",
            "gateway_says",
            "last_error",
            "failures",
            "checked_at",
            "created_at",
        ]
        read_only_fields = ["state", "last_seen_at", "last_error", "failures", "checked_at", "created_at"]

    def get_gateway_says(self, obj) -> str:
        return gateway_says(obj.pk) if obj.pk else ""


class InferenceServerUpdateSerializer(serializers.Serializer):
    """What may change on a registered server (PATCH): its declarations, not its name or address."""

    hardware = serializers.ChoiceField(choices=Hardware.choices, required=False)
    accelerator_model = serializers.CharField(max_length=100, required=False, allow_blank=True)
    memory_mb = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)
    backends = serializers.ListField(child=serializers.CharField(max_length=32), required=False)
    labels = serializers.JSONField(required=False)
    metrics_url = serializers.CharField(max_length=300, required=False, allow_blank=True)
    grpc_url = serializers.CharField(max_length=200, required=False, allow_blank=True)


class ServerCredentialSerializer(serializers.Serializer):
    credential = serializers.CharField(
        write_only=True,
        allow_null=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="The new credential, or null to remove it (the server's calls then go without one)",
    )


class TransitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeploymentTransition
        fields = ["from_state", "to_state", "message", "at"]


class DeploymentSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name", read_only=True)
    version = serializers.IntegerField(source="model_version.version", read_only=True)
    server_name = serializers.CharField(source="server.name", read_only=True)
    transitions = TransitionSerializer(many=True, read_only=True)

    class Meta:
        model = Deployment
        fields = [
            "id",
            "model",
            "version",
            "model_version",
            "server",
            "server_name",
            *BATCHING_FIELDS,
            "desired_state",
            "observed_state",
            "last_error",
            "retries",
            "retry_at",
            "created_at",
            "updated_at",
            "transitions",
        ]
        read_only_fields = fields


class DeploymentRequestSerializer(serializers.Serializer):
    model_version = serializers.IntegerField(help_text="id of the model version to deploy")
    server = serializers.IntegerField(help_text="id of the inference server")
    max_batch_size = serializers.IntegerField(required=False, min_value=0)
    dynamic_batching = serializers.BooleanField(required=False)
    preferred_batch_sizes = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False)
    max_queue_delay_us = serializers.IntegerField(required=False, min_value=0)
    instance_count = serializers.IntegerField(required=False, min_value=1)
    kind = serializers.ChoiceField(choices=Kind.choices, required=False)


class RolloutSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name", read_only=True)
    from_version = serializers.IntegerField(source="from_set.model_version.version", read_only=True)
    to_version = serializers.IntegerField(source="to_set.model_version.version", read_only=True)
    weights = serializers.SerializerMethodField(help_text="the two sets' traffic weights now, by version")
    window = serializers.SerializerMethodField(
        help_text="the gateway's figures of the new version since the current step started: calls, errors, "
        "error_rate, p95_ms (a config rollout: of its reconfigured replicas)"
    )
    # plain text so the schema's one `kind` enum stays the deployment's (KIND_CPU, KIND_GPU)
    kind = serializers.CharField(read_only=True, help_text="version (traffic between two sets) or config (batching)")
    config_diff = serializers.SerializerMethodField(
        help_text="a config rollout: {batching field: [before, after]} for the fields it changes"
    )
    replicas = serializers.SerializerMethodField(
        help_text="a config rollout: per replica, its server, whether it runs the new batching and its figures"
    )

    class Meta:
        model = Rollout
        fields = [
            "id",
            "model",
            "from_version",
            "to_version",
            "from_set",
            "to_set",
            "kind",
            "strategy",
            "steps",
            "hold_seconds",
            "slo_max_error_rate",
            "slo_max_p95_ms",
            "min_calls",
            "state",
            "current_step",
            "step_started_at",
            "forced",
            "reason",
            "weights",
            "window",
            "config",
            "config_diff",
            "replicas",
            "sweep",
            "created_at",
            "updated_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_weights(self, obj) -> dict:
        return services.rollout_weights(obj)

    def get_window(self, obj) -> dict | None:
        if obj.step_started_at is None or obj.finished:
            return None
        return services.rollout_window(obj).as_dict()

    def get_config_diff(self, obj) -> dict | None:
        return services.config_diff(obj) if obj.kind == RolloutKind.CONFIG else None

    def get_replicas(self, obj) -> list[dict] | None:
        return services.replica_figures(obj) if obj.kind == RolloutKind.CONFIG else None


class RolloutRequestSerializer(serializers.Serializer):
    # Steps, hold and SLO values are checked by the service (audited refusals), not here.
    model = serializers.CharField(max_length=200, help_text="the model's name")
    to_version = serializers.IntegerField(required=False, help_text="id of the model version to roll out")
    to_set = serializers.IntegerField(required=False, help_text="id of an active replica set of the new version")
    replica_set = serializers.IntegerField(
        required=False, help_text="with `batching`: id of the live replica set whose batching changes"
    )
    batching = serializers.JSONField(
        required=False,
        help_text="a batching configuration rollout of `replica_set` (same version), e.g. "
        '{"max_batch_size": 16, "max_queue_delay_us": 500}: replica by replica (docs/rollouts.md)',
    )
    strategy = serializers.ChoiceField(choices=RolloutStrategy.choices, default=RolloutStrategy.CANARY)
    steps = serializers.JSONField(
        required=False, help_text="the new version's weight at each step, e.g. [5, 25, 100] (blue-green: [100])"
    )
    hold_seconds = serializers.JSONField(required=False, help_text="seconds each step is held (default 60)")
    slo_max_error_rate = serializers.JSONField(required=False, help_text="failed-call fraction that rolls back")
    slo_max_p95_ms = serializers.JSONField(required=False, help_text="p95 latency (ms) that rolls back")
    min_calls = serializers.JSONField(required=False, help_text="calls a step needs before it is judged")
    force = serializers.BooleanField(default=False, help_text="roll out through breaking signature changes")


class ReplicaSetSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name", read_only=True)
    version = serializers.IntegerField(source="model_version.version", read_only=True)
    ready = serializers.SerializerMethodField(help_text="replicas desired active and observed ACTIVE")
    servers = serializers.SerializerMethodField(help_text="the servers of its desired-active replicas")
    deployments = serializers.SerializerMethodField(help_text="ids of all its deployments (replicas), newest first")
    autoscale_status = serializers.SerializerMethodField(
        help_text="the autoscaler's last decision: at, outcome (up, down, hold, refused, rollout), reason, "
        "loads (per replica id), total"
    )
    # the server's `hardware` choices; plain text here so the schema names that choice set once
    accelerator = serializers.CharField(read_only=True, help_text="cpu, gpu or npu; blank: any")

    class Meta:
        model = ReplicaSet
        fields = [
            "id",
            "model",
            "version",
            "model_version",
            "replicas",
            "ready",
            "min_replicas",
            "max_replicas",
            "labels",
            "accelerator",
            "memory_mb",
            "traffic_weight",
            "state",
            "servers",
            "deployments",
            "autoscale",
            "autoscale_metric",
            "autoscale_target",
            "autoscale_cooldown_seconds",
            "scaled_at",
            "autoscale_status",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_autoscale_status(self, obj) -> dict:
        return (obj.autoscale_state or {}).get("last", {})

    def _active(self, obj) -> list:
        return [d for d in obj.deployments.all() if d.desired_state == Desired.ACTIVE]

    def get_ready(self, obj) -> int:
        return sum(1 for d in self._active(obj) if d.observed_state == Observed.ACTIVE)

    def get_servers(self, obj) -> list[str]:
        return [d.server.name for d in self._active(obj)]

    def get_deployments(self, obj) -> list[int]:
        return [d.pk for d in obj.deployments.all()]


class ReplicaSetRequestSerializer(serializers.Serializer):
    model_version = serializers.IntegerField(help_text="id of the model version to serve")
    # ranges are the service's (`invalid_replicas`, `invalid_labels`, `unknown_accelerator`)
    replicas = serializers.IntegerField(required=False, default=1, help_text="how many replicas (1-64)")
    labels = serializers.JSONField(
        required=False, default=dict, help_text='labels every chosen server must carry, e.g. {"zone": "phi"}'
    )
    accelerator = serializers.CharField(
        required=False, default="", allow_blank=True, help_text="cpu, gpu or npu; blank for any"
    )
    memory_mb = serializers.IntegerField(
        required=False, default=0, min_value=0, help_text="memory one replica needs (MiB); 0: not estimated"
    )
    max_batch_size = serializers.IntegerField(required=False, min_value=0)
    dynamic_batching = serializers.BooleanField(required=False)
    preferred_batch_sizes = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False)
    max_queue_delay_us = serializers.IntegerField(required=False, min_value=0)
    instance_count = serializers.IntegerField(required=False, min_value=1)
    kind = serializers.ChoiceField(choices=Kind.choices, required=False)


class ReplicaSetAutoscaleSerializer(serializers.Serializer):
    """Any of the settings; the others keep their values. Ranges are the service's (`invalid_autoscale`)."""

    enabled = serializers.BooleanField(required=False, help_text="autoscaling on or off")
    metric = serializers.CharField(required=False, help_text="in_flight or queue_ms")
    target = serializers.FloatField(required=False, help_text="the metric's target per replica (> 0)")
    min_replicas = serializers.IntegerField(required=False, help_text="fewest replicas (1-64)")
    max_replicas = serializers.IntegerField(required=False, help_text="most replicas (1-64, >= min_replicas)")
    cooldown_seconds = serializers.IntegerField(
        required=False, help_text="no change within this many seconds of the last (0-86400)"
    )


class ReplicaSetScaleSerializer(serializers.Serializer):
    replicas = serializers.IntegerField(help_text="the new number of replicas (1-64)")


class BatchingSweepSerializer(serializers.ModelSerializer):
    """A batching tuner sweep (docs/tuning.md): its pattern, grid, points with spread and choice."""

    model = serializers.CharField(source="replica_set.model.name", read_only=True)
    version = serializers.IntegerField(source="replica_set.model_version.version", read_only=True)
    server = serializers.CharField(source="server.name", read_only=True, allow_null=True, default=None)
    requested_by = serializers.CharField(source="requested_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = BatchingSweep
        fields = [
            "id",
            "replica_set",
            "model",
            "version",
            "state",
            "arrival",
            "rate_per_second",
            "burstiness",
            "window_seconds",
            "slo_p99_ms",
            "grid",
            "repeats",
            "point_seconds",
            "warmup_seconds",
            "points",
            "chosen",
            "reason",
            "server",
            "tune_name",
            "error",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class SweepApplySerializer(serializers.Serializer):
    # values checked by the service (audited refusals), as for rollouts
    hold_seconds = serializers.JSONField(required=False, help_text="seconds each step is held (default 60)")
    slo_max_error_rate = serializers.JSONField(required=False, help_text="failed-call fraction that rolls back")
    slo_max_p95_ms = serializers.JSONField(
        required=False, help_text="p95 latency (ms) that rolls back (default: the sweep's p99 SLO)"
    )
    min_calls = serializers.JSONField(required=False, help_text="calls a step needs before it is judged")


class BatchingSweepRequestSerializer(serializers.Serializer):
    # ranges and combinations are the service's (`invalid_sweep`, docs/tuning.md)
    replica_set = serializers.IntegerField(help_text="id of the replica set to tune")
    arrival = serializers.ChoiceField(choices=ArrivalKind.choices, required=False, default=ArrivalKind.RECORDED)
    rate_per_second = serializers.FloatField(
        required=False, allow_null=True, default=None, help_text="synthetic: calls per second to offer"
    )
    burstiness = serializers.FloatField(
        required=False, default=1.0, help_text="synthetic: variation of the gaps between calls (1 Poisson)"
    )
    window_seconds = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="recorded: the window of the gateway's figures"
    )
    slo_p99_ms = serializers.FloatField(required=False, allow_null=True, default=None, help_text="p99 bound (ms)")
    grid = serializers.JSONField(
        required=False, allow_null=True, default=None,
        help_text='values per setting, e.g. {"max_batch_size": [1, 8], "max_queue_delay_us": [0, 500], '
        '"preferred_batch_sizes": [[]], "instance_count": [1, 2]}',
    )  # fmt: skip
    repeats = serializers.IntegerField(required=False, allow_null=True, default=None)
    point_seconds = serializers.FloatField(required=False, allow_null=True, default=None)
    warmup_seconds = serializers.FloatField(required=False, allow_null=True, default=None)
    allow_shared_server = serializers.BooleanField(
        required=False, default=False, help_text="may share a server with a live replica of the version"
    )
