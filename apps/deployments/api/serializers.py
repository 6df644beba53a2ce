from rest_framework import serializers

from inference_backend.config import BATCHING_FIELDS

from ..models import Deployment, DeploymentTransition, InferenceServer, Kind
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

    class Meta:
        model = InferenceServer
        fields = [
            "id",
            "name",
            "http_url",
            "grpc_url",
            "hardware",
            "backends",
            "credential",
            "has_credential",
            "state",
            "last_seen_at",
            "gateway_says",
            "created_at",
        ]
        read_only_fields = ["state", "last_seen_at", "created_at"]

    def get_gateway_says(self, obj) -> str:
        return gateway_says(obj.pk) if obj.pk else ""


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
