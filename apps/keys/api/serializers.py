from rest_framework import serializers

from ..models import KekRotation


class KeyInventorySerializer(serializers.Serializer):
    """A KEK version and what it protects. Deliberately has no field that could carry key material."""

    id = serializers.IntegerField(allow_null=True, help_text="Null for a KEK id no version was registered for")
    kek_id = serializers.CharField()
    provider = serializers.CharField(help_text="'pkcs11' (HSM) or 'local' (development keystore)")
    version = serializers.IntegerField(allow_null=True)
    state = serializers.CharField(help_text="active, deactivated (unwrap only), retired (destroyed) or unregistered")
    hsm_token = serializers.CharField(allow_null=True, help_text="PKCS#11 token label")
    hsm_label = serializers.CharField(allow_null=True, help_text="PKCS#11 key label (carries the KEK version)")
    algorithm = serializers.CharField()
    key_wrap = serializers.CharField()
    data_keys_protected = serializers.IntegerField(help_text="Live data keys (every purpose) this KEK version wraps")
    data_keys_destroyed = serializers.IntegerField(help_text="Data keys last wrapped by it that were destroyed")
    by_purpose = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()),
        help_text='Per purpose (e.g. "artifact"): {"protected": n, "destroyed": n}',
    )
    artifacts_protected = serializers.IntegerField(help_text="Artifacts whose data key this KEK wraps")
    artifacts_shredded = serializers.IntegerField(help_text="Artifacts whose data key was destroyed")
    suites = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField(allow_null=True)
    rotated_at = serializers.DateTimeField(allow_null=True, help_text="When a newer version replaced it")
    retired_at = serializers.DateTimeField(allow_null=True)
    first_wrapped_at = serializers.DateTimeField(allow_null=True)
    last_wrapped_at = serializers.DateTimeField(allow_null=True)


class RotationRequestSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class KekRotationSerializer(serializers.ModelSerializer):
    to_kek_id = serializers.CharField(source="to_kek.kek_id", read_only=True)
    progress = serializers.FloatField(read_only=True, help_text="0.0 to 1.0")
    requested_by = serializers.CharField(source="requested_by.username", read_only=True, default=None)

    class Meta:
        model = KekRotation
        fields = [
            "id",
            "to_kek_id",
            "from_kek_ids",
            "state",
            "total",
            "rewrapped",
            "progress",
            "started_at",
            "finished_at",
            "last_error",
            "requested_by",
            "reason",
        ]
        read_only_fields = fields
