"""The accounts app's writes, one module per concern; re-exported so callers import from here."""

from .enrolment import confirm_totp_enrolment, find_enrolment_code, issue_enrolment_code, void_totp_devices
from .grants import grant_model_access, purge_expired_grants, revoke_model_access
from .preferences import set_preferences
from .roles import (
    assign_role,
    grant_emergency_access,
    note_break_glass_use,
    remove_role,
    revoke_emergency_access,
    roles_of,
)
from .security import (
    apply_login_failure_rule,
    create_service_account,
    disable_dormant_accounts,
    note_superuser_use,
    record_2fa_failure,
)
from .tokens import (
    LAST_USED_RESOLUTION,
    AccountFacts,
    TokenRejected,
    authenticate_bearer,
    bearer_value,
    get_user_by_name,
    is_privileged,
    issue_token,
    record_denied,
    revoke_all_tokens,
    revoke_token,
    token_refusal,
)
from .users import (
    bootstrap_officer,
    change_own_password,
    create_user,
    reissue_enrolment_code,
    reset_password,
    set_user_active,
    update_user,
)

__all__ = [
    "set_preferences",
    "apply_login_failure_rule",
    "LAST_USED_RESOLUTION",
    "AccountFacts",
    "TokenRejected",
    "token_refusal",
    "assign_role",
    "bootstrap_officer",
    "change_own_password",
    "confirm_totp_enrolment",
    "find_enrolment_code",
    "issue_enrolment_code",
    "reissue_enrolment_code",
    "reset_password",
    "update_user",
    "void_totp_devices",
    "authenticate_bearer",
    "bearer_value",
    "create_service_account",
    "create_user",
    "set_user_active",
    "disable_dormant_accounts",
    "get_user_by_name",
    "grant_emergency_access",
    "grant_model_access",
    "is_privileged",
    "issue_token",
    "note_break_glass_use",
    "note_superuser_use",
    "purge_expired_grants",
    "record_2fa_failure",
    "record_denied",
    "remove_role",
    "revoke_emergency_access",
    "revoke_model_access",
    "revoke_all_tokens",
    "revoke_token",
    "roles_of",
]
