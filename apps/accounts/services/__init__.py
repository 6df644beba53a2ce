"""The accounts app's writes, one module per concern; re-exported so callers import from here."""

from .grants import grant_model_access, purge_expired_grants, revoke_model_access
from .roles import (
    assign_role,
    grant_emergency_access,
    note_break_glass_use,
    remove_role,
    revoke_emergency_access,
    roles_of,
)
from .security import (
    create_service_account,
    disable_dormant_accounts,
    record_2fa_enrolment,
    record_2fa_failure,
)
from .tokens import (
    LAST_USED_RESOLUTION,
    TokenRejected,
    authenticate_bearer,
    get_user_by_name,
    is_privileged,
    issue_token,
    record_denied,
    revoke_all_tokens,
    revoke_token,
)
from .users import create_user, set_user_active

__all__ = [
    "LAST_USED_RESOLUTION",
    "TokenRejected",
    "assign_role",
    "authenticate_bearer",
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
    "purge_expired_grants",
    "record_2fa_enrolment",
    "record_2fa_failure",
    "record_denied",
    "remove_role",
    "revoke_emergency_access",
    "revoke_model_access",
    "revoke_all_tokens",
    "revoke_token",
    "roles_of",
]
