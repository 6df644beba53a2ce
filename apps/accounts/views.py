"""Portal pages for the second factor, and the lockout response used by django-axes."""

from __future__ import annotations

import base64
import io

import qrcode
import qrcode.image.svg
from django import forms
from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django_otp import match_token
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.audit.services import Source

from .otp import verified as otp_verified
from .services import record_2fa_enrolment, record_2fa_failure


class CodeForm(forms.Form):
    code = forms.CharField(
        max_length=8,
        label="6-digit code",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True}),
    )


def _next(request) -> str:
    target = request.POST.get("next") or request.GET.get("next") or "/admin/"
    return target if url_has_allowed_host_and_scheme(target, {request.get_host()}) else "/admin/"


def _context(request, **extra):
    return {**admin.site.each_context(request), **extra, "next": _next(request)}


@login_required
def totp_setup(request):
    """Enrol a TOTP authenticator: show the secret once as a QR code, confirm it with a code."""
    if TOTPDevice.objects.filter(user=request.user, confirmed=True).exists():
        return HttpResponseRedirect(f"/accounts/2fa/verify/?next={_next(request)}")
    device, _ = TOTPDevice.objects.get_or_create(user=request.user, confirmed=False, defaults={"name": "authenticator"})
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid() and _not_throttled(form, device):
        if device.verify_token(form.cleaned_data["code"].strip()):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            otp_verified(request, device)
            record_2fa_enrolment(user=request.user, device_name=device.name, source=Source.from_request(request, None))
            return HttpResponseRedirect(_next(request))
        record_2fa_failure(user=request.user, source=Source.from_request(request, None))
        form.add_error("code", "That code is not valid. Check the clock of your device and try again.")
    buffer = io.BytesIO()
    qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage).save(buffer)
    return render(
        request,
        "accounts/totp_setup.html",
        _context(
            request,
            title="Set up two-factor authentication",
            form=form,
            qr_svg=buffer.getvalue().decode(),
            secret=base64.b32encode(device.bin_key).decode(),
        ),
    )


@login_required
def totp_verify(request):
    """Enter the current code of the enrolled authenticator."""
    form = CodeForm(request.POST or None)
    enrolled = TOTPDevice.objects.filter(user=request.user, confirmed=True).first()
    if request.method == "POST" and form.is_valid() and _not_throttled(form, enrolled):
        device = match_token(request.user, form.cleaned_data["code"].strip())
        if device is not None:
            otp_verified(request, device)
            return HttpResponseRedirect(_next(request))
        record_2fa_failure(user=request.user, source=Source.from_request(request, None))
        form.add_error("code", "That code is not valid.")
    return render(request, "accounts/totp_verify.html", _context(request, title="Two-factor verification", form=form))


def _not_throttled(form, device) -> bool:
    """django-otp doubles the wait after each wrong code; say so rather than "not valid"."""
    allowed, info = device.verify_is_allowed() if device is not None else (True, None)
    if not allowed:
        form.add_error("code", "Too many wrong codes: wait a few seconds, then enter the current code.")
    return allowed


def lockout_response(request, response=None, credentials=None, *args, **kwargs):
    """django-axes lockout: the same answer whether or not the account exists."""
    detail = "Too many failed logins. Try again later or ask a security officer to unlock the account."
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "locked_out", "detail": detail}, status=429)
    return render(request, "accounts/locked_out.html", _context(request, title="Locked out", detail=detail), status=429)
