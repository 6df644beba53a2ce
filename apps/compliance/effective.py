"""The settings that follow from the attached profiles. Other apps read these (the audit app's
retention through the SOVEREIGN_AUDIT_RETENTION_HOOKS setting, so it never imports this app)."""

from __future__ import annotations

from django.db import DatabaseError
from django.db.models import Q

from .catalog import get_profile
from .models import ModelPolicy, ProfileAttachment

HIPAA = "hipaa"
GUOMI = "guomi"


def attached_profiles() -> dict[str, dict]:
    """Profile id -> merged options of every attachment of it (installation or models)."""
    out: dict[str, dict] = {}
    for profile, options in ProfileAttachment.objects.values_list("profile", "options"):
        merged = out.setdefault(profile, {})
        for key, value in (options or {}).items():
            merged[key] = bool(merged.get(key)) or bool(value)
    return out


def audit_retention_days() -> int:
    """The longest audit retention any attached profile requires (0 when none is attached, or
    before the tables exist)."""
    try:
        ids = set(ProfileAttachment.objects.values_list("profile", flat=True))
    except DatabaseError:
        return 0
    return max((get_profile(p).audit_retention_days for p in ids if get_profile(p)), default=0)


def attached_retention_days() -> dict[str, int]:
    """Profile id -> audit retention it requires, for every attached profile."""
    ids = sorted(set(ProfileAttachment.objects.values_list("profile", flat=True)))
    return {p: get_profile(p).audit_retention_days for p in ids if get_profile(p)}


def guomi_required() -> bool:
    """The 国密 option of some attached profile is on: SM4-GCM, SM3 and SM2 are required."""
    return any(options.get(GUOMI) for options in attached_profiles().values())


def phi_model_ids() -> set[int]:
    """Models that receive PHI / personal information: marked in their policy, or under a
    model-level attachment of a profile that implies it (HIPAA)."""
    marked = set(ModelPolicy.objects.filter(phi=True).values_list("model_id", flat=True))
    phi_profiles = [p for p in set(ProfileAttachment.objects.values_list("profile", flat=True)) if _implies_phi(p)]
    attached = ProfileAttachment.objects.filter(Q(profile__in=phi_profiles) & Q(model__isnull=False))
    return marked | set(attached.values_list("model_id", flat=True))


def _implies_phi(profile_id: str) -> bool:
    profile = get_profile(profile_id)
    return bool(profile and profile.phi)


def phi_by_attachment(model_id: int) -> bool:
    """The model is under a model-level attachment of a profile that implies PHI (HIPAA)."""
    ids = ProfileAttachment.objects.filter(model_id=model_id).values_list("profile", flat=True)
    return any(_implies_phi(p) for p in ids)


def deid_required(model_id: int) -> bool:
    return model_id in phi_model_ids()


def profiles_of_model(model_id: int) -> set[str]:
    """Profiles that govern a model (and so its deployments): installation-wide ones plus its own."""
    rows = ProfileAttachment.objects.filter(Q(model__isnull=True) | Q(model_id=model_id))
    return set(rows.values_list("profile", flat=True))
