"""Portal pages for the second factor and for changing one's own password, and the lockout
response used by django-axes."""

from __future__ import annotations

import base64
import io

import qrcode
import qrcode.image.svg
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView, PasswordChangeView
from django.db.models import Q
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST
from django_otp import match_token

from apps.audit.services import Source
from apps.core.errors import ServiceError

from .models import ApiToken, EnrolmentCode, Profile
from .otp import confirmed_devices, device_models, enrol_model, has_confirmed_device, second_factor_at
from .otp import verified as otp_verified
from .services import (
    change_own_password,
    confirm_totp_enrolment,
    find_enrolment_code,
    issue_token,
    record_2fa_failure,
    revoke_token,
    set_preferences,
)
from .services.policy import is_privileged
from .services.preferences import time_zones


class CodeForm(forms.Form):
    code = forms.CharField(
        max_length=8,
        label=_("6-digit code"),
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True}),
    )


def _next(request) -> str:
    target = request.POST.get("next") or request.GET.get("next") or "/admin/"
    return target if url_has_allowed_host_and_scheme(target, {request.get_host()}) else "/admin/"


def _context(request, **extra):
    return {**admin.site.each_context(request), **extra, "next": _next(request)}


ENROL_CODE, ENROL_DEVICE = "sv_enrolment_code", "sv_enrolment_device"


class EnrolmentCodeForm(forms.Form):
    enrolment_code = forms.CharField(
        max_length=40,
        label=_("Enrolment code"),
        help_text=_("The one-time code the security officer gave you with your role."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "autofocus": True}),
    )


@login_required
def totp_setup(request):
    """Enrol a TOTP authenticator: show the secret once as a QR code, confirm it with a code.
    A privileged account first gives its one-time enrolment code (no trust on first use: the
    password alone does not enrol); the secret is shown only after that, on a device created
    then, so a secret anyone saw before is worthless."""
    user = request.user
    if has_confirmed_device(user):
        return HttpResponseRedirect(f"/accounts/2fa/verify/?next={_next(request)}")
    code_id = None
    if is_privileged(user):
        code_id = _accepted_code(request)
        if code_id is None:
            return _ask_enrolment_code(request)
        device = enrol_model().objects.filter(pk=request.session.get(ENROL_DEVICE), user=user, confirmed=False).first()
    else:
        device = enrol_model().objects.filter(user=user, confirmed=False).first()
    if device is None:
        device = _fresh_device(request)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid() and _not_throttled(form, device):
        source = Source.from_request(request, None)
        if device.verify_token(form.cleaned_data["code"].strip()):
            try:
                confirm_totp_enrolment(user=user, device=device, code_id=code_id, source=source)
            except ServiceError as err:
                request.session.pop(ENROL_CODE, None)
                form.add_error("code", err.detail)
            else:
                for key in (ENROL_CODE, ENROL_DEVICE):
                    request.session.pop(key, None)
                otp_verified(request, device)
                return HttpResponseRedirect(_next(request))
        else:
            record_2fa_failure(user=user, source=source)
            form.add_error("code", gettext("That code is not valid. Check the clock of your device and try again."))
    buffer = io.BytesIO()
    qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage).save(buffer)
    return render(
        request,
        "accounts/totp_setup.html",
        _context(
            request,
            title=_("Set up two-factor authentication"),
            form=form,
            qr_svg=buffer.getvalue().decode(),
            secret=base64.b32encode(device.bin_key).decode(),
        ),
    )


def _accepted_code(request) -> int | None:
    """The enrolment code this session gave, while it is still usable."""
    code_id = request.session.get(ENROL_CODE)
    if code_id is None:
        return None
    if EnrolmentCode.objects.filter(pk=code_id, user=request.user).filter(_usable_now()).exists():
        return code_id
    request.session.pop(ENROL_CODE, None)
    return None


def _usable_now() -> Q:
    return Q(used_at__isnull=True, voided_at__isnull=True, expires_at__gt=timezone.now())


def _ask_enrolment_code(request):
    form = EnrolmentCodeForm(request.POST if "enrolment_code" in request.POST else None)
    if request.method == "POST" and form.is_valid():
        code = find_enrolment_code(request.user, form.cleaned_data["enrolment_code"])
        if code is not None:
            request.session[ENROL_CODE] = code.pk
            _fresh_device(request)
            return HttpResponseRedirect(f"{request.path}?{urlencode({'next': _next(request)})}")
        record_2fa_failure(user=request.user, source=Source.from_request(request, None), code="enrolment_code_invalid")
        form.add_error(
            "enrolment_code",
            gettext("That enrolment code is wrong, spent or expired. Ask a security officer for a new one."),
        )
    return render(
        request,
        "accounts/totp_enrolment_code.html",
        _context(request, title=_("Set up two-factor authentication"), form=form),
    )


def _fresh_device(request):
    """A new unconfirmed device (any earlier unconfirmed one, and the secret it showed, is gone)."""
    for model in device_models():
        model.objects.filter(user=request.user, confirmed=False).delete()
    device = enrol_model().objects.create(user=request.user, confirmed=False, name="authenticator")
    request.session[ENROL_DEVICE] = device.pk
    return device


@login_required
def totp_verify(request):
    """Enter the current code of the enrolled authenticator."""
    form = CodeForm(request.POST or None)
    enrolled = next(iter(confirmed_devices(request.user)), None)
    if request.method == "POST" and form.is_valid() and _not_throttled(form, enrolled):
        device = match_token(request.user, form.cleaned_data["code"].strip())
        if device is not None:
            otp_verified(request, device)
            return HttpResponseRedirect(_next(request))
        record_2fa_failure(user=request.user, source=Source.from_request(request, None))
        form.add_error("code", gettext("That code is not valid."))
    return render(
        request, "accounts/totp_verify.html", _context(request, title=_("Two-factor verification"), form=form)
    )


def _not_throttled(form, device) -> bool:
    """django-otp doubles the wait after each wrong code; say so rather than "not valid"."""
    allowed, info = device.verify_is_allowed() if device is not None else (True, None)
    if not allowed:
        form.add_error("code", gettext("Too many wrong codes: wait a few seconds, then enter the current code."))
    return allowed


class PortalLoginView(LoginView):
    """Everyone's login (`/accounts/login/`, settings.LOGIN_URL): any active account with a password,
    analysts included, where the admin's own login takes staff only. The same backends answer it
    (django-axes sees the request and locks out; the login signals audit it; the rate limit charges a
    refusal), and the account gate still sends a privileged person to the second factor first.
    Rendered with the admin's look; afterwards `next` if it is safe, else the admin for staff and
    one's API tokens for everyone else."""

    template_name = "admin/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self):
        if self.next_page:
            return super().get_default_redirect_url()
        return reverse("admin:index") if self.request.user.is_staff else reverse("accounts:tokens")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        return {
            **admin.site.each_context(self.request),
            **context,
            "title": gettext("Log in"),
            "app_path": self.request.get_full_path(),
            "site_name": "Sovereign",
        }


class OwnPasswordChangeView(PasswordChangeView):
    """Change one's own password — the portal page (`via="portal"`) and, through the admin site,
    the admin's (`via="admin"`) — through the audited service change_own_password, instead of
    Django's form.save(), which writes no event. The form still gives its field errors; a refusal
    of the service (e.g. the event cannot be written) shows on the form and changes nothing."""

    via = "portal"

    def form_valid(self, form):
        try:
            user = change_own_password(
                user=form.user,
                old_password=form.cleaned_data["old_password"],
                new_password=form.cleaned_data["new_password1"],
                via=self.via,
                source=Source.from_request(self.request, None),
            )
        except ServiceError as err:
            if err.field in form.fields:
                form.add_error(err.field, err.detail)
            else:  # the admin's form shows no non-field errors; both pages show messages
                messages.error(self.request, err.detail)
            response = self.form_invalid(form)
            response.status_code = err.status_code  # e.g. 503 when the audit log is unavailable
            return response
        update_session_auth_hash(self.request, user)  # this session stays; the others end
        return HttpResponseRedirect(self.get_success_url())


def lockout_response(request, response=None, credentials=None, *args, **kwargs):
    """django-axes lockout: the same answer whether or not the account exists."""
    detail = gettext("Too many failed logins. Try again later or ask a security officer to unlock the account.")
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "locked_out", "detail": detail}, status=429)
    return render(
        request, "accounts/locked_out.html", _context(request, title=_("Locked out"), detail=detail), status=429
    )


class PreferencesForm(forms.Form):
    """A person's own language and time zone; a field left out of the POST keeps its value (the
    header's language switch sends only the language)."""

    language = forms.ChoiceField(label=_("Language"), required=False)
    time_zone = forms.ChoiceField(label=_("Time zone"), required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["language"].choices = [("", _("The browser's language")), *settings.LANGUAGES]
        default = _("The default (%(zone)s)") % {"zone": settings.TIME_ZONE}
        self.fields["time_zone"].choices = [("", default), *((z, z) for z in sorted(time_zones()))]


@login_required
def preferences(request):
    """Show and change one's own language and time zone, through the audited service."""
    saved = Profile.objects.filter(user=request.user).values("language", "time_zone").first()
    current = saved or {"language": "", "time_zone": ""}
    form = PreferencesForm(initial=current)
    if request.method == "POST":
        form = PreferencesForm({**current, **{k: v for k, v in request.POST.items() if k in current}})
        if form.is_valid():
            try:
                set_preferences(user=request.user, source=Source.from_request(request, None), **form.cleaned_data)
            except ServiceError as err:
                form.add_error(err.field, err.detail)
            else:
                messages.success(request, _("Your preferences were saved."))
                return HttpResponseRedirect(_next(request))
    title = _("Language and time zone")
    return render(request, "accounts/preferences.html", _context(request, title=title, form=form))


class IssueOwnTokenForm(forms.Form):
    name = forms.CharField(label=_("name"), max_length=100, help_text=_("What the token is for, e.g. laptop or CI."))
    days = forms.IntegerField(
        label=_("days until expiry"),
        min_value=1,
        max_value=settings.TOKEN_MAX_DAYS,
        initial=min(settings.TOKEN_DEFAULT_DAYS, settings.TOKEN_MAX_DAYS),
    )
    scopes = forms.MultipleChoiceField(
        label=_("scopes"),
        choices=[("invoke", _("invoke models")), ("read", _("read the API")), ("manage", _("API writes"))],
        initial=["invoke", "read"],
        widget=forms.CheckboxSelectMultiple,
    )
    otp = forms.CharField(
        label=_("one-time code"),
        required=False,
        max_length=8,
        help_text=_("Privileged people only, if your second factor was passed more than a few minutes ago."),
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code"}),
    )

    def __init__(self, *args, privileged: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if not privileged:
            del self.fields["otp"]  # only privileged people need a fresh second factor to issue


TOKEN_STATES = {"active": _("active"), "revoked": _("revoked"), "expired": _("expired")}


@login_required
def tokens(request):
    """One's own API tokens: issue one (its plaintext shown on this answer only, never stored),
    list them, revoke one. Always the signed-in person's own: the page takes no user, so nobody
    mints a token for anyone else here (issue_token checks again; a token manager revokes others'
    tokens on the admin's token list)."""
    privileged = is_privileged(request.user)
    form = IssueOwnTokenForm(request.POST or None, privileged=privileged)
    issued = plaintext = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            issued, plaintext = issue_token(
                user=request.user,
                name=data["name"],
                days=data["days"],
                scopes=data["scopes"],
                actor=request.user,
                source=Source.from_request(request, None),
                otp_verified_at=second_factor_at(request),
                otp=data.get("otp", ""),
            )
        except ServiceError as err:
            form.add_error(err.field if err.field in form.fields else None, f"{err.detail} ({err.code})")
        else:
            form = IssueOwnTokenForm(privileged=privileged)
    own = list(ApiToken.objects.filter(user=request.user).order_by("-created_at"))
    for token in own:
        token.status_label = TOKEN_STATES.get(token.status, token.status)
    context = _context(
        request,
        title=_("Your API tokens"),
        form=form,
        tokens=own,
        issued=issued,
        plaintext=plaintext,
        privileged=privileged,
    )
    response = render(request, "accounts/tokens.html", context)
    if plaintext:
        response["Cache-Control"] = "no-store"  # the secret must not stay in a cache
    return response


@login_required
@require_POST
def token_revoke(request, token_id: int):
    """Revoke one of one's own tokens through revoke_token (audited)."""
    token = ApiToken.objects.filter(pk=token_id, user=request.user).first()
    if token is None:
        raise Http404(gettext("no such token of yours"))
    try:
        revoke_token(token_id=token.pk, actor=request.user, source=Source.from_request(request, None))
    except ServiceError as err:
        messages.error(request, f"{err.detail} ({err.code})")
    else:
        messages.success(request, gettext("Token %(name)s revoked.") % {"name": token.name})
    return HttpResponseRedirect(reverse("accounts:tokens"))
