from django.core.management.base import BaseCommand

from apps.compliance.evaluation import run_evaluation
from apps.compliance.selectors import describe


class Command(BaseCommand):
    help = (
        "Evaluate every attached compliance profile now and print each control's status, with every "
        "check's status and what it found."
    )

    def handle(self, *args, **options):
        run = run_evaluation(trigger="command")
        for line in describe(run):
            self.stdout.write(line)
        self.stdout.write(f"pass {run.passed}, fail {run.failed}, manual {run.manual}, n/a {run.not_applicable}")
