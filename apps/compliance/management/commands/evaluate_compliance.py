from django.core.management.base import BaseCommand

from apps.compliance.evaluation import run_evaluation


class Command(BaseCommand):
    help = "Evaluate every attached compliance profile now and print each control's status."

    def handle(self, *args, **options):
        run = run_evaluation(trigger="command")
        for result in run.results.order_by("profile", "id"):
            self.stdout.write(f"{result.profile:12} {result.control_id:28} {result.status}")
        self.stdout.write(f"pass {run.passed}, fail {run.failed}, manual {run.manual}, n/a {run.not_applicable}")
