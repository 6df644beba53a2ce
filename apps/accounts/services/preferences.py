"""A person's own interface settings: the language and the time zone the portal shows them
(issue 17; docs/i18n.md)."""

from __future__ import annotations

import zoneinfo
from functools import cache

from django.conf import settings
from django.db import transaction

from apps.audit.services import SYSTEM, Source, record_event
from apps.core.errors import ServiceError, _

from ..models import Profile


@cache
def time_zones() -> frozenset[str]:
    """The IANA zones this machine knows (the system tzdata, or the tzdata package)."""
    return frozenset(zoneinfo.available_timezones())


def set_preferences(*, user, language: str, time_zone: str, source: Source = SYSTEM) -> Profile:
    """Set `user`'s own interface language (a code of settings.LANGUAGES, or "" for the browser's)
    and time zone (an IANA name, or "" for settings.TIME_ZONE). Each person sets only their own:
    the acting user is the target. The change and its event `auth.preferences.change` (before and
    after; written even when they are equal, as for every request that asked for a change) commit
    together; an unknown language or zone is refused (`invalid_language`,
    `invalid_time_zone`) and nothing is saved. Returns the profile."""
    if language not in {"", *(code for code, _name in settings.LANGUAGES)}:
        raise ServiceError(
            "invalid_language",
            _("%(language)s is not one of the portal's languages") % {"language": repr(language)},
            field="language",
        )
    if time_zone and time_zone not in time_zones():
        raise ServiceError(
            "invalid_time_zone",
            _("%(time_zone)s is not an IANA time zone") % {"time_zone": repr(time_zone)},
            field="time_zone",
        )
    with transaction.atomic():
        profile, _created = Profile.objects.select_for_update().get_or_create(user=user)
        before = {"language": profile.language, "time_zone": profile.time_zone}
        after = {"language": language, "time_zone": time_zone}
        profile.language, profile.time_zone = language, time_zone
        profile.save(update_fields=["language", "time_zone"])
        record_event(
            "auth.preferences.change",
            actor=user,
            source=source,
            target=user,
            details={"before": before, "after": after},
        )
    return profile
