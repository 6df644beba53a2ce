"""Session lifetime (idle and absolute) and the account gate: privileged people reach nothing
but 2FA enrolment or verification until they have used their second factor, and nobody with an
expired password reaches anything but the password change page. And each person's own language
and time zone (UserPreferencesMiddleware)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import logout
from django.db import transaction
from django.http import HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.http import urlencode

from apps.audit.services import Source, record_event

from .models import Profile
from .roles import PRIVILEGED
from .services.roles import note_break_glass_use, roles_of
from .services.security import note_superuser_use

LOGIN_AT, LAST_SEEN = "sv_login_at", "sv_last_seen"
SUPERUSER_NOTED = "sv_superuser_noted"
_EXEMPT_PREFIXES = ("/static/", "/healthz", "/v2/")
_TOUCH_EVERY = 60  # seconds: idle time is measured to the minute, sparing a session write per request


class UserPreferencesMiddleware:
    """After LocaleMiddleware (the browser's Accept-Language) and AuthenticationMiddleware: a signed-in
    person's own language (Profile.language) wins over the browser's, and their time zone
    (Profile.time_zone, else settings.TIME_ZONE) is the one every date is shown in for this request.
    One indexed query per session-authenticated page; API calls with a bearer token are anonymous
    here and cost nothing."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = request.user
        if request.path.startswith(_EXEMPT_PREFIXES) or not user.is_authenticated:
            return self.get_response(request)
        language, zone = Profile.objects.filter(user=user).values_list("language", "time_zone").first() or ("", "")
        if language:
            translation.activate(language)
            request.LANGUAGE_CODE = translation.get_language()
        with timezone.override(_zone(zone)):
            return self.get_response(request)


def _zone(name: str):
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name) if name else None  # None: the default, settings.TIME_ZONE
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None  # a zone removed from tzdata since it was chosen: the default rather than an error


def mark_login(request) -> None:
    now = timezone.now().timestamp()
    request.session[LOGIN_AT] = now
    request.session[LAST_SEEN] = now


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def by_the_person(request) -> bool:
    """Whether the request is the person's activity, for the idle timeout. A browser says so in its
    Fetch Metadata: `Sec-Fetch-User: ?1` on a navigation the person started (a click, a form, a typed
    address); a page's own polling fetch (the dashboard) or timed reload (static/deployments/live.js,
    a refresh meta) has none. Those keep the page current, not the session alive: an unattended
    screen still logs out after SESSION_IDLE_TIMEOUT. A client that sends no fetch metadata (an API
    client, an old browser) counts as the person."""
    return "HTTP_SEC_FETCH_SITE" not in request.META or request.META.get("HTTP_SEC_FETCH_USER") == "?1"


class SessionLifetimeMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        session = getattr(request, "session", None)
        if session is not None and request.user.is_authenticated and LOGIN_AT in session:
            now = timezone.now().timestamp()
            idle = now - session.get(LAST_SEEN, now)
            too_idle = idle > settings.SESSION_IDLE_TIMEOUT.total_seconds()
            if too_idle or now - session[LOGIN_AT] > settings.SESSION_ABSOLUTE_TIMEOUT.total_seconds():
                return self._expire(request, "idle" if too_idle else "absolute")
            if idle > _TOUCH_EVERY and by_the_person(request):
                session[LAST_SEEN] = now
        return self.get_response(request)

    def _expire(self, request, why: str):
        user = request.user
        with transaction.atomic():
            record_event(
                "auth.session.expired",
                actor=user,
                source=Source.from_request(request, token_id=None),
                target=user,
                details={"reason": why},
            )
        logout(request)
        if _is_api(request):
            return JsonResponse(
                {"code": "session_expired", "detail": f"the session ended ({why} timeout); log in again"}, status=401
            )
        return HttpResponseRedirect(f"{settings.LOGIN_URL}?{urlencode({'next': request.get_full_path()})}")


class AccountGateMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = request.user
        if not user.is_authenticated or request.path.startswith(_EXEMPT_PREFIXES):
            return self.get_response(request)
        roles = roles_of(user)
        if user.is_superuser or roles & PRIVILEGED:
            blocked = self._second_factor(request, user)
            if blocked:
                return blocked
        blocked = self._password_age(request, user)
        if blocked:
            return blocked
        self._note_break_glass(request, user)
        if user.is_superuser:
            self._note_superuser(request, user)
        return self.get_response(request)

    def _second_factor(self, request, user):
        if user.is_verified():
            return None
        from .otp import has_confirmed_device

        enrolled = has_confirmed_device(user)
        target = reverse("accounts:2fa-verify" if enrolled else "accounts:2fa-setup")
        if request.path in (target, reverse("admin:logout"), reverse("accounts:logout")):
            return None
        if _is_api(request):
            code = "otp_required" if enrolled else "otp_enrolment_required"
            return JsonResponse(
                {
                    "code": code,
                    "detail": "privileged roles must use a second factor: "
                    f"{'verify your code' if enrolled else 'enrol a TOTP device'} at {target}",
                },
                status=403,
            )
        return HttpResponseRedirect(f"{target}?{urlencode({'next': request.get_full_path()})}")

    def _password_age(self, request, user):
        profile = Profile.objects.filter(user=user).only("password_changed_at", "is_service_account").first()
        if profile is None or profile.is_service_account:
            return None
        if timezone.now() - profile.password_changed_at <= settings.PASSWORD_MAX_AGE:
            return None
        target = reverse("admin:password_change" if user.is_staff else "accounts:password-change")
        allowed = {
            target,
            reverse("accounts:password-change-done"),
            reverse("admin:password_change"),
            reverse("admin:password_change_done"),
            reverse("admin:logout"),
            reverse("accounts:logout"),
        }
        if request.path in allowed:
            return None
        if _is_api(request):
            detail = f"your password has expired; change it at {target}"
            return JsonResponse({"code": "password_expired", "detail": detail}, status=403)
        return HttpResponseRedirect(target)

    def _note_superuser(self, request, user) -> None:
        """Once per session (the login already alerted, and marked its session)."""
        session = getattr(request, "session", None)
        if session is None or session.get(SUPERUSER_NOTED):
            return
        note_superuser_use(user, source=Source.from_request(request, token_id=None), via="session", path=request.path)
        session[SUPERUSER_NOTED] = True

    def _note_break_glass(self, request, user) -> None:
        session = getattr(request, "session", None)
        if session is None:
            return
        seen = frozenset(session.get("sv_breakglass_noted", []))
        noted = note_break_glass_use(
            user, Source.from_request(request, token_id=None), request.path, already_noted=seen
        )
        if noted:
            session["sv_breakglass_noted"] = sorted(seen | set(noted))
