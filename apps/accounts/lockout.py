"""django-axes handler: lockout by (user name, client address) in a true sliding window, plus a
slower global throttle per user name.

- An account is locked *for one address* when that address has AXES_FAILURE_LIMIT failures for it
  within AXES_COOLOFF_TIME (等保 8.1.4.1 b). Locking by user name alone let anyone lock the
  security officer out by typing wrong passwords; locking by address alone locked everyone behind
  one proxy. Guessing from many addresses at once is bounded by the per-address failure rate
  limit (apps/core/throttling.py) and by:
- the global throttle: when a user name has LOCKOUT_GLOBAL_FAILURES password failures within
  LOCKOUT_GLOBAL_WINDOW across all addresses, it is refused from every address *except the ones it
  logged in from successfully within LOCKOUT_KNOWN_ADDRESS_AGE*, so a password spray stays bounded
  (≈ 50 guesses an hour per account) while the officer's own workstation still gets in.

Attempts refused by a lock are never checked against the password, so they are not failures
(AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT is off): hammering a lock does not extend it, and
does not spend the global budget. Axes' own count keeps growing while each failure follows the
previous one within the cool-off, so it is not used; AccessFailureLog rows are counted instead.
"""

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessFailureLog, AccessLog
from django.conf import settings
from django.utils import timezone


class SlidingWindowHandler(AxesDatabaseHandler):
    def get_failures(self, request, credentials=None) -> int:
        username = get_client_username(request, credentials)
        ip = getattr(request, "axes_ip_address", None)
        now = timezone.now()
        # Axes asks for the count while handling a failure, before logging that failure.
        failing = 1 if getattr(request, "_sv_failing", False) else 0
        logs = AccessFailureLog.objects.filter(username=username)
        here = logs.filter(ip_address=ip, attempt_time__gte=now - settings.AXES_COOLOFF_TIME).count() + failing
        if here >= settings.AXES_FAILURE_LIMIT or username is None:
            return here
        everywhere = logs.filter(attempt_time__gte=now - settings.LOCKOUT_GLOBAL_WINDOW).count() + failing
        if everywhere >= settings.LOCKOUT_GLOBAL_FAILURES and not self._known_address(username, ip, now):
            request.sv_global_throttle = True
            return max(here, settings.AXES_FAILURE_LIMIT)
        return here

    @staticmethod
    def _known_address(username: str, ip: str | None, now) -> bool:
        since = now - settings.LOCKOUT_KNOWN_ADDRESS_AGE
        return AccessLog.objects.filter(username=username, ip_address=ip, attempt_time__gte=since).exists()

    def user_login_failed(self, sender, credentials, request=None, **kwargs):
        if request is not None:
            request._sv_failing = True
            request.sv_auth_failed = True  # charged to the address by the rate limiter
        try:
            return super().user_login_failed(sender, credentials, request, **kwargs)
        finally:
            if request is not None:
                request._sv_failing = False

    def user_logged_in(self, sender, request, user, **kwargs):
        super().user_logged_in(sender, request, user, **kwargs)
        # A success clears this address's window for the account, as AXES_RESET_ON_SUCCESS does
        # for attempts; failures from elsewhere (and the global count) stand.
        ip = getattr(request, "axes_ip_address", None)
        AccessFailureLog.objects.filter(username=user.get_username(), ip_address=ip).delete()
