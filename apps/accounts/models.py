import hashlib

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_otp.models import Device, ThrottlingMixin, TimestampMixin
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

TOKEN_PREFIX = "svt_"


def digest_token(plaintext: str) -> str:
    """Tokens carry 256 bits of randomness, so a plain SHA-256 is enough (no slow KDF needed),
    and it keeps lookup on the inference path to one indexed equality query."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


class Scope(models.TextChoices):
    INVOKE = "invoke", _("invoke models through the gateway")
    READ = "read", _("read the API")
    MANAGE = "manage", _("change things through the API")


class Profile(models.Model):
    """What Sovereign knows about a user beyond Django's User: whether it is a service account
    (a non-human user owned by a person), when its password last changed, and the person's own
    interface language and time zone (blank: the browser's language, settings.TIME_ZONE). Those two
    change only through apps.accounts.services.set_preferences."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    is_service_account = models.BooleanField(default=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="service_accounts"
    )
    password_changed_at = models.DateTimeField(default=timezone.now)
    disabled_reason = models.CharField(max_length=200, blank=True)
    language = models.CharField(
        _("language"),
        max_length=10,
        blank=True,
        choices=settings.LANGUAGES,
        help_text=_("Blank: the browser's language."),
    )
    time_zone = models.CharField(
        _("time zone"),
        max_length=64,
        blank=True,
        help_text=_("An IANA zone such as Asia/Shanghai; blank: the default."),
    )

    class Meta:
        verbose_name = _("user profile")  # not "profile": in the portal that is a compliance profile

    def __str__(self) -> str:
        return f"profile of {self.user}"


class ApiToken(models.Model):
    """A bearer credential for the API and the gateway. Only its SHA-256 is stored; the plaintext
    is returned once by apps.accounts.services.issue_token and cannot be recovered."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=12, editable=False, help_text=_("First characters, to recognise the token"))
    scopes = models.JSONField(default=list, help_text=_("Subset of invoke, read, manage"))
    allowed_models = models.ManyToManyField(
        "registry.Model", blank=True, related_name="+", help_text=_("If set, the token may only reach these models")
    )
    restricted = models.BooleanField(
        default=False, editable=False, help_text=_("True when allowed_models is set (spares a query per call)")
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("manage_tokens", "Can see and revoke other users' tokens")]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now=None) -> bool:
        return (now or timezone.now()) >= self.expires_at

    @property
    def status(self) -> str:
        if self.is_revoked:
            return "revoked"
        return "expired" if self.is_expired() else "active"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class ModelUserGrant(UserObjectPermissionBase):
    """A django-guardian object permission (view_model / invoke_model) on one registry Model for
    one user, with an optional expiry. Written only by apps.accounts.services.grants."""

    content_object = models.ForeignKey("registry.Model", on_delete=models.CASCADE, related_name="user_grants")
    expires_at = models.DateTimeField(null=True, blank=True)
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    granted_at = models.DateTimeField(default=timezone.now)

    class Meta(UserObjectPermissionBase.Meta):
        permissions = [("manage_grants", "Can grant and revoke access to models")]


class ModelGroupGrant(GroupObjectPermissionBase):
    """The same as ModelUserGrant, for a group."""

    content_object = models.ForeignKey("registry.Model", on_delete=models.CASCADE, related_name="group_grants")
    expires_at = models.DateTimeField(null=True, blank=True)
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    granted_at = models.DateTimeField(default=timezone.now)

    class Meta(GroupObjectPermissionBase.Meta):
        pass


class EmergencyAccess(models.Model):
    """Break-glass: a role held for a limited time, granted by a security officer with a reason.
    Its first use in each session raises an alert event."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="emergency_access")
    role = models.CharField(max_length=32)
    reason = models.TextField()
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    granted_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-granted_at"]
        permissions = [
            ("grant_break_glass", "Can grant emergency (break-glass) roles"),
            ("manage_roles", "Can assign and remove roles"),
        ]

    def __str__(self) -> str:
        return f"{self.user} as {self.role} until {self.expires_at:%Y-%m-%d %H:%M}"

    def is_active(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and self.granted_at <= now < self.expires_at


class EnrolmentCode(models.Model):
    """A one-time code that lets a privileged account enrol its TOTP device (no trust on first
    use: knowing the password is not enough). Issued by the security officer who assigned the
    role (or the host, for the first officer); only its SHA-256 is stored; it expires after
    ENROLMENT_CODE_LIFETIME and is spent by the enrolment it allows. Written only by
    apps.accounts.services.enrolment."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="enrolment_codes")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    issued_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    issued_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True, editable=False)
    voided_at = models.DateTimeField(null=True, blank=True, editable=False, help_text=_("Replaced by a newer code"))

    class Meta:
        ordering = ["-issued_at"]

    def __str__(self) -> str:
        return f"enrolment code for {self.user} (expires {self.expires_at:%Y-%m-%d %H:%M})"

    def is_usable(self, now=None) -> bool:
        return self.used_at is None and self.voided_at is None and (now or timezone.now()) < self.expires_at


def _sm3_otp_key() -> str:
    from django_otp.util import random_hex

    return random_hex(32)


class SM3OTPDevice(TimestampMixin, ThrottlingMixin, Device):
    """A one-time-password device whose codes are SM3 OTP (GM/T 0021-2012, apps.accounts.sm3otp),
    time-based: enrolled instead of django-otp's HMAC-SHA1 TOTPDevice when 国密 mode is on
    (apps.accounts.otp.otp_algorithm()). django-otp finds it like any device (match_token)."""

    key = models.CharField(max_length=128, default=_sm3_otp_key, help_text=_("Hex-encoded seed (256 bits)."))
    step = models.PositiveSmallIntegerField(default=60)
    t0 = models.BigIntegerField(default=0)
    digits = models.PositiveSmallIntegerField(choices=[(6, 6), (8, 8)], default=6)
    tolerance = models.PositiveSmallIntegerField(default=1)
    last_t = models.BigIntegerField(default=-1)

    algorithm = "SM3"

    class Meta(Device.Meta):
        verbose_name = _("SM3 OTP device")

    @property
    def bin_key(self) -> bytes:
        return bytes.fromhex(self.key)

    def token_at(self, t: int) -> str:
        from .sm3otp import sm3_otp

        return sm3_otp(self.bin_key, t=t, digits=self.digits)

    def verify_token(self, token) -> bool:
        import hmac
        import time

        from .sm3otp import time_factor

        allowed, _wait = self.verify_is_allowed()
        if not allowed:
            return False
        token = str(token).strip()
        now_t = time_factor(time.time(), self.step, self.t0)
        match = None
        if token.isdigit() and len(token) == self.digits:
            for t in range(now_t - self.tolerance, now_t + self.tolerance + 1):
                if t > self.last_t and hmac.compare_digest(self.token_at(t), token):
                    match = t
                    break
        if match is None:
            self.throttle_increment(commit=True)
            return False
        self.last_t = match
        self.throttle_reset(commit=False)
        self.set_last_used_timestamp(commit=False)
        self.save()
        return True

    def get_throttle_factor(self):
        from .otp import grace_throttle_factor

        return grace_throttle_factor(self)  # the first wrong codes cost no wait (apps.accounts.otp)

    @property
    def config_url(self) -> str:
        """The seed for provisioning an SM3 OTP token, in the otpauth form with algorithm=SM3
        (common authenticator apps do not implement SM3: use a GM/T 0021 token or app)."""
        from base64 import b32encode
        from urllib.parse import quote, urlencode

        params = urlencode(
            {"secret": b32encode(self.bin_key), "algorithm": "SM3", "digits": self.digits, "period": self.step}
        )
        return f"otpauth://totp/{quote(self.user.get_username())}?{params}"
