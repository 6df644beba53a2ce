"""Every registered check is proven to test its control, and the documentation says so.

FLIP_TESTS names, for each check, the tests that turn its real control off (or bypass it) and
assert the check fails with evidence, then restore it and assert it passes. A new check fails
this module until someone writes such a test and lists it here; a renamed test fails it too.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from apps.compliance.catalog import matrix_markdown, profiles
from apps.compliance.checks import PROOF_OF, PROOFS, REGISTRY, load_all

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "compliance.md"

C = "tests/compliance/"
SUPERUSER_FLIP = "test_active_superuser_fails_both_checks_naming_it_and_disabled_passes"
PICKLE_FLIP = "test_a_pickle_sealed_under_the_artifacts_key_fails_then_restored_passes"
FLIP_TESTS: dict[str, list[str]] = {
    "access.api_requires_auth": [
        C + "test_access_gate.py::test_an_open_api_view_fails_the_gate_check_and_closing_it_passes"
    ],
    "access.authorisation": [C + "test_access_authorisation.py::test_a_grant_created_with_the_orm_fails_naming_it"],
    "access.grant_expiry": [C + "test_checks_flip.py::test_grant_expiry_on_phi_models"],
    "access.privileged_2fa": [
        C + "test_checks.py::test_privileged_user_without_2fa_fails_then_passes_after_enrolment",
        C + "test_role_separation.py::test_a_privileged_power_outside_a_role_group_fails_the_second_factor_check",
    ],
    "access.sm3_otp": [C + "test_guomi_honesty.py::test_8_4_a_fails_with_totp_sha1_and_passes_with_sm3_otp"],
    "accounts.break_glass_audited": [C + "test_alerts.py::test_break_glass_needs_audit_event_and_delivered_alert"],
    "accounts.crypto_role_separation": [C + "test_role_separation.py::TestSuperuser::" + SUPERUSER_FLIP],
    "accounts.dormant": [C + "test_checks.py::test_role_conflict_default_password_and_dormant_account"],
    "accounts.login_monitoring": [
        C + "test_login_monitoring.py::test_failed_logins_alert_through_the_channel",
        C + "test_login_monitoring.py::test_rule_off_fails",
    ],
    "accounts.no_default_credentials": [
        C + "test_default_accounts.py::TestDemoAccounts::test_a_default_password_on_a_demo_account_fails_anywhere"
    ],
    "accounts.role_separation": [
        C + "test_role_separation.py::TestSuperuser::" + SUPERUSER_FLIP,
        C + "test_role_separation.py::TestSideDoors::test_a_power_as_a_direct_user_permission",
    ],
    "accounts.superuser_sealed": [
        C + "test_default_accounts.py::TestSuperuserSealed::test_a_login_opens_it_until_resealed_on_the_host"
    ],
    "accounts.termination": [
        C + "test_termination.py::test_disabling_through_the_service_ends_access_within_a_second_and_passes",
        C + "test_termination.py::test_disabled_past_the_service_keeps_a_token_and_a_session_and_fails",
    ],
    "accounts.unique_users": [
        C + "test_checks_flip.py::test_unique_users_fails_on_a_shared_account_and_passes_once_disabled"
    ],
    "alerts.delivery_proven": [C + "test_alerts.py::test_receiver_down_fails_then_up_passes"],
    "audit.activity_review": [C + "test_activity_review.py::test_no_review_fails_then_an_auditor_search_passes"],
    "audit.append_only": [C + "test_database_controls.py::test_separate_app_role_passes_and_truncate_fails"],
    "audit.central_collection": [C + "test_central_collection.py::test_collector_down_then_up"],
    "audit.chain_verifies": [
        C + "test_checks_flip.py::test_chain_verifies_fails_on_a_rewritten_event_and_passes_on_a_fresh_chain"
    ],
    "audit.events_name_users": [C + "test_checks_flip.py::test_events_name_users_fails_on_an_anonymous_token_call"],
    "audit.reader_roles": [C + "test_checks_flip.py::test_reader_roles_sees_roles_direct_permissions_and_superusers"],
    "audit.retention": [C + "test_database_controls.py::test_purge_floor_off_fails_and_attaching_hipaa_raises_it"],
    "audit.sealer_running": [
        C + "test_checks_flip.py::test_sealer_running_fails_while_an_event_waits_and_passes_once_sealed"
    ],
    "audit.sm3_chain": [C + "test_checks_flip.py::test_sm3_chain_follows_the_chain_not_the_setting"],
    "backup.restore_drill": [C + "test_backup.py::test_restore_drill_good_copy_passes_tampered_copy_fails"],
    "backup.wal_archiving": [C + "test_backup.py::test_wal_archiving_probe_on_a_server_with_archiving"],
    "deid.numeric_inputs": [
        "tests/gateway/test_deid_numeric_inputs.py::"
        "test_an_undeclared_numeric_phi_model_is_refused_and_fails_the_check_then_declared_passes"
    ],
    "deid.phi_models": [
        C + "test_deid_probe.py::test_a_deidentifier_that_lets_identifiers_through_fails_naming_the_leaked_types"
    ],
    "deployments.remote_tls": [C + "test_checks.py::test_tls_settings_and_remote_triton"],
    "keys.artifact_suites": [C + "test_checks_flip.py::test_guomi_suite_and_artifact_suites"],
    "keys.artifacts_encrypted": [
        C + "test_integrity_host.py::TestArtifactsEncrypted::"
        "test_plaintext_model_in_place_of_an_artifact_fails_then_restored_passes"
    ],
    "keys.disposal": [
        C + "test_integrity_host.py::TestDisposal::test_shredded_version_leaves_nothing_then_leftover_ciphertext_fails"
    ],
    "keys.guomi_suite_configured": [C + "test_checks_flip.py::test_guomi_suite_and_artifact_suites"],
    "keys.kek_in_hsm": [
        C + "test_checks.py::test_kek_in_hsm_fails_on_softhsm_and_with_a_local_file",
        C + "test_checks.py::test_kek_in_hsm_passes_only_for_a_hardware_token",  # the token's info patched: no HSM here
    ],
    "keys.no_stray_files": [C + "test_checks_flip.py::test_no_stray_files_in_the_artifact_store"],
    "keys.sm4_key_wrapping": [C + "test_guomi_honesty.py::test_sm4_wrapping_fails_on_softhsm_naming_the_module"],
    "manual.attestation": [C + "test_checks.py::test_manual_control_needs_an_unexpired_attestation"],
    "platform.code_manifest": [
        C + "test_integrity_host.py::TestCodeManifest::test_written_passes_modified_fails_restored_passes"
    ],
    "platform.listening": [
        C + "test_integrity_host.py::TestListening::test_an_internal_port_on_every_address_fails_then_loopback_passes"
    ],
    "platform.minimal_install": [
        C + "test_integrity_host.py::TestMinimalInstall::"
        "test_an_installed_distribution_no_requirement_needs_fails_then_removed_passes"
    ],
    "registry.artifact_integrity": [
        C + "test_integrity_host.py::TestArtifactIntegrity::"
        "test_flipped_ciphertext_byte_fails_naming_the_artifact_then_restored_passes"
    ],
    "registry.no_executable_artifacts": [C + "test_integrity_host.py::TestNoExecutableArtifacts::" + PICKLE_FLIP],
    "settings.deploy_check": [
        "tests/security/test_production_settings.py::"
        "test_an_override_starts_is_audited_once_and_fails_the_compliance_checks",
        "tests/security/test_production_settings.py::test_check_deploy_in_production_reports_only_documented_silences",
    ],
    "settings.idle_timeout": [C + "test_checks.py::test_idle_timeout_off_fails_and_back_on_passes"],
    "settings.lockout": [C + "test_checks_flip.py::test_lockout_and_password_policy_flip_with_the_settings"],
    "settings.password_policy": [C + "test_checks_flip.py::test_lockout_and_password_policy_flip_with_the_settings"],
    "settings.tls": [C + "test_checks.py::test_tls_settings_and_remote_triton"],
    "signing.sm2": [C + "test_guomi_honesty.py::test_8_4_h_fails_with_the_sm2_key_in_a_local_file"],
    "transit.tlcp": [C + "test_guomi_honesty.py::test_tlcp_fails_without_a_declared_and_attested_terminator"],
    "triton.bypass_refused": [
        "tests/deployments/test_triton_bypass.py::test_check_fails_on_a_server_started_without_restriction_and_passes_with_it"
    ],
}


def _resolve(node_id: str):
    path, *names = node_id.split("::")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    obj = module
    for name in names:
        obj = getattr(obj, name)
    return obj


def test_every_registered_check_names_the_tests_that_turn_its_control_off_and_on():
    load_all()
    assert sorted(FLIP_TESTS) == sorted(REGISTRY), "a check without a flip test, or a test for no check"
    missing = []
    for check, node_ids in FLIP_TESTS.items():
        for node_id in node_ids:
            try:
                assert callable(_resolve(node_id))
            except (ImportError, AttributeError):
                missing.append(f"{check}: {node_id}")
    assert not missing, missing


def test_every_check_says_what_backs_it_and_every_catalogued_check_exists():
    load_all()
    assert set(PROOF_OF) == set(REGISTRY)
    assert set(PROOF_OF.values()) <= set(PROOFS)
    catalogued = {n for p in profiles().values() for c in p.controls for n in (*c.checks, *c.preconditions)}
    assert catalogued <= set(REGISTRY)
    assert set(REGISTRY) - catalogued == set(), "a registered check no control uses"


def test_the_documentation_maps_every_control_and_describes_every_check():
    text = DOCS.read_text(encoding="utf-8")
    embedded = re.search(r"<!-- matrix:begin -->\n(.*?)<!-- matrix:end -->", text, re.S)
    assert embedded, "docs/compliance.md lost its control matrix markers"
    assert embedded.group(1) == matrix_markdown(), "run `manage.py compliance_matrix` and paste it into the docs"
    described = set(re.findall(r"^\| `([a-z_]+\.[a-z_0-9]+)` \|", text, re.M))
    load_all()
    assert set(REGISTRY) - described == set(), "a check missing from the Live checks table"
