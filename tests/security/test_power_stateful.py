"""Random walks through the powers: a principal performs a random changing call on a random kind
of target, and every success is kept (destructive ones included, unlike the closure, which keeps
only gains). After each step no principal may have used, or hold, a power outside its EXPECTED
closure (tests/security/test_power_closure.py, from docs/access-control.md).

Bounded so it runs in well under a minute on PostgreSQL: the world (encrypted model uploads,
deployments) is built once, and each example runs in a savepoint rolled back at teardown.
"""

from __future__ import annotations

import logging

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tests.security.powers import (
    CountingClient,
    Cred,
    Ctx,
    Inert,
    Principal,
    Stats,
    alive,
    build_world,
    classify,
    effective_powers,
    perform,
)
from tests.security.test_power_closure import EXPECTED

pytestmark = pytest.mark.django_db

# The accounts routes are where powers move between people; the others are object writes whose
# reach follows the role, which the closure test covers.
ACCOUNT_ROUTES = (
    "user-",
    "token-",
    "grant-",
    "group-grant-",
    "service-account-",
    "break-glass-",
    "admin:auth_user",
    "admin:accounts_apitoken",
)


def _fresh(principals: dict[str, Principal]) -> dict[str, Principal]:
    """New principals holding only the starting credentials (same sessions and tokens, new clients)."""
    out = {}
    for name, p in principals.items():
        creds = []
        for c in p.creds:
            client = CountingClient(**c.client.defaults)
            client.cookies = type(c.client.cookies)(c.client.cookies)
            creds.append(Cred(c.user_id, c.kind, client, c.origin, c.token_id, c.session_key))
        out[name] = Principal(name, creds=creds)
    return out


def test_random_walks_stay_inside_the_policy(onnx_bytes):
    world, start = build_world(onnx_bytes)
    table = {k: v for k, v in classify().items() if not isinstance(v, Inert) and k[0].startswith(ACCOUNT_ROUTES)}
    keys = sorted(table)

    class PowerWalk(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.savepoint = transaction.savepoint()
            self.principals = _fresh(start)
            self.stats = Stats()
            self.last: Principal | None = None

        @rule(name=st.sampled_from(sorted(EXPECTED)), key=st.sampled_from(keys), data=st.data())
        def act(self, name, key, data):
            p = self.principals[name]
            creds = [c for c in p.creds if alive(c)]
            if not creds:
                return
            cred = data.draw(st.sampled_from(creds), label="credential")
            attempts = list(table[key](Ctx(world, p, cred)))
            attempt = data.draw(st.sampled_from(attempts), label="attempt")
            if perform(p, cred, key, attempt, world, self.stats, keep_all=True) == "ok":
                pair = (attempt.power, attempt.kind)
                assert pair in EXPECTED[name], f"{name} used {pair} via {p.powers[pair]}"
            self.last = p

        @invariant()
        def no_power_beyond_the_closure(self):
            # Only the principal that just acted can have gained: the others' accounts are never
            # targets (the fixtures pat, pia, root and their service accounts are).
            if self.last is None:
                return
            beyond = set(effective_powers(self.last)) - EXPECTED[self.last.name]
            assert not beyond, f"{self.last.name} now has {sorted(beyond)}"

        def teardown(self):
            transaction.savepoint_rollback(self.savepoint)

    logging.disable(logging.WARNING)  # refusals are logged with tracebacks
    try:
        _run(PowerWalk)
    finally:
        logging.disable(logging.NOTSET)


def _run(machine) -> None:
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=5,
            stateful_step_count=8,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
