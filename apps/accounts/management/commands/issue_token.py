from django.core.management.base import BaseCommand, CommandError

from apps.accounts.services import get_user_by_name, issue_token
from apps.core.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Issue an API token for a user or service account and print it once (it is stored hashed and "
        "cannot be shown again). A host-side tool: whoever runs it already holds the database "
        "credentials, so it may issue for any active account; the audit event has no actor and says "
        "`via: host`. A privileged account's token still lives at most SOVEREIGN_SESSION_MAX_AGE and "
        "dies after SOVEREIGN_SESSION_IDLE_MINUTES unused."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="user name")
        parser.add_argument("--name", default="cli", help="a label for the token")
        parser.add_argument("--days", type=int, default=None, help="days until expiry (default from settings)")
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            choices=["invoke", "read", "manage"],
            help="repeat for several (default: invoke and read)",
        )

    def handle(self, *args, user, name, days, scopes, **options):
        try:
            owner = get_user_by_name(user)
            _, plaintext = issue_token(user=owner, name=name, days=days, scopes=scopes, actor=None)
        except ServiceError as err:
            raise CommandError(f"{err.code}: {err.detail}") from err
        self.stdout.write(plaintext)
