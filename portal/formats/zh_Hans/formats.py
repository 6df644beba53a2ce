"""Dates and times as operators read them in logs (issue 17): ISO order, seconds, and the zone they are
shown in (the user's time zone, apps.accounts.middleware.UserPreferencesMiddleware), e.g.
`2026-11-30 21:03:07 CST`. Django's format characters: Y-m-d year-month-day, H:i:s, T the zone's name."""

DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i:s T"
TIME_FORMAT = "H:i:s"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
