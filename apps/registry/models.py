from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

# Triton model names become URL path segments and directory names: keep them boring.
model_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_.-]{0,62}$",
    _("Use 1-63 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit."),
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
            ("reidentify", "Gets the original identifiers back in the model's answers (surrogate mode)"),
            ("view_catalogue", "Can see the model catalogue (names, descriptions, status)"),
        ]

    def __str__(self) -> str:
        return self.name


class ModelFormat(models.TextChoices):
    ONNX = "onnx", _("ONNX")
    # A language model: a set of files (decoder graph, tokenizer, chat template, generation
    # defaults, config), each an ArtifactFile of the version's one Artifact (docs/llm.md).
    LLM = "llm", _("Language model (ONNX decoder set)")


class ModelVersion(models.Model):
    """An immutable uploaded version: its plaintext digest, its signature (inputs and outputs,
    read from the file so nobody writes a Triton config by hand) and its encrypted artifact."""

    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField(help_text=_("Becomes the Triton version directory"))
    format = models.CharField(max_length=16, choices=ModelFormat.choices, default=ModelFormat.ONNX)
    sha256 = models.CharField(max_length=64, help_text=_("SHA-256 of the plaintext artifact"))
    size_bytes = models.BigIntegerField()
    signature = models.JSONField()
    # Issue 16: what a caller of the previous version would find broken in this one (inference_backend.
    # signature.breaking_changes), judged at upload; a rollout onto it is refused unless forced.
    breaking_changes = models.JSONField(default=list, blank=True, editable=False)
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

    @property
    def is_llm(self) -> bool:
        return self.format == ModelFormat.LLM


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
        """The ciphertext file of a single-file artifact (an llm set has `files` instead)."""
        return settings.ARTIFACT_DIR / self.storage_name

    def paths(self) -> list:
        """Every ciphertext file of this artifact: its files' for a set, else its own."""
        files = list(self.files.all())
        return [f.path for f in files] if files else [self.path]


class ArtifactFile(models.Model):
    """One encrypted file of a multi-file artifact (a language model's set). Every file is sealed
    under the artifact's one data key, with associated data binding the artifact id and the file
    name (`aad`), so files cannot be swapped between sets or renamed within one."""

    artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="files")
    name = models.CharField(max_length=100, help_text=_("Name inside the set, e.g. model.onnx"))
    storage_name = models.CharField(max_length=120, unique=True)
    sha256 = models.CharField(max_length=64, help_text=_("SHA-256 of the plaintext file"))
    size_bytes = models.BigIntegerField()
    ciphertext_sha256 = models.CharField(max_length=64)
    ciphertext_bytes = models.BigIntegerField()
    aad = models.CharField(max_length=300)

    class Meta:
        ordering = ["artifact", "name"]
        constraints = [models.UniqueConstraint(fields=["artifact", "name"], name="unique_artifact_file_name")]

    def __str__(self) -> str:
        return f"{self.artifact.version} {self.name}"

    @property
    def path(self):
        return settings.ARTIFACT_DIR / self.storage_name


class ImportState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ImportJob(models.Model):
    """A GGUF import running in a worker: the upload waits encrypted in the staging directory
    under an ephemeral data key (wrapped by the KEK, kept here until the job ends), the task
    converts it and registers the resulting llm version. The UI polls this row."""

    model_name = models.CharField(max_length=63)
    requested_version = models.PositiveIntegerField(null=True, blank=True)
    quant = models.CharField(max_length=8, default="int4")
    description = models.TextField(blank=True)
    file_name = models.CharField(max_length=255, blank=True)
    upload_bytes = models.BigIntegerField(default=0)
    upload_sha256 = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=16, choices=ImportState.choices, default=ImportState.QUEUED)
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=500, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    result = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The staging ciphertext and its ephemeral data key; cleared when the job ends.
    staging_name = models.CharField(max_length=80, blank=True, editable=False)
    staging_aad = models.CharField(max_length=200, blank=True, editable=False)
    staging_suite = models.CharField(max_length=16, blank=True, editable=False)
    staging_kek_id = models.CharField(max_length=200, blank=True, editable=False)
    staging_wrapped_key = models.BinaryField(blank=True, default=b"", editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"import #{self.pk} {self.model_name} ({self.state})"

    @property
    def staging_path(self):
        from .staging import staging_dir

        return staging_dir() / self.staging_name if self.staging_name else None


class IntegrityRun(models.Model):
    """One run of the artifact verification (apps/registry/integrity.py): a sample of live
    artifacts decrypted through the real key path (the data key unwrapped by the KEK provider,
    every segment's AEAD tag checked) and the plaintext SHA-256 recomputed against the recorded
    one. `registry.artifact_integrity` passes only on a recent run with no failure."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    live_artifacts = models.PositiveIntegerField(help_text=_("Live artifacts when the sample was drawn"))
    sampled = models.PositiveIntegerField()
    verified = models.PositiveIntegerField(help_text=_("Artifacts that decrypted and matched their digests"))
    plaintext_bytes = models.BigIntegerField(default=0)
    # [{"artifact": id, "version": "name vN", "file": name or "", "code": ..., "reason": ...}]
    failures = models.JSONField(default=list)
    artifact_ids = models.JSONField(default=list, help_text=_("The artifacts of the sample"))

    class Meta:
        ordering = ["-finished_at"]

    def __str__(self) -> str:
        counts = f"{self.verified}/{self.sampled}, {len(self.failures)} failed"
        return f"integrity run {self.finished_at:%Y-%m-%d %H:%M} ({counts})"

    @property
    def ok(self) -> bool:
        return self.sampled > 0 and not self.failures and self.verified == self.sampled
