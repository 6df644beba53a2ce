"""Send a test alert through the configured channel and say whether it was acknowledged.

It takes the same path as every alert (an `alert.test` event, its outbox row, the delivery
service), so a 2xx here proves the channel for `alerts.delivery_proven`."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.audit.selectors import delivery_of
from apps.audit.services import deliver_alert, send_test_alert
from apps.core.errors import ServiceError


class Command(BaseCommand):
    help = "Send a test alert to the alert channel (SOVEREIGN_ALERT_WEBHOOK_URL) and report its delivery."

    def add_arguments(self, parser):
        parser.add_argument("--note", default="", help="A note carried in the alert")

    def handle(self, *args, **options):
        try:
            event = send_test_alert(actor=None, note=options["note"])
        except ServiceError as err:
            raise CommandError(f"{err.code}: {err.detail}") from err
        delivery = delivery_of(event)
        outcome = deliver_alert(delivery.pk)  # at once; "skipped" if a worker claimed it first
        deadline = time.monotonic() + settings.ALERT_TIMEOUT + 5
        while outcome == "skipped" and time.monotonic() < deadline:
            delivery.refresh_from_db()
            if delivery.status not in ("pending", "sending"):
                break
            time.sleep(0.2)
        delivery.refresh_from_db()
        line = (
            f"alert {delivery.pk} to {delivery.channel}: {delivery.status}"
            f" (HTTP {delivery.http_status or '-'}, attempt {delivery.attempts})"
        )
        if delivery.status == "delivered":
            self.stdout.write(f"{line}, acknowledged at {delivery.acknowledged_at:%Y-%m-%d %H:%M:%S} UTC")
            return
        retry = " — the worker retries it" if delivery.status == "retrying" else ""
        raise CommandError(f"{line}: {delivery.error}{retry}")
