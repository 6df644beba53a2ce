"""Compliance state: which profiles apply where, the per-model personal-data policy, the history
of evaluations, attestations for manual controls, and generated reports."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _


def _local(when) -> str:
    """A time as the pages show it: the reader's zone, with seconds and the zone's name."""
    return date_format(timezone.localtime(when), "DATETIME_FORMAT") if when else "-"


class ProfileAttachment(models.Model):
    """A compliance profile (catalogue id) attached to the installation (`model` empty) or to one
    registry model. Written only by apps.compliance.services.attach_profile / detach_profile."""

    profile = models.CharField(max_length=32)
    model = models.ForeignKey(
        "registry.Model", null=True, blank=True, on_delete=models.CASCADE, related_name="compliance_profiles"
    )
    options = models.JSONField(default=dict, blank=True, help_text='Profile options, e.g. {"guomi": true}')
    attached_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    attached_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["profile", "model__name"]
        permissions = [("manage_profiles", "Can attach and detach compliance profiles and set model policies")]
        constraints = [
            models.UniqueConstraint(fields=["profile", "model"], name="unique_profile_per_model"),
            models.UniqueConstraint(
                fields=["profile"], condition=Q(model__isnull=True), name="unique_installation_profile"
            ),
        ]

    def __str__(self) -> str:
        where = self.model.name if self.model_id else gettext("the whole installation")
        return gettext("%(profile)s on %(where)s") % {"profile": self.profile, "where": where}

    def audit_display(self) -> str:
        """How the audit log names it (kept as it always was, in English)."""
        return f"{self.profile} on {self.model or 'the installation'}"


class DeidMode(models.TextChoices):
    OFF = "off"
    REDACT = "redact"
    MASK = "mask"
    PSEUDONYMISE = "pseudonymise"
    # realistic fakes, re-identified for callers holding `reidentify` (docs/deidentification.md)
    SURROGATE = "surrogate"
    # the same, and every date of a conversation shifted by one random number of days: NOT Safe
    # Harbor (dates leave their year), so the HIPAA de-identification check fails while it is on
    SURROGATE_SHIFT = "surrogate_shift", _("Surrogate with date shift (not Safe Harbor)")


class AnswerScreen(models.TextChoices):
    """What the gateway does with identifiers in a model's answers (apps/gateway/deid/answers.py).
    Empty: the default, `redact` for a model that receives PHI, else `off`
    (apps.compliance.selectors.answer_screen_mode)."""

    DEFAULT = "", _("default")
    OFF = "off"
    REDACT = "redact"
    ALERT = "alert"


class ModelPolicy(models.Model):
    """Whether a model receives PHI / personal information, how the gateway de-identifies its
    requests and screens its answers. A PHI model must not have mode `off` (refused by
    set_model_policy); its answer screen may be off (the caller may see PHI: the screen only catches
    identifiers the model echoes or invents)."""

    model = models.OneToOneField("registry.Model", on_delete=models.CASCADE, related_name="compliance_policy")
    phi = models.BooleanField(default=False, help_text=_("The model receives PHI or personal information"))
    deid_mode = models.CharField(max_length=16, choices=DeidMode.choices, default=DeidMode.OFF)
    answer_screen = models.CharField(
        max_length=8,
        choices=AnswerScreen.choices,
        default=AnswerScreen.DEFAULT,
        blank=True,
        help_text=_(
            "Identifiers in the model's answers: off, redact or alert; empty: redact for a PHI model, else off"
        ),
    )
    numeric_inputs_reason = models.TextField(
        blank=True,
        default="",
        help_text=_(
            "Why this model's non-text (numeric) inputs carry no identifiers. Empty: undeclared, and the "
            "gateway refuses numeric inputs to it while it receives PHI (text de-identification cannot see them)"
        ),
    )
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = _("model policies")

    def __str__(self) -> str:
        return f"{self.model}: phi={self.phi} deid={self.deid_mode}"


class Status(models.TextChoices):
    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "not_applicable"
    MANUAL = "manual"


class EvaluationRun(models.Model):
    """One evaluation of every attached profile; its ControlResults are the posture at that time."""

    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    trigger = models.CharField(max_length=16, default="schedule")  # schedule | api | report
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    passed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    manual = models.PositiveIntegerField(default=0)
    not_applicable = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        """In the page's language, at the reader's local time with seconds (issue 17: it read
        "evaluation #3 at 2026-11-30 20:14", English and UTC, on a Chinese page)."""
        return gettext("evaluation #%(id)s at %(when)s") % {"id": self.pk, "when": _local(self.started_at)}

    def audit_display(self) -> str:
        """How the audit log names the run (kept as it always was: one language, UTC)."""
        return f"evaluation #{self.pk} at {self.started_at:%Y-%m-%d %H:%M}"


class ControlResult(models.Model):
    """The outcome of one control of one profile in one evaluation, with what the checks looked at."""

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="results")
    profile = models.CharField(max_length=32, db_index=True)
    control_id = models.CharField(max_length=64, db_index=True)
    family = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices)
    evidence = models.JSONField(default=list, help_text=_("One entry per check: name, status, summary, details"))
    remedy = models.TextField(blank=True)
    evaluated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-run_id", "profile", "id"]
        permissions = [("evaluate_controls", "Can run a compliance evaluation now")]

    def __str__(self) -> str:
        return f"{self.profile} {self.control_id}: {self.get_status_display()}"  # the status in words


class Attestation(models.Model):
    """Evidence for a manual control (a procedure document, a restore-drill record), valid until
    `expires_at`. The file is stored mode 0600 under COMPLIANCE_DIR; its SHA-256 is kept here."""

    profile = models.CharField(max_length=32)
    control_id = models.CharField(max_length=64)
    note = models.TextField(blank=True)
    file_name = models.CharField(max_length=200)
    storage_name = models.CharField(max_length=100, unique=True)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField()
    expires_at = models.DateTimeField()
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    uploaded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-uploaded_at"]

    def __str__(self) -> str:
        return f"{self.profile} {self.control_id}: {self.file_name}"


class ReportState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ComplianceReport(models.Model):
    """A signed compliance report for one profile and period: PDF, CSV and JSON files, each with
    a detached signature, written by the generate_report task (progress 0-100 on this row)."""

    profile = models.CharField(max_length=32)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    language = models.CharField(max_length=16)
    state = models.CharField(max_length=16, choices=ReportState.choices, default=ReportState.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    files = models.JSONField(default=dict, blank=True, help_text=_("format -> file name under COMPLIANCE_DIR"))
    key_id = models.CharField(max_length=64, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("export_compliancereport", "Can generate and download compliance reports")]

    def __str__(self) -> str:
        return gettext("%(profile)s report, %(start)s to %(end)s (%(state)s)") % {
            "profile": self.profile,
            "start": _local(self.period_start),
            "end": _local(self.period_end),
            "state": self.get_state_display(),
        }

    def audit_display(self) -> str:
        """How the audit log names it (kept as it always was: English, UTC days)."""
        return f"{self.profile} report {self.period_start:%Y-%m-%d}..{self.period_end:%Y-%m-%d} ({self.state})"


class RestoreDrill(models.Model):
    """One restore drill (manage.py restore_drill): the live database dumped with pg_dump, restored
    with pg_restore into a scratch database, the audit chain verified on the restored copy, the
    scratch database dropped. Written only by apps.compliance.services.record_restore_drill."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    ok = models.BooleanField()
    events_verified = models.BigIntegerField(default=0)
    last_sequence = models.BigIntegerField(null=True, blank=True)
    detail = models.TextField(blank=True)
    source_database = models.CharField(max_length=128)
    scratch_database = models.CharField(max_length=128, blank=True)
    dump_bytes = models.BigIntegerField(default=0)
    dump_sha256 = models.CharField(max_length=64, blank=True)
    tool = models.CharField(max_length=200, blank=True, help_text=_("pg_dump --version"))
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-finished_at"]

    def __str__(self) -> str:
        text = (
            gettext("restore drill at %(when)s: succeeded") if self.ok else gettext("restore drill at %(when)s: failed")
        )
        return text % {"when": _local(self.finished_at)}

    def audit_display(self) -> str:
        """How the audit log names it (kept as it always was: English, UTC minutes)."""
        return f"restore drill {self.finished_at:%Y-%m-%d %H:%M} {'ok' if self.ok else 'failed'}"
