"""The first security officer comes from the host, not from the web: `manage.py bootstrap_officer`
creates the account with the security_officer role, a password (generated and printed once, or
read from a file) and a one-time enrolment code for its TOTP. Audited with the system as actor and
the host and OS user in the event."""

import secrets
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.services import bootstrap_officer
from apps.core.errors import ServiceError


class Command(BaseCommand):
    help = "Create a security officer on the host (the first one, or another with --additional)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="", help="the officer's e-mail address")
        parser.add_argument(
            "--password-file", help="read the password from this file (default: generate one and print it once)"
        )
        parser.add_argument(
            "--additional", action="store_true", help="create it even though an active security officer exists"
        )

    def handle(self, *args, username, email, password_file, additional, **options):
        generated = password_file is None
        if generated:
            password = secrets.token_urlsafe(18)
        else:
            try:
                password = Path(password_file).read_text().strip()
            except OSError as err:
                raise CommandError(f"cannot read the password file: {err.strerror}") from err
        try:
            user, code = bootstrap_officer(username=username, email=email, password=password, additional=additional)
        except ServiceError as err:
            raise CommandError(f"{err.code}: {err.detail}") from err
        self.stdout.write(f"Security officer {user.get_username()} created.")
        if generated:
            self.stdout.write(f"  password:        {password}   (shown once; they change it at /accounts/password/)")
        self.stdout.write(
            f"  enrolment code:  {code}   (single use, expires in a day: they enter it at their first login "
            "to enrol their authenticator)"
        )
