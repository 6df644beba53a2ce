"""A fresh one-time TOTP enrolment code for a privileged account, from the host: for the
superuser (which no officer assigns) and for a privileged person who lost their authenticator.
Their TOTP devices are voided. Audited with the system as actor."""

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.services import get_user_by_name, reissue_enrolment_code
from apps.core.errors import ServiceError


class Command(BaseCommand):
    help = "Void a privileged account's TOTP devices and print a one-time enrolment code (host only)."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        try:
            code = reissue_enrolment_code(user_id=get_user_by_name(username).pk)
        except ServiceError as err:
            raise CommandError(f"{err.code}: {err.detail}") from err
        self.stdout.write(code)
