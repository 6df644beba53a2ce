"""record_event: the one writer of the audit log."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import transaction

from apps.audit.models import AuditEvent, Outcome
from apps.audit.services import Source, record_event
from tests.factories import InferenceServerFactory

pytestmark = pytest.mark.django_db


def test_unknown_event_type_is_refused(plain_user):
    with pytest.raises(ValueError, match="catalogue"):
        record_event("registry.model.craete", actor=plain_user)

    assert not AuditEvent.objects.exclude(event_type="audit.field_change").exists()  # (the user's profile has one)


def test_target_and_source_are_recorded(plain_user):
    server = InferenceServerFactory(name="edge-1")

    event = record_event(
        "deployment.server.create",
        actor=plain_user,
        source=Source(ip="203.0.113.9", user_agent="curl/8", token_id=42),
        target=server,
        details={"after": {"name": "edge-1"}},
    )

    event.refresh_from_db()
    assert (event.target_type, event.target_id, event.target_display) == (
        "deployments.inferenceserver",
        str(server.pk),
        "edge-1",
    )
    assert (event.source_ip, event.user_agent, event.token_id) == ("203.0.113.9", "curl/8", 42)
    assert (event.event_group, event.outcome, event.error_code) == ("deployment", Outcome.SUCCESS, "")
    assert event.details == {"after": {"name": "edge-1"}}
    assert event.timestamp is not None
    assert (event.sequence, event.hash) == (None, "")


def test_actor_name_is_frozen(plain_user):
    event = record_event("auth.token.create", actor=plain_user)
    plain_user.username = "renamed"
    plain_user.save()

    event.refresh_from_db()
    assert (event.actor, event.actor_name) == (plain_user, "alice")


@pytest.mark.parametrize("actor", [None, AnonymousUser()], ids=["none", "anonymous"])
def test_anonymous_actor(actor):
    event = record_event("auth.token.denied", actor=actor, outcome=Outcome.DENIED, error_code="invalid_token")

    assert (event.actor, event.actor_name, event.outcome) == (None, "", "denied")


def test_event_rolls_back_with_its_action(plain_user):
    with pytest.raises(RuntimeError), transaction.atomic():
        record_event("auth.token.create", actor=plain_user)
        raise RuntimeError("the action failed")

    assert not AuditEvent.objects.exclude(event_type="audit.field_change").exists()  # (the user's profile has one)


def test_actor_roles_come_from_the_registered_provider(plain_user, monkeypatch):
    """Audit imports no other app: the roles frozen into an event come from the provider that
    apps.accounts registers in its AppConfig.ready()."""
    from apps.accounts.services.roles import roles_for_audit
    from apps.audit import services

    assert services._actor_roles_provider is roles_for_audit  # registered at start-up
    monkeypatch.setattr(services, "_actor_roles_provider", lambda actor: ["analyst", "guest"])

    event = record_event("auth.token.create", actor=plain_user)

    event.refresh_from_db()
    assert event.actor_roles == ["analyst", "guest"]


def test_roles_already_known_to_the_caller_cost_no_query(plain_user, django_assert_num_queries):
    """The gateway's token lookup sets `user.audit_roles`: the event then takes one INSERT only."""
    plain_user.audit_roles = ["analyst"]

    with django_assert_num_queries(1):
        event = record_event("auth.token.create", actor=plain_user)

    assert event.actor_roles == ["analyst"]


def test_no_roles_provider_fails_closed(plain_user, monkeypatch):
    """Without a provider an authenticated actor's event would have no roles: refused, nothing written."""
    from django.core.exceptions import ImproperlyConfigured

    from apps.audit import services

    monkeypatch.setattr(services, "_actor_roles_provider", None)
    before = AuditEvent.objects.count()

    with pytest.raises(ImproperlyConfigured, match="actor-roles provider"):
        record_event("auth.token.create", actor=plain_user)

    assert AuditEvent.objects.count() == before
    assert record_event("auth.token.denied", actor=None, outcome=Outcome.DENIED).actor_roles == []  # no actor: fine
