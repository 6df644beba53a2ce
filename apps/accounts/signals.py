"""Login, logout, lockout and profile bookkeeping, recorded in the audit log."""

from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from apps.audit.models import Outcome
from apps.audit.services import Source, record_event

from .models import Profile


def _source(request) -> Source:
    return Source.from_request(getattr(request, "_request", request), token_id=None) if request else Source()


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def ensure_profile(sender, instance, created, **kwargs):
    if created:
        Profile.objects.get_or_create(user=instance)


@receiver(user_logged_in)
def on_login(sender, request, user, **kwargs):
    if request is not None and hasattr(request, "session"):
        from .middleware import mark_login

        mark_login(request)
    with transaction.atomic():
        record_event("auth.login.success", actor=user, source=_source(request), target=user)
    if user.is_superuser:
        from .middleware import SUPERUSER_NOTED
        from .services.security import note_superuser_use

        note_superuser_use(user, source=_source(request), via="login", path=getattr(request, "path", ""))
        if request is not None and hasattr(request, "session"):
            request.session[SUPERUSER_NOTED] = True


@receiver(user_logged_out)
def on_logout(sender, request, user, **kwargs):
    if user is not None:
        with transaction.atomic():
            record_event("auth.logout", actor=user, source=_source(request), target=user)


@receiver(user_login_failed)
def on_login_failed(sender, credentials, request=None, **kwargs):
    # The submitted name is recorded as given: it may not exist, and the response never says.
    with transaction.atomic():
        record_event(
            "auth.login.failure",
            actor=None,
            source=_source(request),
            outcome=Outcome.FAILURE,
            error_code="invalid_credentials",
            target_type="auth.user",
            target_display=str(credentials.get("username", ""))[:150],
        )
    from .services.security import apply_login_failure_rule

    apply_login_failure_rule(username=str(credentials.get("username", "")), source=_source(request))


@receiver(user_locked_out)
def on_lockout(sender, request, username, ip_address, **kwargs):
    with transaction.atomic():
        record_event(
            "auth.lockout",
            actor=None,
            source=_source(request),
            outcome=Outcome.DENIED,
            error_code="locked_out",
            target_type="auth.user",
            target_display=str(username)[:150],
            details={"alert": True, "failures": settings.AXES_FAILURE_LIMIT},
        )
