from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from apps.audit.dbguard import role_setup_sql


class Command(BaseCommand):
    help = (
        "Print the SQL that separates the owner role (migrations, owns the tables and the audit guard) "
        "from the application role (DATABASE_URL of the portal), so that the application cannot get "
        "around the append-only audit trigger. Run it with psql as a superuser after `migrate`."
    )

    def add_arguments(self, parser):
        parser.add_argument("--print-sql", action="store_true", help="print the SQL (nothing is executed)")
        parser.add_argument("--owner", default="sovereign_owner", help="owner role (default sovereign_owner)")
        parser.add_argument("--app", default="sovereign_app", help="application role (default sovereign_app)")

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            raise CommandError("only PostgreSQL enforces append-only audit rows; set DATABASE_URL to PostgreSQL")
        if not options["print_sql"]:
            raise CommandError("this command only prints SQL for the operator to review and run: use --print-sql")
        for name in (options["owner"], options["app"]):
            if not name.replace("_", "").isalnum() or not name[0].isalpha():
                raise CommandError(f"role name {name!r}: letters, digits and underscores only")
        tables = sorted(connection.introspection.table_names(include_views=False))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.relname FROM pg_class c WHERE c.relkind = 'S' "
                "AND c.relnamespace = 'public'::regnamespace ORDER BY 1"
            )
            sequences = [r[0] for r in cursor.fetchall()]
        self.stdout.write(role_setup_sql(options["owner"], options["app"], tables, sequences), ending="")
