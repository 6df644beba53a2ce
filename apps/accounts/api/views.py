"""Accounts API: users and roles, per-model grants, tokens, service accounts, break-glass, login."""

import math

from django.contrib.auth import authenticate, get_user_model, login
from django.db.models import Count
from django.utils import timezone
from django_otp import match_token
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.audit.models import AuditEvent
from apps.audit.services import Source
from apps.core.csrf import SameOriginOnly
from apps.core.errors import ServiceError, _, get_or_404

from .. import services
from ..models import ApiToken, EmergencyAccess, ModelGroupGrant, ModelUserGrant, Profile
from ..otp import confirmed_devices, has_confirmed_device, second_factor_at
from ..otp import verified as otp_verified
from ..roles import PRIVILEGED
from . import serializers as s


def _src(request) -> Source:
    return Source.from_request(request)


class AccountsApi:
    """Base of every accounts API view: a token, whatever its scopes, makes no write here (users,
    roles, passwords, grants, service accounts, break-glass, tokens) — 403 `token_not_allowed`
    (ActionPermission). Who may do what changes only from a person's session, which passed the
    second factor when the person is privileged; a leaked CI token cannot hand out power.
    tests/security/test_token_accounts_writes.py walks the URL resolver to hold every route to it."""

    token_writes_refused = True


class ApiTokenViewSet(AccountsApi, viewsets.ReadOnlyModelViewSet):
    """API tokens: your own and your service accounts' (security officers: everyone's, to revoke;
    auditors: everyone's, to read). The token value is returned once, at creation; only its hash is
    kept. Tokens are issued from a logged-in session only, for yourself or a service account you
    own (the rules live in the service: apps/accounts/services/tokens.py)."""

    serializer_class = s.ApiTokenSerializer
    filterset_fields = {"name": ["exact"], "revoked_at": ["isnull"], "user__username": ["exact"]}
    action_perms = {"list": None, "retrieve": None, "create": None, "revoke": None}
    token_refusals = {"create": "token_cannot_issue_tokens"}  # the more precise code for minting

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        qs = ApiToken.objects.select_related("user").prefetch_related("allowed_models")
        user = self.request.user
        if user.has_perm("accounts.manage_tokens") or (
            self.action in ("list", "retrieve") and user.has_perm("accounts.view_apitoken")
        ):
            return qs  # officers revoke every token; auditors read them all
        return qs.filter(user__in=[user.pk, *Profile.objects.filter(owner=user).values_list("user_id", flat=True)])

    @extend_schema(request=s.ApiTokenCreateSerializer, responses={201: s.ApiTokenCreatedSerializer})
    def create(self, request):
        form = s.ApiTokenCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        token, plaintext = services.issue_token(
            user=self._target(request.user, data.get("user")),
            name=data["name"],
            days=data.get("days"),
            scopes=data.get("scopes"),
            model_ids=data.get("models"),
            actor=request.user,
            source=_src(request),
            otp_verified_at=second_factor_at(request),
            otp=data.get("otp", ""),
        )
        token.token = plaintext
        return Response(s.ApiTokenCreatedSerializer(token).data, status=201)

    @extend_schema(request=None, responses={200: s.ApiTokenSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        token = services.revoke_token(token_id=self.get_object().pk, actor=request.user, source=_src(request))
        return Response(s.ApiTokenSerializer(token).data)

    @staticmethod
    def _target(caller, user_id):
        """The account named by `user` (default: the caller); whether the caller may issue for it
        is the service's question, which answers the same 404 for "no such user"."""
        if user_id is None or user_id == caller.pk:
            return caller
        return get_or_404(
            get_user_model(),
            "user_not_found",
            _("no user with id %(user_id)s that you may issue tokens for") % {"user_id": user_id},
            pk=user_id,
        )


class UserViewSet(AccountsApi, viewsets.ReadOnlyModelViewSet):
    """User accounts and their roles, under the policy of powers (docs/access-control.md): an admin
    creates persons and gives analyst or guest; only a security officer gives admin,
    security_officer or auditor, which answers with a one-time enrolment code; nobody changes
    their own roles or account."""

    serializer_class = s.UserSerializer
    filterset_fields = {"username": ["exact", "icontains"], "is_active": ["exact"], "groups__name": ["exact"]}
    action_perms = {
        "list": "auth.view_user",
        "retrieve": "auth.view_user",
        "create": "auth.add_user",
        # admins and security officers; the services apply the finer rules (self, privileged targets)
        "active": None,
        "add_role": None,
        "remove_role": None,
        "password": "auth.change_user",
    }
    MANAGERS = ("auth.change_user", "accounts.manage_roles")

    def get_queryset(self):
        return get_user_model().objects.select_related("profile__owner").prefetch_related("groups", "totpdevice_set")

    def _managed_object(self):
        """The user to change, once the caller is known to be an admin or a security officer (so
        that nobody else learns which ids exist)."""
        if not any(self.request.user.has_perm(p) for p in self.MANAGERS):
            raise PermissionDenied()
        return self.get_object()

    @extend_schema(request=s.UserCreateSerializer, responses={201: s.UserSerializer})
    def create(self, request):
        form = s.UserCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        user = services.create_user(**form.validated_data, actor=request.user, source=_src(request))
        return Response(s.UserSerializer(user).data, status=201)

    @extend_schema(request=s.UserActiveSerializer, responses={200: s.UserSerializer})
    @action(detail=True, methods=["post"])
    def active(self, request, pk=None):
        target = self._managed_object()
        form = s.UserActiveSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        user = services.set_user_active(
            user_id=target.pk,
            active=form.validated_data["is_active"],
            actor=request.user,
            source=_src(request),
        )
        return Response(s.UserSerializer(self.get_queryset().get(pk=user.pk)).data)

    @extend_schema(request=s.PasswordResetSerializer, responses={200: s.UserSerializer})
    @action(detail=True, methods=["post"])
    def password(self, request, pk=None):
        """Reset another person's password (analysts and guests only): the change is forced at the
        next login, their sessions end and their tokens are revoked."""
        form = s.PasswordResetSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        user = services.reset_password(
            user_id=self.get_object().pk,
            password=form.validated_data["password"],
            actor=request.user,
            source=_src(request),
        )
        return Response(s.UserSerializer(self.get_queryset().get(pk=user.pk)).data)

    @extend_schema(request=s.RoleSerializer, responses={200: s.RoleAssignedSerializer})
    @action(detail=True, methods=["post"], url_path="roles")
    def add_role(self, request, pk=None):
        """Give a role. For admin, security_officer and auditor (security officers only) the
        answer carries `enrolment_code`, shown this once: the person needs it to enrol their TOTP."""
        target = self._managed_object()
        form = s.RoleSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        user = services.assign_role(
            user_id=target.pk,
            role=form.validated_data["role"],
            actor=request.user,
            source=_src(request),
        )
        fresh = self.get_queryset().get(pk=user.pk)
        fresh.enrolment_code = user.enrolment_code
        return Response(s.RoleAssignedSerializer(fresh).data)

    @extend_schema(request=None, responses={200: s.UserSerializer})
    @action(detail=True, methods=["delete"], url_path=r"roles/(?P<role>[a-z_]+)")
    def remove_role(self, request, pk=None, role=None):
        user = services.remove_role(
            user_id=self._managed_object().pk, role=role, actor=request.user, source=_src(request)
        )
        return Response(s.UserSerializer(self.get_queryset().get(pk=user.pk)).data)


class _GrantViewSet(
    AccountsApi, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    grantee = "user"
    create_serializer = s.GrantCreateSerializer

    @extend_schema(request=s.GrantCreateSerializer)
    def create(self, request):
        form = s.GrantCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        if data.get(self.grantee) is None:
            raise ServiceError(
                "invalid_grantee", _("give the %(grantee)s id") % {"grantee": self.grantee}, field=self.grantee
            )
        services.grant_model_access(
            model_id=data["model"],
            permission=data["permission"],
            expires_at=data.get("expires_at"),
            actor=request.user,
            source=_src(request),
            **{f"{self.grantee}_id": data[self.grantee]},
        )
        rows = self.get_queryset().filter(content_object_id=data["model"], **{f"{self.grantee}_id": data[self.grantee]})
        return Response(self.get_serializer(rows, many=True).data, status=201)

    def perform_destroy(self, instance):
        services.revoke_model_access(
            model_id=instance.content_object_id,
            permission=instance.permission.codename,
            actor=self.request.user,
            source=_src(self.request),
            **{f"{self.grantee}_id": getattr(instance, f"{self.grantee}_id")},
        )


class UserGrantViewSet(_GrantViewSet):
    """Per-model grants to users (view_model, invoke_model), optionally expiring. Creating
    invoke_model also grants view_model; revoking view_model also revokes invoke_model."""

    serializer_class = s.UserGrantSerializer
    filterset_fields = {"user": ["exact"], "content_object": ["exact"], "permission__codename": ["exact"]}
    action_perms = {
        "list": "accounts.view_modelusergrant",
        "retrieve": "accounts.view_modelusergrant",
        "create": "accounts.manage_grants",
        "destroy": "accounts.manage_grants",
    }

    def get_queryset(self):
        return ModelUserGrant.objects.select_related("user", "content_object", "permission", "granted_by")


class GroupGrantViewSet(_GrantViewSet):
    """Per-model grants to groups."""

    grantee = "group"
    serializer_class = s.GroupGrantSerializer
    filterset_fields = {"group": ["exact"], "content_object": ["exact"], "permission__codename": ["exact"]}
    action_perms = {
        "list": "accounts.view_modelgroupgrant",
        "retrieve": "accounts.view_modelgroupgrant",
        "create": "accounts.manage_grants",
        "destroy": "accounts.manage_grants",
    }

    def get_queryset(self):
        return ModelGroupGrant.objects.select_related("group", "content_object", "permission", "granted_by")


class ServiceAccountViewSet(AccountsApi, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Non-human users owned by a person; they authenticate only with tokens."""

    serializer_class = s.UserSerializer
    action_perms = {"list": None, "retrieve": None, "create": "auth.add_user"}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return get_user_model().objects.none()
        qs = (
            get_user_model()
            .objects.filter(profile__is_service_account=True)
            .select_related("profile__owner")
            .prefetch_related("groups", "totpdevice_set")
        )
        user = self.request.user
        return qs if user.has_perm("auth.view_user") else qs.filter(profile__owner=user)

    @extend_schema(request=s.ServiceAccountCreateSerializer, responses={201: s.UserSerializer})
    def create(self, request):
        form = s.ServiceAccountCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        account = services.create_service_account(
            name=form.validated_data["name"],
            owner_id=request.user.pk,
            role=form.validated_data["role"],
            actor=request.user,
            source=_src(request),
        )
        return Response(s.UserSerializer(self.get_queryset().get(pk=account.pk)).data, status=201)


class EmergencyAccessViewSet(AccountsApi, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Break-glass: time-limited emergency roles granted by a security officer; their use alerts."""

    serializer_class = s.EmergencyAccessSerializer
    queryset = EmergencyAccess.objects.select_related("user", "granted_by")
    action_perms = {
        "list": "accounts.view_emergencyaccess",
        "retrieve": "accounts.view_emergencyaccess",
        "create": "accounts.grant_break_glass",
        "revoke": "accounts.grant_break_glass",
    }

    @extend_schema(request=s.EmergencyAccessCreateSerializer, responses={201: s.EmergencyAccessCreatedSerializer})
    def create(self, request):
        form = s.EmergencyAccessCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        d = form.validated_data
        access = services.grant_emergency_access(
            user_id=d["user"],
            role=d["role"],
            minutes=d["minutes"],
            reason=d["reason"],
            actor=request.user,
            source=_src(request),
        )
        return Response(s.EmergencyAccessCreatedSerializer(access).data, status=201)

    @extend_schema(request=None, responses={200: s.EmergencyAccessSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        access = services.revoke_emergency_access(
            access_id=self.get_object().pk, actor=request.user, source=_src(request)
        )
        return Response(s.EmergencyAccessSerializer(access).data)


class MeView(AccountsApi, APIView):
    """Who you are, your roles and your own usage of the gateway over the last 30 days."""

    action_perms = {"get": None}

    @extend_schema(responses={200: s.MeSerializer})
    def get(self, request):
        since = timezone.now() - timezone.timedelta(days=30)
        events = AuditEvent.objects.filter(actor=request.user, event_group="inference", timestamp__gte=since)
        if getattr(request.auth, "restricted", False):  # a restricted token sees its models' usage only
            events = events.filter(target_display__in=request.auth.allowed_models.values("name"))
        usage = events.values("target_display", "outcome").annotate(calls=Count("id")).order_by("target_display")
        by_model: dict = {}
        for row in usage:
            by_model.setdefault(row["target_display"], {})[row["outcome"]] = row["calls"]
        user = get_user_model().objects.prefetch_related("groups", "totpdevice_set").get(pk=request.user.pk)
        return Response(s.MeSerializer(user, context={"usage": by_model}).data)


class LoginView(APIView):
    """Session login for API clients. Lockout after repeated failures (django-axes); privileged
    roles must also send their TOTP code. The error never says whether the user exists."""

    authentication_classes: list = []
    permission_classes = [SameOriginOnly]  # DRF exempts this view from CSRF: refuse login CSRF (apps/core/csrf.py)
    parser_classes = [JSONParser]  # a cross-site HTML form cannot send JSON

    @extend_schema(request=s.LoginSerializer, responses={200: s.UserSerializer})
    def post(self, request):
        form = s.LoginSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        d = form.validated_data
        django_request = request._request
        user = authenticate(django_request, username=d["username"], password=d["password"])
        if getattr(django_request, "axes_locked_out", False):
            raise ServiceError("locked_out", _("too many failed logins; try again later"), 429)
        if user is None:
            raise ServiceError("invalid_credentials", _("invalid user name or password"), 401)
        device = None
        if user.is_superuser or services.roles_of(user) & PRIVILEGED:
            if not has_confirmed_device(user):
                raise ServiceError(
                    "otp_enrolment_required", _("enrol a TOTP device in the portal first (/accounts/2fa/setup/)"), 403
                )
            wait = _throttle_wait(user)
            if wait:
                body = {
                    "code": "otp_throttled",
                    "detail": f"too many wrong codes: wait {wait} s, then send the current one",
                }
                return Response(body, status=429, headers={"Retry-After": str(wait)})
            device = match_token(user, d.get("otp") or "")
            if device is None:
                services.record_2fa_failure(user=user, source=_src(request))
                raise ServiceError("invalid_otp", _("the one-time code is missing or wrong"), 401, "otp")
        login(django_request, user)
        if device is not None:
            otp_verified(django_request, device)  # records when, for issuing tokens
        return Response(s.UserSerializer(get_user_model().objects.get(pk=user.pk)).data)


def _throttle_wait(user) -> int:
    """django-otp makes a device wait after a wrong code (1 s, then 2, 4 ...) and refuses even the
    right code meanwhile: the seconds left, so that the caller is told to wait (429 with
    Retry-After) rather than that its right code is wrong, and the early try is not one more failure."""
    for device in confirmed_devices(user):
        allowed, info = device.verify_is_allowed()
        if not allowed and info and info.get("locked_until"):
            return max(1, math.ceil((info["locked_until"] - timezone.now()).total_seconds()))
    return 0
