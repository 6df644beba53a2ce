from django.contrib.auth import get_user_model
from rest_framework import serializers

from ..models import ApiToken, EmergencyAccess, ModelGroupGrant, ModelUserGrant, Scope
from ..roles import GRANTABLE, ROLES

# Values are checked by the services, so an unknown one has the same code on every route.
ROLE_HELP = "one of " + ", ".join(ROLES)


class ApiTokenSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    models = serializers.SlugRelatedField(source="allowed_models", slug_field="name", many=True, read_only=True)

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "user",
            "hint",
            "scopes",
            "models",
            "status",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "last_used_ip",
        ]
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    days = serializers.IntegerField(
        required=False, help_text="Days until expiry (default 90, at most SOVEREIGN_TOKEN_MAX_DAYS)"
    )
    scopes = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text=f"Subset of {', '.join(Scope.values)}; default invoke and read",
    )
    models = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        help_text="Model ids the token is restricted to (default: no restriction)",
    )
    user = serializers.IntegerField(
        required=False,
        help_text="Issue for this user: yourself (the default) or a service account you own; nobody else",
    )
    otp = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=8,
        write_only=True,
        help_text="Your current one-time code. Privileged accounts need it unless the session passed "
        "its second factor within SOVEREIGN_TOKEN_OTP_FRESH_MINUTES",
    )


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The token itself. Shown only in this response.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class UserSerializer(serializers.ModelSerializer):
    roles = serializers.SerializerMethodField()
    is_service_account = serializers.BooleanField(source="profile.is_service_account", read_only=True)
    owner = serializers.CharField(source="profile.owner.username", read_only=True, default=None)
    two_factor = serializers.SerializerMethodField()

    class Meta:
        model = get_user_model()
        fields = [
            "id",
            "username",
            "email",
            "is_active",
            "roles",
            "is_service_account",
            "owner",
            "two_factor",
            "last_login",
            "date_joined",
        ]
        read_only_fields = fields

    def get_roles(self, obj) -> list[str]:
        return sorted(g.name for g in obj.groups.all() if g.name in ROLES)

    def get_two_factor(self, obj) -> bool:
        return any(d.confirmed for d in obj.totpdevice_set.all())


class UserCreateSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    email = serializers.EmailField(required=False, default="")
    password = serializers.CharField(write_only=True, style={"input_type": "password"})
    role = serializers.CharField(
        required=False, help_text="analyst or guest; privileged roles are given afterwards by a security officer"
    )


class RoleAssignedSerializer(UserSerializer):
    enrolment_code = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="For admin, security_officer and auditor: the one-time code the person needs to enrol "
        "their TOTP device. Shown only in this response; expires after SOVEREIGN_ENROLMENT_CODE_HOURS.",
    )

    class Meta(UserSerializer.Meta):
        fields = [*UserSerializer.Meta.fields, "enrolment_code"]
        read_only_fields = fields


class PasswordResetSerializer(serializers.Serializer):
    password = serializers.CharField(write_only=True, style={"input_type": "password"})


class UserActiveSerializer(serializers.Serializer):
    is_active = serializers.BooleanField()


class RoleSerializer(serializers.Serializer):
    role = serializers.CharField(help_text=ROLE_HELP)


class ServiceAccountCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64, help_text="svc-<name>")
    role = serializers.CharField(default="analyst", help_text="analyst or guest")


class _GrantSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="content_object.name", read_only=True)
    model_id = serializers.IntegerField(source="content_object_id", read_only=True)
    permission = serializers.CharField(source="permission.codename", read_only=True)
    granted_by = serializers.CharField(source="granted_by.username", read_only=True, default=None)


class UserGrantSerializer(_GrantSerializer):
    user = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = ModelUserGrant
        fields = ["id", "model", "model_id", "user", "permission", "expires_at", "granted_by", "granted_at"]
        read_only_fields = fields


class GroupGrantSerializer(_GrantSerializer):
    group = serializers.CharField(source="group.name", read_only=True)

    class Meta:
        model = ModelGroupGrant
        fields = ["id", "model", "model_id", "group", "permission", "expires_at", "granted_by", "granted_at"]
        read_only_fields = fields


class GrantCreateSerializer(serializers.Serializer):
    model = serializers.IntegerField(help_text="model id")
    permission = serializers.CharField(help_text=" or ".join(GRANTABLE))
    user = serializers.IntegerField(required=False, help_text="user id (or give group)")
    group = serializers.IntegerField(required=False, help_text="group id (or give user)")
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class EmergencyAccessSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    granted_by = serializers.CharField(source="granted_by.username", read_only=True, default=None)
    active = serializers.SerializerMethodField()

    class Meta:
        model = EmergencyAccess
        fields = ["id", "user", "role", "reason", "granted_by", "granted_at", "expires_at", "revoked_at", "active"]
        read_only_fields = fields

    def get_active(self, obj) -> bool:
        return obj.is_active()


class EmergencyAccessCreatedSerializer(EmergencyAccessSerializer):
    enrolment_code = serializers.CharField(
        read_only=True,
        allow_null=True,
        default=None,
        help_text="For a privileged role: the one-time code the person needs to enrol a TOTP device "
        "(their devices were voided). Shown only in this response.",
    )

    class Meta(EmergencyAccessSerializer.Meta):
        fields = [*EmergencyAccessSerializer.Meta.fields, "enrolment_code"]
        read_only_fields = fields


class EmergencyAccessCreateSerializer(serializers.Serializer):
    user = serializers.IntegerField()
    role = serializers.CharField(help_text=ROLE_HELP)
    minutes = serializers.IntegerField(help_text="How long the role lasts (at most SOVEREIGN_BREAK_GLASS_MAX_HOURS)")
    # Optional here so that a missing or blank reason reaches the service and gets its one code, reason_required.
    reason = serializers.CharField(required=False, allow_blank=True, default="", help_text="Why (required)")


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"})
    otp = serializers.CharField(required=False, help_text="TOTP code; required for admin, security officer, auditor")


class MeSerializer(UserSerializer):
    usage = serializers.SerializerMethodField()

    class Meta(UserSerializer.Meta):
        fields = [*UserSerializer.Meta.fields, "usage"]
        read_only_fields = fields

    def get_usage(self, obj) -> dict:
        return self.context.get("usage", {})
