"""Default accounts and passwords as `make run` really leaves them (等保 8.1.4.2, HIPAA
164.312(a)(2)(ii)): named demo accounts per role with random passwords and a demo token, never a
superuser. In production those demo accounts and that token fail the control; a default password
fails anywhere; the superuser is a sealed break-glass account that is open once used.

Personas: the accounts of bootstrap_demo (demo-officer, demo-admin, demo-auditor, demo-analyst,
svc-demo) and root, the superuser created on the host."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import ApiToken
from apps.accounts.services import issue_token, revoke_token, set_user_active
from apps.demo.management.commands.bootstrap_demo import demo_caller, ensure_demo_accounts, issue_demo_token
from tests.compliance.conftest import check_of, evaluate
from tests.conftest import otp_login
from tests.factories import PASSWORD, ModelVersionFactory

pytestmark = pytest.mark.django_db

CONTROL = ("dengbao-l3", "8.1.4.2 a-f")
DEMO = ["demo-admin", "demo-analyst", "demo-auditor", "demo-officer", "svc-demo"]


def default_credentials() -> dict:
    return check_of(evaluate(*CONTROL)[1], "accounts.no_default_credentials")


def sealed(profile: str = "dengbao-l3", control: str = "8.1.4.2 a-f") -> dict:
    return check_of(evaluate(profile, control)[1], "accounts.superuser_sealed")


@pytest.fixture
def demo_installation():
    """What `make run` creates: the accounts, the service account granted the model, its token."""
    logins = ensure_demo_accounts()
    model = ModelVersionFactory(model_name="triage-demo").model
    account = demo_caller(model, admin=logins["demo-admin"].user, officer=logins["demo-officer"].user)
    issue_demo_token(account, model)
    return logins


class TestDemoAccounts:
    def test_listed_but_not_failed_in_development(self, settings, demo_installation):
        settings.PRODUCTION = False

        check = default_credentials()

        assert check["status"] == "pass"
        assert (check["demo_accounts_active"], check["demo_tokens_live"]) == (DEMO, 1)
        assert "5 demo account(s) of `make run`: expected in development" in check["summary"]
        assert check["default_credentials"] == []  # make run's passwords are random

    def test_failed_in_production_until_disabled(self, settings, demo_installation):
        settings.PRODUCTION = True

        status, evidence, remedy = evaluate(*CONTROL)

        check = check_of(evidence, "accounts.no_default_credentials")
        assert (status, check["status"]) == ("fail", "fail")
        assert "5 demo account(s) and 1 demo token(s) of `make run` in production" in check["summary"]
        assert "disable the demo accounts" in remedy

        for name in DEMO:
            set_user_active(user_id=get_user_model().objects.get(username=name).pk, active=False, actor=None)

        check = default_credentials()
        assert check["status"] == "pass"
        assert (check["demo_accounts_active"], check["demo_tokens_live"]) == ([], 0)

    def test_a_demo_token_alone_still_fails_in_production(self, settings, demo_installation):
        settings.PRODUCTION = True
        get_user_model().objects.filter(username__startswith="demo-").update(is_active=False)

        check = default_credentials()

        assert (check["status"], check["demo_accounts_active"], check["demo_tokens_live"]) == ("fail", ["svc-demo"], 1)

    def test_a_default_password_on_a_demo_account_fails_anywhere(self, settings, demo_installation):
        settings.PRODUCTION = False
        analyst = demo_installation["demo-analyst"].user
        analyst.set_password("changeme")
        analyst.save()

        check = default_credentials()

        assert (check["status"], check["default_credentials"]) == ("fail", ["demo-analyst"])


class TestSuperuserSealed:
    @pytest.fixture
    def root(self, db):
        return get_user_model().objects.create_superuser("root", "root@example.org", PASSWORD)

    def test_no_superuser_passes(self):
        check = sealed()

        assert (check["status"], check["active_superusers"]) == ("pass", [])

    def test_a_superuser_never_used_is_sealed(self, root):
        check = sealed()

        assert (check["status"], check["active_superusers"], check["open"]) == ("pass", ["root"], [])

    def test_a_login_opens_it_until_resealed_on_the_host(self, root):
        otp_login(Client(), root)

        check = sealed("hipaa", "164.312(a)(2)(ii)")
        assert check["status"] == "fail"
        assert [(r["user"], r["last_used"] is not None) for r in check["open"]] == [("root", True)]
        assert check["superuser_use_events_30_days"] >= 1  # its login alerted

        with time_machine.travel(timezone.now() + timedelta(minutes=5)):  # the host: manage.py changepassword
            root.set_password("a-new-sealed-passphrase-77")
            root.save()
            assert sealed()["status"] == "pass"

    def test_changing_its_own_password_keeps_it_open(self, root):
        client = Client()
        otp_login(client, root)
        with time_machine.travel(timezone.now() + timedelta(minutes=5)):
            new = "a-new-passphrase-of-the-user-55"
            form = {"old_password": PASSWORD, "new_password1": new, "new_password2": new}
            assert client.post(reverse("admin:password_change"), form).status_code == 302

            check = sealed()

        assert check["status"] == "fail"
        assert check["open"][0]["changed_own_password"] is True

    def test_a_live_token_opens_it_and_revoking_an_unused_one_closes_it(self, root):
        token, _ = issue_token(user=root, name="emergency", actor=None)

        check = sealed()
        assert (check["status"], check["live_superuser_tokens"], check["open"][0]["live_tokens"]) == ("fail", 1, 1)

        revoke_token(token_id=token.pk, actor=None)
        assert sealed()["status"] == "pass"

    def test_a_used_token_keeps_it_open_after_revocation(self, root):
        token, _ = issue_token(user=root, name="emergency", actor=None)
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() + timedelta(minutes=1))
        revoke_token(token_id=token.pk, actor=None)

        check = sealed()

        assert check["status"] == "fail" and check["open"][0]["live_tokens"] == 0
