from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

# Triton model names become URL path segments and directory names: keep them boring.
model_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_.-]{0,62}$",
    "Use 1-63 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit.",
    code="invalid_model_name",
)


class Model(models.Model):
    """A named model in the catalogue. Its versions carry the artifacts."""

    name = models.CharField(max_length=63, unique=True, validators=[model_name_validator])
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("invoke_model", "Can invoke the model through the gateway"),
            ("view_catalogue", "Can see the model catalogue (names, descriptions, status)"),
        ]

    def __str__(self) -> str:
        return self.name


class ModelFormat(models.TextChoices):
    ONNX = "onnx", "ONNX"


class ModelVersion(models.Model):
    """An immutable uploaded version: its plaintext digest, its signature (inputs and outputs,
    read from the file so nobody writes a Triton config by hand) and its encrypted artifact."""

    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField(help_text="Becomes the Triton version directory")
    format = models.CharField(max_length=16, choices=ModelFormat.choices, default=ModelFormat.ONNX)
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the plaintext artifact")
    size_bytes = models.BigIntegerField()
    signature = models.JSONField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model__name", "-version"]
        constraints = [models.UniqueConstraint(fields=["model", "version"], name="unique_model_version")]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.version}"

    @property
    def batch_dynamic(self) -> bool:
        return bool(self.signature.get("batch_dynamic"))


class ArtifactQuerySet(models.QuerySet):
    def live(self):
        """Artifacts that can still be decrypted: their data key was not destroyed (crypto-shredded)."""
        return self.filter(data_key__destroyed_at__isnull=True)


class Artifact(models.Model):
    """The encrypted-at-rest file of a model version.

    The ciphertext lives in settings.ARTIFACT_DIR/<storage_name>; it was encrypted with its own
    data key, which apps.keys stores (wrapped by a KEK version) in `data_key`. The artifact id is
    bound into the AEAD as associated data (`aad`), so a ciphertext cannot be swapped between
    versions. Shredding the version destroys the data key.
    """

    version = models.OneToOneField(ModelVersion, on_delete=models.PROTECT, related_name="artifact")
    data_key = models.OneToOneField("keys.DataKey", on_delete=models.PROTECT, related_name="+")
    storage_name = models.CharField(max_length=80, unique=True)
    aad = models.CharField(max_length=200)
    ciphertext_sha256 = models.CharField(max_length=64)
    ciphertext_bytes = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ArtifactQuerySet.as_manager()

    class Meta:
        permissions = [("shred_artifact", "Can destroy a model version's data key")]

    def __str__(self) -> str:
        return f"{self.storage_name} ({self.suite})"

    @property
    def suite(self) -> str:
        return self.data_key.suite

    @property
    def kek_id(self) -> str:
        """The KEK version that wraps the data key now (a rotation changes it, not the file)."""
        return self.data_key.kek_id

    @property
    def shredded_at(self):
        return self.data_key.destroyed_at

    @property
    def is_shredded(self) -> bool:
        return self.data_key.is_destroyed

    @property
    def path(self):
        return settings.ARTIFACT_DIR / self.storage_name
