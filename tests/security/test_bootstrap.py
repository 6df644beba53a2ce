"""The first security officer comes from an audited host command, and `make run` creates named
accounts per role through the services instead of using the superuser, with one demo token per
run (issue 10, items 1, 3 and 9)."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.models import ApiToken, EnrolmentCode
from apps.accounts.roles import ADMIN, ANALYST, AUDITOR, SECURITY_OFFICER
from apps.accounts.services import find_enrolment_code, roles_of
from apps.audit.models import AuditEvent
from tests.conftest import make_user
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def printed(output: str, label: str) -> str:
    line = next(line for line in output.splitlines() if line.strip().startswith(label))
    return line.split(":", 1)[1].split()[0]


class TestBootstrapOfficer:
    def test_creates_the_officer_with_a_password_and_an_enrolment_code_audited_as_the_host(self):
        output = run("bootstrap_officer", "sofia", "--email", "sofia@hospital.example")

        user = get_user_model().objects.get(username="sofia")
        assert roles_of(user) == {SECURITY_OFFICER}
        assert user.is_staff and not user.is_superuser
        assert user.check_password(printed(output, "password"))
        assert find_enrolment_code(user, printed(output, "enrolment code")) is not None
        boot = AuditEvent.objects.get(event_type="auth.officer.bootstrap")
        assert (boot.actor, boot.actor_name, boot.source_ip, boot.details["alert"]) == (None, "", None, True)
        assert boot.details["host"] and "os_user" in boot.details
        for event_type in ("auth.account.create", "auth.role.assign", "auth.enrolment.issue"):
            assert AuditEvent.objects.get(event_type=event_type).actor is None, event_type
        assert printed(output, "password") not in str(list(AuditEvent.objects.values_list("details", flat=True)))

    def test_refuses_a_second_officer_unless_additional(self, officer_user):
        with pytest.raises(CommandError, match="officer_exists"):
            run("bootstrap_officer", "olga")
        assert not get_user_model().objects.filter(username="olga").exists()

        run("bootstrap_officer", "olga", "--additional")

        assert roles_of(get_user_model().objects.get(username="olga")) == {SECURITY_OFFICER}

    def test_password_file(self, tmp_path):
        secret = tmp_path / "pw"
        secret.write_text("a-long-pass-phrase-from-a-file\n")

        output = run("bootstrap_officer", "sofia", "--password-file", str(secret))

        assert get_user_model().objects.get(username="sofia").check_password("a-long-pass-phrase-from-a-file")
        assert "a-long-pass-phrase-from-a-file" not in output

    def test_weak_password_file_is_refused(self, tmp_path):
        secret = tmp_path / "pw"
        secret.write_text("short")

        with pytest.raises(CommandError, match="weak_password"):
            run("bootstrap_officer", "sofia", "--password-file", str(secret))
        assert not get_user_model().objects.filter(username="sofia").exists()


class TestHostEnrolmentCode:
    def test_superuser_gets_a_code_and_loses_its_devices(self, admin_user):
        TOTPDevice.objects.create(user=admin_user, confirmed=True, name="old")

        code = run("enrolment_code", "root").strip()

        assert find_enrolment_code(admin_user, code) is not None
        assert not TOTPDevice.objects.filter(user=admin_user).exists()
        assert AuditEvent.objects.get(event_type="auth.enrolment.issue").actor is None

    def test_not_for_an_analyst(self, plain_user):
        with pytest.raises(CommandError, match="not_privileged"):
            run("enrolment_code", "alice")


class TestDemoAccounts:
    def test_named_accounts_per_role_through_the_services_and_no_superuser(self):
        from apps.demo.management.commands.bootstrap_demo import ensure_demo_accounts

        logins = ensure_demo_accounts()

        User = get_user_model()
        assert not User.objects.filter(is_superuser=True).exists()
        assert {name: roles_of(login.user) for name, login in logins.items()} == {
            "demo-officer": {SECURITY_OFFICER},
            "demo-admin": {ADMIN},
            "demo-auditor": {AUDITOR},
            "demo-analyst": {ANALYST},
        }
        for name, login in logins.items():
            assert User.objects.get(username=name).check_password(login.password)
            privileged = login.role != ANALYST
            assert (login.enrolment_code is not None) == privileged, name
            if privileged:
                assert find_enrolment_code(login.user, login.enrolment_code) is not None
        assigns = AuditEvent.objects.filter(event_type="auth.role.assign", details__role__in=[ADMIN, AUDITOR])
        assert {e.actor.username for e in assigns} == {"demo-officer"}
        assert AuditEvent.objects.filter(event_type="auth.officer.bootstrap").count() == 1

    def test_second_run_keeps_the_accounts_and_prints_a_live_code_until_enrolled(self):
        from apps.demo.management.commands.bootstrap_demo import ensure_demo_accounts

        first = ensure_demo_accounts()
        TOTPDevice.objects.create(user=first["demo-admin"].user, confirmed=True, name="phone")

        second = ensure_demo_accounts()

        assert get_user_model().objects.filter(username__startswith="demo-").count() == 4
        assert all(login.password is None for login in second.values())
        assert second["demo-admin"].enrolment_code is None  # enrolled: nothing to print
        assert find_enrolment_code(second["demo-auditor"].user, second["demo-auditor"].enrolment_code)
        assert EnrolmentCode.objects.filter(user=second["demo-auditor"].user, voided_at__isnull=False).count() == 1

    def test_one_demo_token_per_run_issued_by_the_host(self):
        from apps.demo.management.commands.bootstrap_demo import demo_caller, ensure_demo_accounts, issue_demo_token

        logins = ensure_demo_accounts()
        admin, officer = logins["demo-admin"].user, logins["demo-officer"].user
        model = ModelVersionFactory(model_name="triage-demo").model
        account = demo_caller(model, admin=admin, officer=officer)

        issue_demo_token(account, model)
        issue_demo_token(account, model)
        issue_demo_token(demo_caller(model, admin=admin, officer=officer), model)

        tokens = ApiToken.objects.filter(user=account)
        assert tokens.count() == 3
        assert tokens.filter(revoked_at__isnull=True).count() == 1
        # The launcher runs on the host; the owner (privileged) has no fresh second factor there,
        # so the tokens policy has the host issue it (merge of roles and tokens).
        assert {t.created_by for t in tokens} == {None}
        issued = AuditEvent.objects.filter(event_type="auth.token.create", target_id__in=[str(t.pk) for t in tokens])
        assert {(e.actor, e.details.get("via")) for e in issued} == {(None, "host")}
        assert account.profile.owner == admin
        grant = AuditEvent.objects.filter(event_type="access.grant.create").last()
        assert grant.actor == officer

    def test_an_existing_officer_does_not_stop_the_demo(self):
        from apps.demo.management.commands.bootstrap_demo import ensure_demo_accounts

        make_user("sofia", SECURITY_OFFICER)

        assert roles_of(ensure_demo_accounts()["demo-officer"].user) == {SECURITY_OFFICER}
