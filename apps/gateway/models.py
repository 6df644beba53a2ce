from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class PolicyEpoch(models.Model):
    """One row (id 1): a counter that every write able to change a gateway decision increments in
    its own transaction (apps/gateway/dataplane/invalidation.py). On SQLite the data plane's policy
    snapshot polls it; on PostgreSQL the same writes send `NOTIFY sovereign_policy` instead, which
    is delivered at commit and takes no row lock (so policy writes do not queue on this row)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    epoch = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("policy epoch")

    def __str__(self) -> str:
        return f"policy epoch {self.epoch}"


# --- Governance of chat models (issue 13): policy, quotas, usage, retention ----------------------
# docs/llm.md "Governance: chat policy, quotas, usage, retention". Every write goes through
# apps/gateway/services.py (audited); the data plane reads policies and quotas as plain dicts
# (apps/gateway/chatpolicy.py load_chat_policies, apps/gateway/quota.py load_quotas).


class SystemPromptMode(models.TextChoices):
    PREPEND = "prepend", _("Prepend to the caller's messages (the caller's own system messages stay after it)")
    REPLACE = "replace", _("Replace every system message of the caller")


class Retention(models.TextChoices):
    NONE = "none", _("Nothing but counts")
    DIGEST = "digest", _("A SHA-256 digest of the de-identified exchange")
    FULL = "full", _("The de-identified exchange, encrypted under a data key wrapped by the KEK")


def default_allowed_sampling() -> dict:
    return {"temperature": [0, 1.5], "top_p": [0.1, 1], "top_k": [0, 100], "seed": True, "stop": True}


class ChatPolicy(models.Model):
    """What a chat model accepts and keeps. `allowed_sampling` maps each sampling key to `[low,
    high]` (allowed within the closed range), `true` (allowed, any valid value) or `false` / absent
    (refused); its shape is checked by apps.gateway.chatpolicy.validate_allowed_sampling in the
    service. A model without a row uses the defaults below (apps.gateway.chatpolicy.DEFAULT_POLICY)."""

    model = models.OneToOneField("registry.Model", on_delete=models.CASCADE, related_name="chat_policy")
    max_tokens_per_call = models.PositiveIntegerField(default=1024)
    allowed_sampling = models.JSONField(default=default_allowed_sampling)
    system_prompt = models.TextField(blank=True, help_text=_("Enforced on every call when not empty"))
    system_prompt_mode = models.CharField(
        max_length=16, choices=SystemPromptMode.choices, default=SystemPromptMode.PREPEND
    )
    retention = models.CharField(max_length=16, choices=Retention.choices, default=Retention.NONE)
    retention_days = models.PositiveIntegerField(default=30)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("chat policy")
        verbose_name_plural = _("chat policies")
        permissions = [("manage_chatpolicy", "Can set a chat model's policy")]
        constraints = [
            models.CheckConstraint(condition=models.Q(max_tokens_per_call__gte=1), name="chat_policy_max_tokens_pos"),
            models.CheckConstraint(
                condition=models.Q(retention_days__gte=1, retention_days__lte=3650), name="chat_policy_retention_days"
            ),
        ]

    def __str__(self) -> str:
        return f"chat policy of {self.model}"


class QuotaScope(models.TextChoices):
    USER = "user", _("User")
    GROUP = "group", _("Group (each member counted together)")
    TOKEN = "token", _("API token")


_SUBJECT = {QuotaScope.USER: "user", QuotaScope.GROUP: "group", QuotaScope.TOKEN: "token"}


class Quota(models.Model):
    """Token and request limits of one subject (a user, a group — all its members together — or
    one API token), on one model or (model empty) on all models together. Each limit empty means
    unlimited. Day and month windows are UTC calendar days and months; the per-minute windows are
    UTC clock minutes (apps/gateway/quota.py). At most one row per (subject, model)."""

    scope = models.CharField(max_length=8, choices=QuotaScope.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    token = models.ForeignKey("accounts.ApiToken", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    model = models.ForeignKey("registry.Model", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveBigIntegerField(null=True, blank=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pk"]
        permissions = [("manage_quota", "Can set and remove token quotas")]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(scope="user", user__isnull=False, group__isnull=True, token__isnull=True)
                    | models.Q(scope="group", user__isnull=True, group__isnull=False, token__isnull=True)
                    | models.Q(scope="token", user__isnull=True, group__isnull=True, token__isnull=False)
                ),
                name="quota_one_subject_of_its_scope",
            ),
            *[
                models.UniqueConstraint(
                    fields=[subject, *(["model"] if per_model else [])],
                    condition=models.Q(scope=scope, model__isnull=not per_model),
                    name=f"quota_unique_{scope}_{'model' if per_model else 'all'}",
                )
                for scope, subject in (("user", "user"), ("group", "group"), ("token", "token"))
                for per_model in (True, False)
            ],
        ]

    def __str__(self) -> str:
        where = self.model.name if self.model_id else "all models"
        return f"{self.scope} #{self.subject_id} quota on {where}"

    @property
    def subject_id(self) -> int:
        return getattr(self, f"{_SUBJECT[self.scope]}_id")


class UsageStatus(models.TextChoices):
    OK = "ok", _("Completed")
    ERROR = "error", _("Failed")
    CANCELLED = "cancelled", _("Client went away")
    REFUSED = "refused", _("Refused before the model ran")


class LLMUsage(models.Model):
    """One row per chat/completion call, written once by the /v1 adapter (record_usage), also when
    the client disconnected. Names are kept beside the foreign keys so that a row keeps saying whose
    call it was. Never changed afterwards."""

    request_id = models.CharField(max_length=64, unique=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150, blank=True)
    token = models.ForeignKey("accounts.ApiToken", null=True, on_delete=models.SET_NULL, related_name="+")
    model = models.ForeignKey("registry.Model", null=True, on_delete=models.SET_NULL, related_name="+")
    model_name = models.CharField(max_length=63)
    model_version = models.PositiveIntegerField(null=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    ttft_ms = models.FloatField(null=True)
    duration_ms = models.FloatField(default=0)
    finish_reason = models.CharField(max_length=16, blank=True)
    status = models.CharField(max_length=16, choices=UsageStatus.choices, default=UsageStatus.OK)

    class Meta:
        ordering = ["-at"]
        verbose_name = _("LLM usage")
        verbose_name_plural = _("LLM usage")
        indexes = [models.Index(fields=["user", "at"]), models.Index(fields=["model", "at"])]

    def __str__(self) -> str:
        return f"{self.username or '?'} → {self.model_name}: {self.total_tokens} tokens ({self.request_id})"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ExchangeDataKey(models.Model):
    """The data key that encrypts one model's retained exchanges of one UTC day (one key per day,
    not per exchange: one key row and one `keys.dek.create` event a day instead of one per call;
    the purge destroys a day's key once none of its ciphertexts is left)."""

    model = models.ForeignKey("registry.Model", on_delete=models.PROTECT, related_name="+")
    day = models.DateField()
    data_key = models.OneToOneField("keys.DataKey", on_delete=models.PROTECT, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "day"], name="exchange_key_one_per_model_day")]

    def __str__(self) -> str:
        return f"exchange key of {self.model_id} on {self.day}"


class RetainedExchange(models.Model):
    """What the chat policy kept of one call: a digest, or the de-identified messages and answer
    encrypted (AAD binds the row's request id and model). Read only by the auditor, each read
    audited; deleted on request (ciphertext and digest wiped, the row stays as a tombstone) and
    purged after `expires_at`."""

    request_id = models.CharField(max_length=64, unique=True)
    model = models.ForeignKey("registry.Model", null=True, on_delete=models.SET_NULL, related_name="+")
    model_name = models.CharField(max_length=63)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField(db_index=True)
    retention = models.CharField(max_length=16, choices=Retention.choices)
    digest = models.CharField(max_length=64, blank=True)
    ciphertext = models.BinaryField(null=True, blank=True)
    key = models.ForeignKey(ExchangeDataKey, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    deletion_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-at"]
        permissions = [
            ("view_retainedexchange_content", "Can decrypt and read a retained prompt and answer (audited)"),
            ("erase_retainedexchange", "Can delete a retained prompt and answer on request"),
        ]
        constraints = [
            # Deleted means wiped: a tombstone keeps no digest and no ciphertext.
            models.CheckConstraint(
                condition=models.Q(deleted_at__isnull=True) | models.Q(digest="", ciphertext__isnull=True),
                name="exchange_wiped_when_deleted",
            ),
        ]

    def __str__(self) -> str:
        return f"exchange {self.request_id} ({self.model_name})"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None
