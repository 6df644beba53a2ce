"""The five roles and what each may do. Groups with these names and exactly these permissions
are created by a data migration and kept in step by `sync_roles` (run by every migrate)."""

from django.utils.translation import gettext_lazy as _

ADMIN = "admin"
SECURITY_OFFICER = "security_officer"
AUDITOR = "auditor"
ANALYST = "analyst"
GUEST = "guest"
ROLES = (ADMIN, SECURITY_OFFICER, AUDITOR, ANALYST, GUEST)
# The roles in words (the codes stay in the audit log and the API); a role's group is named by its code.
ROLE_LABELS = {
    ADMIN: _("administrator"),
    SECURITY_OFFICER: _("security officer"),
    AUDITOR: _("auditor"),
    ANALYST: _("analyst"),
    GUEST: _("guest"),
}

# Separation of duties: nobody holds two of these at once (等保 8.1.4.2 e).
EXCLUSIVE = frozenset({ADMIN, SECURITY_OFFICER, AUDITOR})
# Roles that must use two factors (等保 8.1.4.1 d; HIPAA 164.312(d)).
PRIVILEGED = EXCLUSIVE
# Roles that may be granted model invocation.
MAY_INVOKE = frozenset({ADMIN, SECURITY_OFFICER, AUDITOR, ANALYST})

_VIEW_OPS = (
    "registry.view_model",
    "registry.view_modelversion",
    "registry.view_artifact",
    "deployments.view_inferenceserver",
    "deployments.view_deployment",
    "deployments.view_deploymenttransition",
    "deployments.view_rollout",
    "deployments.view_replicaset",
    "deployments.view_batchingsweep",
)

# Chat-model governance (docs/llm.md): admin and security officer set chat policies and quotas;
# everyone privileged reads them and all usage (an analyst reads their own usage, by the selector,
# and the policies of the models they see); only the auditor decrypts a retained exchange; the
# security officer deletes one on request (the auditor changes nothing, deletion included).
_LLM_READ = ("gateway.view_chatpolicy", "gateway.view_quota", "gateway.view_llmusage")
_LLM_MANAGE = ("gateway.manage_chatpolicy", "gateway.manage_quota")

# Compliance: the security officer decides which profiles apply and attests manual controls; the
# auditor reads and exports (view_/export_ only, like all its permissions). Both may generate and
# download signed reports; evaluating on demand is the officer's (the schedule evaluates anyway).
_COMPLIANCE_READ = (
    "compliance.view_profileattachment",
    "compliance.view_modelpolicy",
    "compliance.view_controlresult",
    "compliance.view_attestation",
    "compliance.view_restoredrill",
    "compliance.view_compliancereport",
    "compliance.export_compliancereport",
)

PERMISSIONS: dict[str, tuple[str, ...]] = {
    ADMIN: (
        *_VIEW_OPS,
        "registry.view_catalogue",
        "registry.add_modelversion",
        "deployments.add_inferenceserver",
        "deployments.change_inferenceserver",
        "deployments.delete_inferenceserver",
        "deployments.add_deployment",
        "deployments.change_deployment",
        "deployments.add_rollout",
        "deployments.change_rollout",
        "deployments.add_replicaset",
        "deployments.change_replicaset",
        "deployments.add_batchingsweep",
        "auth.view_user",
        "auth.add_user",
        "auth.change_user",
        "accounts.view_profile",
        *_LLM_READ,
        *_LLM_MANAGE,
    ),
    SECURITY_OFFICER: (
        "registry.view_model",
        "registry.view_modelversion",
        "registry.view_catalogue",
        "registry.view_artifact",
        "registry.shred_artifact",
        "keys.view_keyencryptionkey",
        "keys.rotate_keyencryptionkey",
        "keys.retire_keyencryptionkey",
        "keys.view_kekrotation",
        "keys.view_datakey",
        "audit.view_key_events",
        "audit.export_key_events",
        "accounts.manage_grants",
        "accounts.manage_roles",
        "accounts.manage_tokens",
        "accounts.grant_break_glass",
        "accounts.view_apitoken",
        "accounts.view_modelusergrant",
        "accounts.view_modelgroupgrant",
        "accounts.view_emergencyaccess",
        "accounts.view_profile",
        "auth.view_user",
        "auth.view_group",
        *_COMPLIANCE_READ,
        "compliance.manage_profiles",
        "compliance.add_attestation",
        "compliance.evaluate_controls",
        *_LLM_READ,
        *_LLM_MANAGE,
        "gateway.view_retainedexchange",
        "gateway.erase_retainedexchange",
    ),
    AUDITOR: (
        *_VIEW_OPS,
        "registry.view_catalogue",
        "audit.view_auditevent",
        "audit.export_auditevent",
        "keys.view_keyencryptionkey",
        "keys.view_kekrotation",
        "keys.view_datakey",
        "accounts.view_apitoken",
        "accounts.view_modelusergrant",
        "accounts.view_modelgroupgrant",
        "accounts.view_emergencyaccess",
        "accounts.view_profile",
        "auth.view_user",
        "auth.view_group",
        *_COMPLIANCE_READ,
        *_LLM_READ,
        "gateway.view_retainedexchange",
        "gateway.view_retainedexchange_content",
    ),
    ANALYST: (),  # everything an analyst may touch comes from per-model grants
    GUEST: ("registry.view_catalogue",),
}

GRANTABLE = ("view_model", "invoke_model", "reidentify")
