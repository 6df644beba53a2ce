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


class Artifact(models.Model):
    """The encrypted-at-rest file of a model version, with its wrapped data key.

    The ciphertext lives in settings.ARTIFACT_DIR/<storage_name>; the data key is stored only
    wrapped by the KEK identified by kek_id. The artifact id is bound into the AEAD as
    associated data (`aad`), so a ciphertext cannot be swapped between versions.
    """

    version = models.OneToOneField(ModelVersion, on_delete=models.PROTECT, related_name="artifact")
    storage_name = models.CharField(max_length=80, unique=True)
    suite = models.CharField(max_length=32)
    kek_id = models.CharField(max_length=128)
    wrapped_dek = models.BinaryField()
    aad = models.CharField(max_length=200)
    ciphertext_sha256 = models.CharField(max_length=64)
    ciphertext_bytes = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    shredded_at = models.DateTimeField(
        null=True, blank=True, help_text="When the wrapped data key was destroyed (crypto-shredding)"
    )

    class Meta:
        permissions = [("shred_artifact", "Can destroy a model version's data key")]

    def __str__(self) -> str:
        return f"{self.storage_name} ({self.suite})"

    @property
    def is_shredded(self) -> bool:
        return self.shredded_at is not None

    @property
    def path(self):
        return settings.ARTIFACT_DIR / self.storage_name
