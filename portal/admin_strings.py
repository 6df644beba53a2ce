"""Strings of Django's own admin templates that its Simplified Chinese catalogue leaves untranslated
(Django 5.2): listed here so that makemessages keeps them in locale/zh_Hans/LC_MESSAGES/django.po,
whose translations are merged over Django's (LOCALE_PATHS win). Without them a screen reader reads
the app list's column headings in English on the Chinese admin (issue 17). Not imported anywhere."""

from django.utils.translation import gettext_noop as _

DJANGO_ADMIN = [
    _("Model name"),
    _("Add link"),
    _("Change or view list link"),
    _("After you’ve created a user, you’ll be able to edit more user options."),
    _("Error:"),
    _("Forgotten your login credentials?"),
    _("In case you’ve forgotten, you are:"),
]
