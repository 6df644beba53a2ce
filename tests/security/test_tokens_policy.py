"""Issue 10, "Tokens": each attack of the issue, tried with the attacker's own credentials.

- a security officer issues a token for the superuser / any user (the victim's name on its events);
- a token mints tokens (and revoking the parent left the children alive);
- a privileged person issues a token without a fresh second factor;
- tokens bypass idle timeout, session lifetime and password age (gateway and API);
- a disabled account's tokens keep working;
- a model-restricted token reaches other models through the DRF API;
- events made with a token do not say who issued it.

Personas: sofia (security officer), root (the superuser), ops (admin role), audrey (auditor),
alice (analyst) who owns svc-etl, mallory (analyst) who owns svc-other. Tokens are issued from
portal sessions (tests.conftest.session_client), as a person would.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from apps.accounts import tasks
from apps.accounts.models import ApiToken, Profile, digest_token
from apps.accounts.otp import OTP_AT
from apps.accounts.roles import ANALYST, AUDITOR
from apps.accounts.services import (
    TokenRejected,
    authenticate_bearer,
    create_service_account,
    issue_token,
    set_user_active,
)
from apps.audit.models import AuditEvent
from apps.audit.services import Source
from apps.core.errors import ServiceError
from apps.registry.models import Model
from tests.conftest import grant, make_user, otp_login, session_client
from tests.factories import DeploymentFactory, InferenceServerFactory, ModelVersionFactory, token_for
from tests.gateway.dataplane_client import DataPlaneClient

pytestmark = pytest.mark.django_db

TOKENS = "/api/v1/accounts/tokens/"
ME = "/api/v1/accounts/me/"
MODELS = "/api/v1/registry/models/"
DEPLOYMENTS = "/api/v1/deployments/deployments/"


def bearer(token: str) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")


def gateway(token: str, model: str = "triage"):
    """The real gateway (the data plane), as tritonclient calls it."""
    client = DataPlaneClient(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post(f"/v2/models/{model}/infer", data="{}", content_type="application/json")


def code_of(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):0{device.digits}d}"


def stale(client: APIClient, settings) -> None:
    """The session passed its second factor just over SOVEREIGN_TOKEN_OTP_FRESH_MINUTES ago."""
    session = client.session
    session[OTP_AT] = (timezone.now() - settings.TOKEN_OTP_FRESH - timedelta(seconds=1)).timestamp()
    session.save()


@pytest.fixture
def alice(plain_user):
    return plain_user


@pytest.fixture
def mallory(db):
    return make_user("mallory", ANALYST)


@pytest.fixture
def svc_etl(alice):
    return create_service_account(name="svc-etl", owner_id=alice.pk, actor=None)


@pytest.fixture
def svc_other(mallory):
    return create_service_account(name="svc-other", owner_id=mallory.pk, actor=None)


class TestNobodyIssuesForOthers:
    @pytest.mark.parametrize("victim", ["admin_user", "plain_user", "auditor_user", "staff_user", "svc_other"])
    def test_security_officer_cannot_issue_for_anyone_else(self, request, officer_user, victim):
        target = request.getfixturevalue(victim)
        officer = session_client(officer_user)  # second factor passed just now

        resp = officer.post(TOKENS, {"name": "takeover", "user": target.pk, "scopes": ["manage"]}, format="json")

        assert (resp.status_code, resp.json()["code"]) == (404, "user_not_found")
        assert not ApiToken.objects.filter(user=target).exists()
        assert not AuditEvent.objects.filter(event_type="auth.token.create").exists()

    def test_the_superuser_cannot_issue_for_another_either(self, admin_user, alice):
        resp = session_client(admin_user).post(TOKENS, {"name": "x", "user": alice.pk}, format="json")

        assert (resp.status_code, resp.json()["code"]) == (404, "user_not_found")
        assert not ApiToken.objects.exists()

    def test_the_service_refuses_it_whatever_the_surface(self, officer_user, admin_user):
        with pytest.raises(ServiceError) as refused:
            issue_token(user=admin_user, name="x", actor=officer_user, otp_verified_at=timezone.now())

        assert (refused.value.code, refused.value.status_code) == ("user_not_found", 404)

    def test_owner_issues_for_own_service_account_and_is_its_issuer(self, alice, svc_etl):
        resp = session_client(alice).post(TOKENS, {"name": "etl", "user": svc_etl.pk}, format="json")

        assert resp.status_code == 201, resp.json()
        token = ApiToken.objects.get(pk=resp.json()["id"])
        assert (token.user, token.created_by) == (svc_etl, alice)

    def test_host_command_issues_and_is_audited_as_the_host(self, svc_etl):
        from io import StringIO

        from django.core.management import call_command

        out = StringIO()
        call_command("issue_token", "--user", "svc-etl", stdout=out)

        token = ApiToken.objects.get(digest=digest_token(out.getvalue().strip()))
        assert (token.user, token.created_by) == (svc_etl, None)
        event = AuditEvent.objects.get(event_type="auth.token.create")
        assert (event.actor, event.details["via"], event.details["after"]["issued_by"]) == (None, "host", None)


class TestTokensNeverMintTokens:
    @pytest.mark.parametrize("scopes", [["invoke", "read", "manage"], ["manage"], ["read"]])
    def test_a_token_cannot_issue_a_token(self, alice, svc_etl, scopes):
        plaintext = token_for(alice, scopes=scopes)

        for body in ({"name": "child"}, {"name": "child", "user": svc_etl.pk, "days": 365}):
            resp = bearer(plaintext).post(TOKENS, body, format="json")
            assert (resp.status_code, resp.json()["code"]) == (403, "token_cannot_issue_tokens")

        assert ApiToken.objects.count() == 1

    def test_the_service_refuses_a_call_made_with_a_token(self, alice):
        parent = ApiToken.objects.get(digest=digest_token(token_for(alice)))

        with pytest.raises(ServiceError) as refused:
            issue_token(user=alice, name="child", actor=alice, source=Source(token_id=parent.pk))

        assert (refused.value.code, refused.value.status_code) == ("token_cannot_issue_tokens", 403)

    def test_a_token_cannot_revoke_either(self, alice):
        plaintext = token_for(alice, scopes=["read", "manage"])
        token = ApiToken.objects.get(digest=digest_token(plaintext))

        resp = bearer(plaintext).post(f"{TOKENS}{token.pk}/revoke/")

        assert (resp.status_code, resp.json()["code"]) == (403, "token_not_allowed")
        token.refresh_from_db()
        assert token.revoked_at is None


class TestFreshSecondFactor:
    @pytest.mark.parametrize("persona", ["officer_user", "staff_user", "auditor_user", "admin_user"])
    def test_privileged_session_with_a_stale_second_factor_is_refused(self, request, settings, persona):
        user = request.getfixturevalue(persona)
        client = session_client(user)
        stale(client, settings)

        resp = client.post(TOKENS, {"name": "ci"}, format="json")

        assert (resp.status_code, resp.json()["code"], resp.json()["field"]) == (403, "fresh_otp_required", "otp")
        assert not ApiToken.objects.filter(user=user).exists()

    def test_privileged_session_that_never_recorded_its_verification_is_refused(self, officer_user):
        client = APIClient()
        otp_login(client, officer_user)
        session = client.session
        del session[OTP_AT]
        session.save()

        resp = client.post(TOKENS, {"name": "ci"}, format="json")

        assert (resp.status_code, resp.json()["code"]) == (403, "fresh_otp_required")

    def test_a_current_code_in_the_request_is_enough(self, officer_user, settings):
        client = session_client(officer_user)
        stale(client, settings)
        device = TOTPDevice.objects.get(user=officer_user)

        resp = client.post(TOKENS, {"name": "ci", "otp": code_of(device)}, format="json")

        assert resp.status_code == 201, resp.json()

    def test_a_wrong_code_is_refused_and_recorded(self, officer_user, settings):
        client = session_client(officer_user)
        stale(client, settings)

        resp = client.post(TOKENS, {"name": "ci", "otp": "000000"}, format="json")

        assert (resp.status_code, resp.json()["code"]) == (403, "fresh_otp_required")
        assert AuditEvent.objects.filter(event_type="auth.2fa.failure", actor=officer_user).exists()
        assert not ApiToken.objects.exists()

    def test_verifying_again_in_the_portal_makes_it_fresh(self, officer_user, settings):
        client = session_client(officer_user)
        stale(client, settings)
        device = TOTPDevice.objects.get(user=officer_user)
        device.last_t = -1  # the code of this step was not used yet
        device.save()

        verify = client.post("/accounts/2fa/verify/", {"code": code_of(device), "next": "/admin/"})
        resp = client.post(TOKENS, {"name": "ci"}, format="json")

        assert verify.status_code == 302
        assert resp.status_code == 201, resp.json()

    def test_api_login_with_the_code_records_the_verification(self, officer_user):
        device = TOTPDevice.objects.create(user=officer_user, name="phone", confirmed=True)
        client = APIClient()
        login = client.post(
            "/api/v1/accounts/login/",
            {"username": "sofia", "password": "correct-horse-battery-9", "otp": code_of(device)},
            format="json",
        )

        resp = client.post(TOKENS, {"name": "ci"}, format="json")

        assert login.status_code == 200, login.json()
        assert resp.status_code == 201, resp.json()

    def test_a_non_privileged_person_needs_no_second_factor(self, alice):
        resp = session_client(alice).post(TOKENS, {"name": "ci"}, format="json")

        assert resp.status_code == 201


class TestTokensObeyWhatSessionsObey:
    """On the gateway (the real view, its fixed-SQL lookup) and on the API (the ORM lookup)."""

    def test_privileged_token_lives_no_longer_than_a_session(self, officer_user, settings):
        client = session_client(officer_user)

        resp = client.post(TOKENS, {"name": "ci", "days": 90}, format="json")

        token = ApiToken.objects.get(pk=resp.json()["id"])
        assert token.expires_at - token.created_at == settings.SESSION_ABSOLUTE_TIMEOUT

    def test_privileged_token_refused_after_idle_timeout(self, auditor_user, settings):
        with time_machine.travel(timezone.now(), tick=False) as clock:
            api, gw = token_for(auditor_user), token_for(auditor_user)
            clock.shift(settings.SESSION_IDLE_TIMEOUT - timedelta(minutes=1))
            assert bearer(api).get(ME).status_code == 200  # in use: stays alive
            assert gateway(gw).status_code == 404
            clock.shift(settings.SESSION_IDLE_TIMEOUT + timedelta(minutes=1))

            answers = [bearer(api).get(ME), gateway(gw)]

        assert [(r.status_code, r.json()["code"]) for r in answers] == [(401, "token_idle")] * 2

    def test_person_who_became_privileged_keeps_no_long_token(self, alice, settings):
        with time_machine.travel(timezone.now(), tick=False) as clock:
            api, gw = token_for(alice), token_for(alice)  # 90 days, issued as an analyst
            clock.shift(settings.SESSION_ABSOLUTE_TIMEOUT + timedelta(minutes=1))
            assert bearer(api).get(ME).status_code == 200
            alice.groups.add(Group.objects.get(name=AUDITOR))

            answers = [bearer(api).get(ME), gateway(gw)]

        assert [(r.status_code, r.json()["code"]) for r in answers] == [(401, "token_expired")] * 2

    def test_persons_token_refused_when_the_password_expired(self, alice, settings):
        api, gw = token_for(alice), token_for(alice)
        Profile.objects.filter(user=alice).update(
            password_changed_at=timezone.now() - settings.PASSWORD_MAX_AGE - timedelta(minutes=1)
        )

        answers = [bearer(api).get(ME), gateway(gw)]

        assert [(r.status_code, r.json()["code"]) for r in answers] == [(403, "password_expired")] * 2

    def test_service_account_token_is_exempt_from_password_age_and_idle(self, svc_etl, settings):
        with time_machine.travel(timezone.now(), tick=False) as clock:
            plaintext = issue_token(user=svc_etl, name="etl", actor=None)[1]
            Profile.objects.filter(user=svc_etl).update(password_changed_at=timezone.now() - timedelta(days=400))
            clock.shift(settings.SESSION_ABSOLUTE_TIMEOUT * 2)

            assert bearer(plaintext).get(ME).status_code == 200

    @pytest.mark.parametrize(
        "situation",
        ["fresh", "idle", "old_privileged", "password_expired", "break_glass_idle", "service_account_old"],
    )
    def test_gateway_and_api_lookups_agree(self, alice, svc_etl, settings, situation):
        now = timezone.now()
        user = svc_etl if situation == "service_account_old" else alice
        with time_machine.travel(now, tick=False) as clock:
            plaintext = issue_token(user=user, name="x", actor=None)[1]
            if situation in ("idle", "old_privileged"):
                alice.groups.add(Group.objects.get(name=AUDITOR))
            if situation == "break_glass_idle":
                alice.emergency_access.create(
                    role=AUDITOR, reason="outage", granted_at=now, expires_at=now + timedelta(hours=8)
                )
            if situation in ("password_expired", "service_account_old"):
                Profile.objects.filter(user=user).update(password_changed_at=now - timedelta(days=365))
            shift = {"idle": settings.SESSION_IDLE_TIMEOUT, "break_glass_idle": settings.SESSION_IDLE_TIMEOUT}
            shift |= {"old_privileged": settings.SESSION_ABSOLUTE_TIMEOUT, "service_account_old": timedelta(days=30)}
            clock.shift(shift.get(situation, timedelta(0)) + timedelta(minutes=1))

            outcomes = []
            for lean in (True, False):
                ApiToken.objects.filter(digest=digest_token(plaintext)).update(last_used_at=None)
                try:
                    outcomes.append(authenticate_bearer(f"Bearer {plaintext}", lean=lean)[0].pk)
                except TokenRejected as err:
                    outcomes.append((err.code, err.status_code))

        expected = {
            "fresh": alice.pk,
            "idle": ("token_idle", 401),
            "old_privileged": ("token_expired", 401),
            "password_expired": ("password_expired", 403),
            "break_glass_idle": ("token_idle", 401),
            "service_account_old": svc_etl.pk,
        }[situation]
        assert outcomes == [expected, expected]


class TestDisablingRevokes:
    def test_disabling_a_user_revokes_all_its_tokens_audited(self, staff_user, alice, svc_etl):
        mine = [token_for(alice, name="a"), token_for(alice, name="b")]
        owned = issue_token(user=svc_etl, name="etl", actor=alice)[1]

        resp = session_client(staff_user).post(
            f"/api/v1/accounts/users/{alice.pk}/active/", {"is_active": False}, format="json"
        )

        assert resp.status_code == 200, resp.json()
        for plaintext in mine:
            assert ApiToken.objects.get(digest=digest_token(plaintext)).revoked_at is not None
        revokes = AuditEvent.objects.filter(event_type="auth.token.revoke")
        assert {(e.actor, e.details["reason"]) for e in revokes} == {(staff_user, "account_disabled")}
        assert revokes.count() == 2
        # The service accounts alice owns stay with their owner.
        assert ApiToken.objects.get(digest=digest_token(owned)).revoked_at is None
        # Re-enabling does not revive them.
        set_user_active(user_id=alice.pk, active=True, actor=staff_user)
        assert bearer(mine[0]).get(ME).json()["code"] == "token_revoked"

    def test_disabling_a_service_account_revokes_its_tokens(self, staff_user, svc_etl):
        plaintext = issue_token(user=svc_etl, name="etl", actor=None)[1]

        set_user_active(user_id=svc_etl.pk, active=False, actor=staff_user)

        assert ApiToken.objects.get(digest=digest_token(plaintext)).revoked_at is not None
        assert AuditEvent.objects.filter(event_type="auth.token.revoke", details__reason="account_disabled").exists()

    def test_dormant_sweep_revokes_the_tokens_too(self, alice, settings):
        with time_machine.travel(timezone.now() - settings.DORMANT_ACCOUNT_AGE - timedelta(days=2), tick=False):
            alice.date_joined = timezone.now()
            alice.save(update_fields=["date_joined"])
            plaintext = issue_token(user=alice, name="old", actor=None, days=365)[1]

        tasks.disable_dormant_accounts()

        token = ApiToken.objects.get(digest=digest_token(plaintext))
        assert token.revoked_at is not None
        event = AuditEvent.objects.get(event_type="auth.token.revoke", target_id=str(token.pk))
        assert (event.actor, event.details["reason"]) == (None, "account_disabled")


class TestEventsNameTheIssuer:
    def test_gateway_and_api_events_carry_token_and_issuer(self, alice, svc_etl):
        plaintext = issue_token(user=svc_etl, name="etl", actor=alice)[1]
        token = ApiToken.objects.get(digest=digest_token(plaintext))

        gateway(plaintext)
        bearer(plaintext).get(f"{MODELS}?limit=1")  # a read: writes nothing
        resp = session_client(alice).post(f"{TOKENS}{token.pk}/revoke/")  # alice, no token: no issuer
        assert resp.status_code == 200

        call = AuditEvent.objects.get(event_type="inference.infer")
        assert (call.actor, call.token_id) == (svc_etl, token.pk)
        assert (call.details["token_issuer_id"], call.details["token_issuer"]) == (alice.pk, "alice")
        revoke = AuditEvent.objects.get(event_type="auth.token.revoke")
        assert revoke.token_id is None and "token_issuer" not in revoke.details

    def test_host_issued_token_events_say_host(self, svc_etl):
        plaintext = issue_token(user=svc_etl, name="etl", actor=None)[1]

        gateway(plaintext)

        call = AuditEvent.objects.get(event_type="inference.infer")
        assert (call.details["token_issuer_id"], call.details["token_issuer"]) == (None, "host")


class TestRestrictedTokenOnTheApi:
    """ops (admin role: sees and deploys every model) with a token restricted to triage."""

    @pytest.fixture
    def world(self, staff_user, onnx_bytes):
        triage = ModelVersionFactory(model_name="triage", actor=staff_user)
        radiology = ModelVersionFactory(model_name="radiology", actor=staff_user)
        server = InferenceServerFactory(name="edge-1")
        deps = {mv.model.name: DeploymentFactory(model_version=mv, server=server) for mv in (triage, radiology)}
        scoped = token_for(staff_user, scopes=["read", "manage"], model_ids=[triage.model.pk])
        return {"triage": triage, "radiology": radiology, "server": server, "deps": deps, "client": bearer(scoped)}

    def test_registry_catalogue_detail_and_versions(self, world):
        client = world["client"]

        listing = client.get(MODELS).json()["results"]
        answers = [
            client.get(f"{MODELS}radiology/"),
            client.get(f"{MODELS}radiology/versions/"),
            client.get(f"{MODELS}radiology/versions/1/"),
        ]

        assert [m["name"] for m in listing] == ["triage"]
        assert client.get(f"{MODELS}triage/versions/1/").status_code == 200
        assert [r.status_code for r in answers] == [404, 404, 404]

    def test_registry_upload_and_shred(self, world, onnx_bytes):
        client = world["client"]

        def upload(name):
            file = SimpleUploadedFile("m.onnx", onnx_bytes, content_type="application/octet-stream")
            return client.post(f"{MODELS}{name}/versions/", {"file": file}, format="multipart")

        other, new, own = upload("radiology"), upload("brand-new"), upload("triage")
        shred = client.post(f"{MODELS}radiology/versions/1/shred/", {"reason": "x"}, format="json")

        assert [(r.status_code, r.json()["code"]) for r in (other, new)] == [(404, "model_not_found")] * 2
        assert own.status_code == 201, own.json()
        assert shred.status_code == 404
        assert world["radiology"].model.versions.count() == 1
        assert not Model.objects.filter(name="brand-new").exists()
        world["radiology"].artifact.refresh_from_db()
        assert world["radiology"].artifact.shredded_at is None

    def test_deployments_list_detail_create_undeploy_redeploy(self, world):
        client, other = world["client"], world["deps"]["radiology"]

        listing = client.get(DEPLOYMENTS).json()["results"]
        answers = [
            client.get(f"{DEPLOYMENTS}{other.pk}/"),
            client.post(f"{DEPLOYMENTS}{other.pk}/undeploy/"),
            client.post(f"{DEPLOYMENTS}{other.pk}/redeploy/"),
            client.post(
                DEPLOYMENTS, {"model_version": world["radiology"].pk, "server": world["server"].pk}, format="json"
            ),
        ]

        assert [d["model"] for d in listing] == ["triage"]
        assert [r.status_code for r in answers] == [404] * 4
        assert answers[-1].json()["code"] == "model_version_not_found"
        other.refresh_from_db()
        assert other.desired_state == "active"

    def test_me_shows_only_the_tokens_models_usage(self, alice, world):
        grant(alice, world["triage"].model)
        grant(alice, world["radiology"].model)
        gateway(token_for(alice), "triage")
        gateway(token_for(alice), "radiology")
        scoped = token_for(alice, model_ids=[world["triage"].model.pk])

        usage = bearer(scoped).get(ME).json()["usage"]
        everything = bearer(token_for(alice)).get(ME).json()["usage"]

        assert set(usage) == {"triage"}
        assert set(everything) == {"triage", "radiology"}

    def test_compliance_model_settings(self, world, officer_user):
        scoped = bearer(token_for(officer_user, scopes=["read", "manage"], model_ids=[world["triage"].model.pk]))
        policies = "/api/v1/compliance/model-policies/"

        other = scoped.post(policies, {"model": "radiology", "phi": True, "deid_mode": "off"}, format="json")
        attach = scoped.post(
            "/api/v1/compliance/attachments/", {"profile": "hipaa", "model": "radiology"}, format="json"
        )
        own = scoped.post(policies, {"model": "triage", "phi": True, "deid_mode": "redact"}, format="json")

        assert [(r.status_code, r.json()["code"]) for r in (other, attach)] == [(404, "model_not_found")] * 2
        assert own.status_code == 200, own.json()
        assert [p["model"] for p in scoped.get(policies).json()["results"]] == ["triage"]
