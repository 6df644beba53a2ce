from rest_framework import serializers

from ..models import Artifact, ImportJob, Model, ModelVersion


class ArtifactSerializer(serializers.ModelSerializer):
    # The data key lives in apps.keys; only its suite, KEK version and destruction time are shown.
    suite = serializers.CharField(source="data_key.suite", read_only=True)
    kek_id = serializers.CharField(source="data_key.kek_id", read_only=True, help_text="KEK version wrapping it")
    shredded_at = serializers.DateTimeField(
        source="data_key.destroyed_at", read_only=True, allow_null=True, help_text="When its data key was destroyed"
    )

    class Meta:
        model = Artifact
        fields = ["suite", "kek_id", "ciphertext_sha256", "ciphertext_bytes", "created_at", "shredded_at"]


class ModelVersionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name", read_only=True)
    artifact = ArtifactSerializer(read_only=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "model",
            "version",
            "format",
            "sha256",
            "size_bytes",
            "signature",
            "breaking_changes",
            "artifact",
            "created_at",
        ]


class ModelSerializer(serializers.ModelSerializer):
    latest_version = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField(help_text="'serving' when a deployment is active, else 'not deployed'")

    class Meta:
        model = Model
        fields = ["id", "name", "description", "status", "latest_version", "created_at"]

    def get_status(self, obj) -> str:
        serving = any(d.desired_state == "active" and d.observed_state == "active" for d in obj.deployments.all())
        return "serving" if serving else "not deployed"

    def get_latest_version(self, obj) -> int | None:
        versions = [v.version for v in obj.versions.all()]
        return max(versions) if versions else None


class VersionUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The ONNX model file")
    version = serializers.IntegerField(required=False, help_text="A positive integer; defaults to the next version")
    description = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Model description, used when the model is created"
    )


class ShredSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, help_text="Why the data key is destroyed (kept in the audit log)")


class ImportJobSerializer(serializers.ModelSerializer):
    result_version = serializers.IntegerField(source="result.version", read_only=True, allow_null=True)

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "model_name",
            "requested_version",
            "quant",
            "description",
            "file_name",
            "upload_bytes",
            "upload_sha256",
            "state",
            "progress",
            "message",
            "error_code",
            "result",
            "result_version",
            "created_at",
            "updated_at",
            "finished_at",
        ]
        read_only_fields = fields


class ImportRequestSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The GGUF file (llama architecture); streamed and encrypted as it arrives")
    name = serializers.CharField(max_length=63, help_text="Existing or new model name")
    quant = serializers.ChoiceField(choices=["int4", "fp32"], default="int4", help_text="Weights of the ONNX decoder")
    version = serializers.IntegerField(required=False, min_value=1, help_text="Defaults to the next version")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class TritonLayoutSerializer(serializers.Serializer):
    backend = serializers.ChoiceField(choices=["vllm", "tensorrtllm"])
    options = serializers.DictField(required=False, help_text="the backend's options (docs/llm.md)")
