"""django-axes handler with a true sliding window: an account (or address) is locked when it
has AXES_FAILURE_LIMIT failures within the last AXES_COOLOFF_TIME, as 等保 8.1.4.1 b and our
docs say. Axes' own count keeps growing while each failure follows the previous one within the
cool-off, so failures spread over hours could lock an account."""

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessFailureLog
from django.conf import settings
from django.db.models import Q
from django.utils import timezone


class SlidingWindowHandler(AxesDatabaseHandler):
    def get_failures(self, request, credentials=None) -> int:
        since = timezone.now() - settings.AXES_COOLOFF_TIME
        who = Q(username=get_client_username(request, credentials))
        ip = getattr(request, "axes_ip_address", None)
        logs = AccessFailureLog.objects.filter(attempt_time__gte=since)
        by_user = logs.filter(who).count()
        by_ip = logs.filter(ip_address=ip).count() if ip else 0
        # Axes asks for the count while handling a failure, before logging that failure.
        return max(by_user, by_ip) + (1 if getattr(request, "_sv_failing", False) else 0)

    def user_login_failed(self, sender, credentials, request=None, **kwargs):
        if request is not None:
            request._sv_failing = True
        try:
            return super().user_login_failed(sender, credentials, request, **kwargs)
        finally:
            if request is not None:
                request._sv_failing = False

    def user_logged_in(self, sender, request, user, **kwargs):
        super().user_logged_in(sender, request, user, **kwargs)
        # A success clears the window for that account, as AXES_RESET_ON_SUCCESS does for attempts.
        AccessFailureLog.objects.filter(username=user.get_username()).delete()
