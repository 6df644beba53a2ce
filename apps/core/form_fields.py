"""Form fields the admin pages share.

IsoDateTimeField (issue 17): a date and time typed as `YYYY-MM-DD HH:MM:SS` in a plain text box, the
format shown beside it and in the box, and a bad date refused with that format in the page's
language. `<input type=date|datetime-local>` drew the browser's own picker, which follows the
browser's locale, not the page's: a Chinese page showed "mm/dd/yyyy", an ambiguous order, and Django's
zh_Hans input format would have shown `2026/11/01 00:00`."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

ISO_DISPLAY = "%Y-%m-%d %H:%M:%S"
ISO_INPUTS = [
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",  # what a datetime-local box or an API client sends
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",  # a day alone: its midnight
]
ISO_HINT = "YYYY-MM-DD HH:MM:SS"


class IsoDateTimeField(forms.DateTimeField):
    """A date-time in ISO order, read in the person's time zone (Django's DateTimeField makes it aware)."""

    default_error_messages = {
        "invalid": _("Enter the date and time as YYYY-MM-DD HH:MM:SS, for example 2026-03-01 08:30:00."),
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("input_formats", ISO_INPUTS)
        kwargs.setdefault(
            "widget",
            forms.TextInput(attrs={"placeholder": ISO_HINT, "class": "sv-datetime", "size": 19, "spellcheck": "false"}),
        )
        kwargs["localize"] = False
        super().__init__(**kwargs)

    def to_python(self, value):
        """As DateTimeField, and refused as a bad date when the instant has no UTC time in the
        calendar: 9999-12-31 23:59:59 in a zone behind UTC is in year 10000, year 1 ahead of it in
        year 0, and saving or comparing it failed the page with a 500 (review 18)."""
        from datetime import UTC

        value = super().to_python(value)
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None
        return value

    def prepare_value(self, value):
        """An initial datetime shown in ISO order in the person's zone (not the locale's input format)."""
        from datetime import datetime

        from django.utils import timezone

        if isinstance(value, datetime):
            if timezone.is_aware(value):
                value = timezone.localtime(value)
            return value.strftime(ISO_DISPLAY)
        return value
