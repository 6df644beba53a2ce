"""Telling the data plane's policy snapshot that a decision may have changed.

Every write that can change what the gateway decides — who a token belongs to and what it may do,
who a user is (active, superuser, service account, password age), their roles (role groups,
memberships, break-glass), their grants (by name and through groups), the models, their versions,
servers and deployments, and the de-identification policy (model policies, profile attachments) —
"bumps the policy epoch" in its own transaction:

- PostgreSQL: `SELECT pg_notify('sovereign_policy', txid_current()::text)`. PostgreSQL delivers it
  when (and only if) the transaction commits, so a listener never rebuilds before the change is
  visible, and folds identical notifications of one transaction into one. It takes no lock: a
  counter row incremented by every policy write would be held until each commit, queueing those
  writes behind one another and adding a lock that two transactions could take in opposite order
  (a deadlock where today there is none).
- SQLite (`make run`): increments the one row of gateway.PolicyEpoch, which holders poll. SQLite
  has one writer at a time anyway.

Who bumps:
- receivers of post_save / post_delete of every model below and m2m_changed of user ↔ group and
  token ↔ allowed model, connected by GatewayConfig.ready() (`connect()`); cascaded deletes send
  post_delete per row, so deleting a user, group or model bumps too;
- `apps.core.policy.policy_changed`, sent by a service that changes those facts with
  QuerySet.update() or bulk operations, which send no model signals (today: the dormant-account
  sweep's `is_active` update).

Saves that change only bookkeeping the gateway does not decide on (a user's `last_login`, a
token's last use) do not bump, or every portal login would rebuild every snapshot.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models.signals import m2m_changed, post_delete, post_save

from apps.accounts.models import ApiToken, EmergencyAccess, ModelGroupGrant, ModelUserGrant, Profile
from apps.compliance.models import ModelPolicy, ProfileAttachment
from apps.core.policy import policy_changed
from apps.deployments.models import Deployment, InferenceServer
from apps.registry.models import Model, ModelVersion

from ..models import PolicyEpoch

CHANNEL = "sovereign_policy"
_DISPATCH = "sovereign-policy-epoch"


def watched_models() -> tuple[type, ...]:
    """The models whose rows the policy snapshot reads (apps/gateway/dataplane/snapshot.py)."""
    return (
        get_user_model(),
        Group,
        Profile,
        ApiToken,
        EmergencyAccess,
        ModelUserGrant,
        ModelGroupGrant,
        Model,
        ModelVersion,
        InferenceServer,
        Deployment,
        ModelPolicy,
        ProfileAttachment,
    )


def _ignored_fields() -> dict[type, frozenset[str]]:
    """Per model, fields whose change alone decides nothing (a save with update_fields within these
    does not bump)."""
    return {
        get_user_model(): frozenset({"last_login", "password", "email", "first_name", "last_name", "is_staff"}),
        ApiToken: frozenset({"last_used_at", "last_used_ip", "name"}),
        Deployment: frozenset({"claimed_until", "last_error", "updated_at"}),
        InferenceServer: frozenset({"state", "last_seen_at"}),
        Profile: frozenset({"disabled_reason"}),
    }


def bump_policy_epoch(using: str = DEFAULT_DB_ALIAS) -> None:
    """Announce, in the current transaction of `using`, that the gateway's decisions may have
    changed (delivered at commit; nothing if the transaction rolls back)."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, txid_current()::text)", [CHANNEL])
        return
    if not _has_counter(connection):
        return  # while migrating, before the gateway's table exists: no data plane can be running
    table = connection.ops.quote_name(PolicyEpoch._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (id, epoch) VALUES (1, 1)"  # noqa: S608 - a table name from model metadata
            f" ON CONFLICT (id) DO UPDATE SET epoch = {table}.epoch + 1"
        )


def current_epoch(using: str = DEFAULT_DB_ALIAS) -> int:
    """The counter SQLite's holders poll (0 before the first bump)."""
    row = PolicyEpoch.objects.using(using).filter(pk=1).values_list("epoch", flat=True).first()
    return row or 0


_counter_seen: set[tuple[str, str]] = set()


def _has_counter(connection) -> bool:
    key = (connection.alias, str(connection.settings_dict.get("NAME")))
    if key in _counter_seen:
        return True
    if PolicyEpoch._meta.db_table in connection.introspection.table_names():
        _counter_seen.add(key)
        return True
    return False


def _on_save(sender, instance=None, using=DEFAULT_DB_ALIAS, update_fields=None, **kwargs) -> None:
    if update_fields:
        ignored = _IGNORED.get(sender)
        if ignored is not None and set(update_fields) <= ignored:
            return
    bump_policy_epoch(using or DEFAULT_DB_ALIAS)


def _on_delete(sender, instance=None, using=DEFAULT_DB_ALIAS, **kwargs) -> None:
    bump_policy_epoch(using or DEFAULT_DB_ALIAS)


def _on_m2m(sender, instance=None, action="", using=DEFAULT_DB_ALIAS, **kwargs) -> None:
    if action in ("post_add", "post_remove", "post_clear"):
        bump_policy_epoch(using or DEFAULT_DB_ALIAS)


def _on_policy_changed(sender=None, using=DEFAULT_DB_ALIAS, **kwargs) -> None:
    bump_policy_epoch(using or DEFAULT_DB_ALIAS)


_IGNORED: dict[type, frozenset[str]] = {}


def connect() -> None:
    """Connect the receivers (GatewayConfig.ready(); idempotent)."""
    _IGNORED.update(_ignored_fields())
    for model in watched_models():
        post_save.connect(_on_save, sender=model, dispatch_uid=f"{_DISPATCH}-save-{model._meta.label_lower}")
        post_delete.connect(_on_delete, sender=model, dispatch_uid=f"{_DISPATCH}-delete-{model._meta.label_lower}")
    for through in (get_user_model().groups.through, ApiToken.allowed_models.through):
        m2m_changed.connect(_on_m2m, sender=through, dispatch_uid=f"{_DISPATCH}-m2m-{through._meta.label_lower}")
    policy_changed.connect(_on_policy_changed, dispatch_uid=f"{_DISPATCH}-explicit")
