from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .offline_verify import CURRENT_ENCODING


class Outcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


class AuditEvent(models.Model):
    """One recorded action. Rows are only ever inserted (by apps.audit.services.record_event),
    in the same transaction as the action they describe.

    `sequence`, `prev_hash` and `hash` are left empty at insert: the hash chain is assigned later,
    in commit order, by a sealer (so concurrent writers never serialise on a global lock).
    """

    timestamp = models.DateTimeField(db_index=True)
    sequence = models.BigIntegerField(null=True, blank=True, unique=True)
    # No database constraint and DO_NOTHING: the user id is part of the sealed record and must
    # survive the user's deletion (SET_NULL would be an UPDATE, which the audit trigger refuses).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True, help_text=_("User name frozen at the time of the event"))
    actor_roles = models.JSONField(default=list, blank=True, help_text=_("The actor's roles at the time of the event"))
    token_id = models.BigIntegerField(null=True, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=64, blank=True)  # indexed in Meta: no LIKE index beside it
    event_type = models.CharField(max_length=64)
    event_group = models.CharField(max_length=32)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_display = models.CharField(max_length=200, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    error_code = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)
    # Which field list the hash covers (offline_verify.EVENT_ENCODINGS). Rows from before versions are 1.
    encoding_version = models.PositiveSmallIntegerField(
        default=CURRENT_ENCODING,
        db_default=CURRENT_ENCODING,
        help_text=_("Encoding version of the hashed record (docs/audit.md, 'Event encoding versions')"),
    )

    class Meta:
        ordering = ["-id"]
        permissions = [
            ("export_auditevent", "Can export audit events"),
            ("view_key_events", "Can read the key-management audit events"),
            ("export_key_events", "Can export the key-management audit events"),
        ]
        # The auditor's typical questions, each answered by a range scan in time order
        # (bench/audit_scale.py measured them at ten million rows; see bench/RESULTS.md).
        indexes = [
            models.Index(fields=["request_id"], name="audit_request_idx"),
            models.Index(fields=["actor_name", "timestamp"], name="audit_actor_time_idx"),
            models.Index(fields=["event_group", "timestamp"], name="audit_group_time_idx"),
            models.Index(fields=["event_type", "timestamp"], name="audit_type_time_idx"),
            models.Index(fields=["outcome", "timestamp"], name="audit_outcome_time_idx"),
            models.Index(fields=["target_type", "target_id", "timestamp"], name="audit_target_time_idx"),
            models.Index(fields=["source_ip", "timestamp"], name="audit_ip_time_idx"),
            # The sealer's queue: small, because rows leave it within a second or so.
            models.Index(fields=["id"], condition=models.Q(sequence__isnull=True), name="audit_unsealed_idx"),
        ]

    def __str__(self) -> str:
        """As the pages name it: the reader's local time with its zone, the outcome in words."""
        from django.utils.formats import date_format

        when = date_format(timezone.localtime(self.timestamp), "DATETIME_FORMAT")
        return f"{when} {self.actor_name or '-'} {self.event_type} {self.get_outcome_display()}"

    def audit_display(self) -> str:
        """How the audit log itself names an event (as it always did: UTC, the outcome's code)."""
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} {self.event_type} {self.outcome}"


class AuditCheckpoint(models.Model):
    """A signed statement "the chain up to `sequence` has head `head`", written by the sealer at a
    fixed interval. Each checkpoint references the previous one (`prev` is the digest of its signed
    payload), in the manner of CloudTrail digest files, so a removed or forged checkpoint shows.

    The signed payload and the signature format are defined in apps/audit/offline_verify.py.
    """

    sequence = models.BigIntegerField(unique=True, help_text=_("Last event sequence this checkpoint covers"))
    head = models.CharField(max_length=64, help_text=_("Hash of the event at `sequence`"))
    hash_alg = models.CharField(max_length=16)
    created_at = models.DateTimeField()
    prev = models.CharField(max_length=64, blank=True, help_text=_("Digest of the previous checkpoint's payload"))
    key_id = models.CharField(max_length=64)
    sig_alg = models.CharField(max_length=32)
    signature = models.TextField(help_text=_("Base64 DER ECDSA signature over the canonical payload"))

    class Meta:
        ordering = ["-sequence"]

    def __str__(self) -> str:
        return f"checkpoint {self.sequence} ({self.created_at:%Y-%m-%d %H:%M:%S})"


class AlertDelivery(models.Model):
    """One alert sent to the alert channel (docs/alerts.md): written by record_event in the same
    transaction as the alerting audit event (an outbox: a committed alert is never lost, even with
    the broker down), then delivered by apps.audit.tasks.deliver_alert_task with retries. Records
    each attempt's time and HTTP status, and when a 2xx acknowledged it. `channel` names the
    channel it was sent to (host and a fingerprint of the URL, never the URL: it may hold a token)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        RETRYING = "retrying"
        DELIVERED = "delivered"
        FAILED = "failed"

    created_at = models.DateTimeField(db_index=True)
    # The alerting event (no database constraint: events are append-only and never deleted while
    # their delivery matters; retention purges both).
    event = models.ForeignKey(
        AuditEvent, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    event_type = models.CharField(max_length=64)
    channel = models.CharField(max_length=200, blank=True, help_text=_("Host and URL fingerprint of the channel"))
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True, help_text=_("When the last attempt was made"))
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True, help_text=_("When the channel answered 2xx"))
    error = models.CharField(max_length=300, blank=True)
    payload = models.JSONField(default=dict)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["channel", "sent_at"], name="alert_channel_sent_idx"),
            models.Index(fields=["event_type", "created_at"], name="alert_type_created_idx"),
        ]

    def __str__(self) -> str:
        return f"alert {self.pk} {self.event_type} {self.status}"


class AuditShipment(models.Model):
    """One batch of sealed audit events sent to the external collector (docs/alerts.md, "Central
    collection", 等保 8.1.5.4): the sequence range, when it was sent, the HTTP status and when the
    collector acknowledged it (2xx). The highest acknowledged `last_sequence` for the current
    collector is how far the collector holds the log; the next batch starts after it."""

    collector = models.CharField(max_length=200, help_text=_("Host and URL fingerprint of the collector"))
    first_sequence = models.BigIntegerField()
    last_sequence = models.BigIntegerField()
    events = models.PositiveIntegerField()
    sent_at = models.DateTimeField(db_index=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["collector", "last_sequence"], name="audit_ship_collector_seq_idx")]

    def __str__(self) -> str:
        return f"shipment {self.first_sequence}-{self.last_sequence} to {self.collector}"


class AuditPurgeFloor(models.Model):
    """The age below which the database refuses to purge audit events, in days: one row, read by
    the SECURITY DEFINER purge function on PostgreSQL (migration 0010) and by the Python purge on
    SQLite. It rises to the longest retention of any attached compliance profile (apps.audit.services
    .raise_purge_floor, audited); a trigger refuses lowering it or deleting it except by the owner
    of the table (an operator, not the application role)."""

    days = models.PositiveIntegerField(help_text=_("Events younger than this many days are never purged"))
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"audit purge floor: {self.days} days"
