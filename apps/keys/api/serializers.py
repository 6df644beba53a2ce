from rest_framework import serializers


class KeyInventorySerializer(serializers.Serializer):
    """A KEK and what it protects. Deliberately has no field that could carry key material."""

    kek_id = serializers.CharField()
    provider = serializers.CharField(help_text="'pkcs11' (HSM) or 'local' (development keystore)")
    hsm_token = serializers.CharField(allow_null=True, help_text="PKCS#11 token label")
    hsm_label = serializers.CharField(allow_null=True, help_text="PKCS#11 key label (carries the KEK version)")
    algorithm = serializers.CharField()
    key_wrap = serializers.CharField()
    artifacts_protected = serializers.IntegerField(help_text="Artifacts whose data key this KEK wraps")
    artifacts_shredded = serializers.IntegerField(help_text="Artifacts whose data key was destroyed")
    suites = serializers.ListField(child=serializers.CharField())
    first_wrapped_at = serializers.DateTimeField(allow_null=True)
    last_wrapped_at = serializers.DateTimeField(allow_null=True)
