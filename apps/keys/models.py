"""Key encryption key versions, rotations and the data keys they wrap. KEK material stays in the
HSM (or the development keystore file); a data key is stored only wrapped by a KEK version."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class KekState(models.TextChoices):
    ACTIVE = "active", _("Active: wraps new data keys")
    DEACTIVATED = "deactivated", _("Deactivated: unwraps only, until its data keys are re-wrapped")
    RETIRED = "retired", _("Retired: destroyed where it was held (HSM token or key file)")


class KeyEncryptionKey(models.Model):
    """One version of the KEK (NIST SP 800-57 states: active → deactivated → destroyed).
    Exactly one version is active; a new upload's data key is wrapped by it."""

    kek_id = models.CharField(max_length=128, unique=True, help_text=_("pkcs11:<token>:<label> or local:<fingerprint>"))
    provider = models.CharField(max_length=16)
    version = models.PositiveIntegerField()
    hsm_token = models.CharField(max_length=64, blank=True)
    hsm_label = models.CharField(max_length=64, blank=True)
    algorithm = models.CharField(max_length=32, default="AES-256")
    state = models.CharField(max_length=16, choices=KekState.choices, default=KekState.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rotated_at = models.DateTimeField(null=True, blank=True, help_text=_("When a newer version replaced it"))
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["provider", "version"]
        verbose_name = _("key encryption key")
        permissions = [
            ("rotate_keyencryptionkey", "Can rotate the KEK"),
            ("retire_keyencryptionkey", "Can retire (destroy) an old KEK version"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["state"], condition=Q(state="active"), name="one_active_kek"),
        ]

    def __str__(self) -> str:
        return f"{self.kek_id} (v{self.version}, {self.state})"


class RotationState(models.TextChoices):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class KekRotation(models.Model):
    """A rotation: the data keys wrapped by older versions are re-wrapped by `to_kek`, in batches,
    by a Celery task that records its progress here and can resume after a crash or failure."""

    to_kek = models.ForeignKey(KeyEncryptionKey, on_delete=models.PROTECT, related_name="rotations")
    from_kek_ids = models.JSONField(default=list, help_text=_("The versions being replaced"))
    state = models.CharField(max_length=16, choices=RotationState.choices, default=RotationState.RUNNING)
    total = models.PositiveIntegerField(default=0, help_text=_("Data keys to re-wrap when the rotation started"))
    rewrapped = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True, help_text=_("A worker is on it until then"))
    last_error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["state"], condition=Q(state="running"), name="one_running_rotation"),
        ]

    def __str__(self) -> str:
        return f"rotation #{self.pk} to {self.to_kek.kek_id}: {self.state} {self.rewrapped}/{self.total}"

    @property
    def progress(self) -> float:
        return 1.0 if not self.total else min(1.0, self.rewrapped / self.total)


class Purpose(models.TextChoices):
    """What a data key encrypts. Keys does not know the rows that use it: the owning app holds a
    reference to the data key and answers for its labels (apps.keys.selectors.register_label_provider)."""

    ARTIFACT = "artifact", _("Model artifact")
    LLM_EXCHANGE = "llm_exchange", _("Retained chat exchanges (one model, one UTC day)")
    TRITON_CREDENTIAL = "triton_credential", _("Triton server credential (restricted API)")


class DataKeyQuerySet(models.QuerySet):
    def live(self):
        """Data keys that can still be unwrapped: not destroyed (crypto-shredded)."""
        return self.filter(destroyed_at__isnull=True)


class DataKey(models.Model):
    """One data key (DEK), stored only wrapped by a KEK version; the plaintext key never reaches the
    database. Destroying it (crypto-shredding) wipes the wrapped bytes and records when, so whatever
    it encrypted can never be decrypted again; the row stays as the record of that.

    `kek_id` names the KEK version that wraps it (`pkcs11:<token>:<label>` or `local:<fingerprint>`,
    see KeyEncryptionKey); a rotation re-wraps it and changes `kek_id`, never the ciphertext."""

    purpose = models.CharField(max_length=32, choices=Purpose.choices)
    suite = models.CharField(max_length=32, help_text=_("The AEAD suite the key is used with (AES-256-GCM, SM4-GCM)"))
    kek_id = models.CharField(max_length=128, db_index=True, help_text=_("The KEK version that wraps it"))
    wrapped = models.BinaryField(blank=True, help_text=_("RFC 5649 wrapped key; empty once destroyed"))
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    destroyed_at = models.DateTimeField(null=True, blank=True, help_text=_("When it was destroyed (crypto-shredding)"))

    objects = DataKeyQuerySet.as_manager()

    class Meta:
        ordering = ["pk"]
        verbose_name = _("data key")
        constraints = [
            # Destroyed means wiped: no wrapped bytes survive a destroy, and a live key has them.
            models.CheckConstraint(
                condition=(Q(destroyed_at__isnull=True) & ~Q(wrapped=b""))
                | (Q(destroyed_at__isnull=False) & Q(wrapped=b"")),
                name="data_key_wiped_iff_destroyed",
            ),
        ]

    def __str__(self) -> str:
        state = "destroyed" if self.destroyed_at else self.kek_id
        return f"data key #{self.pk} ({self.purpose}, {self.suite}, {state})"

    @property
    def is_destroyed(self) -> bool:
        return self.destroyed_at is not None
