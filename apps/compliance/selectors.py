"""Compliance's reads that other apps use. The de-identification mode of a model is decided by the
access policy (apps.registry.access.deid_mode); this module gathers its facts — the model's policy
mode and whether it receives PHI — either as SQL columns for the gateway's route statement or
through the ORM for the control plane."""

from __future__ import annotations

from functools import cache

from apps.registry.selectors import deid_mode as decide_deid_mode

from .catalog import profiles
from .effective import phi_by_attachment
from .models import AnswerScreen, ModelPolicy, ProfileAttachment


def deid_facts(model_id: int) -> tuple[str | None, bool]:
    """The model's policy mode (None without a policy) and whether it receives PHI (marked, or under
    a model-level attachment of a profile that implies PHI)."""
    policy = ModelPolicy.objects.filter(model_id=model_id).values_list("deid_mode", "phi").first()
    mode, marked = policy if policy else (None, False)
    return mode, bool(marked) or phi_by_attachment(model_id)


def deid_mode(model_id: int) -> str:
    """The de-identification mode the gateway applies to a model's requests."""
    return decide_deid_mode(*deid_facts(model_id))


def answer_screen_mode(stored: str | None, phi: bool) -> str:
    """The answer screen the gateway applies: the policy's, else `redact` for a model that receives
    PHI, else `off`."""
    if stored:
        return stored
    return AnswerScreen.REDACT.value if phi else AnswerScreen.OFF.value


def answer_screen_column(model_ref: str) -> str:
    """The model's stored answer screen as one SQL select expression (NULL without a policy); with
    the PHI fact of deid_policy_columns, pass it to answer_screen_mode."""
    return f"(SELECT answer_screen FROM {ModelPolicy._meta.db_table} WHERE model_id = {model_ref})"  # noqa: S608


def numeric_inputs_column(model_ref: str) -> str:
    """Whether the model's numeric inputs are declared (a reason recorded) as one SQL select
    expression (NULL without a policy); with the PHI fact of deid_policy_columns, pass it to
    numeric_inputs_refused."""
    return f"(SELECT numeric_inputs_reason <> '' FROM {ModelPolicy._meta.db_table} WHERE model_id = {model_ref})"  # noqa: S608


def numeric_inputs_refused(phi: bool, declared) -> bool:
    """The gateway refuses non-text (non-BYTES) inputs to a model that receives PHI unless its policy
    declares, with a reason, that they carry no identifiers: text de-identification cannot see
    inside a numeric tensor (pre-tokenised input_ids would carry identifiers straight to Triton)."""
    return bool(phi) and not declared


@cache
def deid_policy_columns(model_ref: str) -> str:
    """deid_facts as two SQL select expressions for the model `model_ref` (an SQL expression such as
    `m.id`; no parameters), so that the gateway's route statement gathers them without a query of
    its own; pass the pair to apps.registry.access.deid_mode."""
    phi_profiles = sorted(p.id for p in profiles().values() if p.phi) or ["-"]
    ids = ", ".join(f"'{p}'" for p in phi_profiles)  # catalogue ids shipped with the code, not input
    policies, attachments = ModelPolicy._meta.db_table, ProfileAttachment._meta.db_table
    return (
        f"(SELECT deid_mode FROM {policies} WHERE model_id = {model_ref}),"  # noqa: S608
        f" (EXISTS (SELECT 1 FROM {policies} WHERE model_id = {model_ref} AND phi)"
        f" OR EXISTS (SELECT 1 FROM {attachments} WHERE model_id = {model_ref} AND profile IN ({ids})))"
    )


def attachments() -> list[dict]:
    """Every attachment as {"profile", "model" (its name, None for the installation), "options"}."""
    return [
        {"profile": p, "model": m, "options": o or {}}
        for p, m, o in ProfileAttachment.objects.values_list("profile", "model__name", "options")
    ]


def describe(run, *, checks: bool = True) -> list[str]:
    """The run as text, per profile: its counts, then each control's status and, under it, every
    check's status and one-line summary (what it probed, queried or which attestation it read).
    `checks=False`: one line per control, with the summaries of the checks that decided it."""
    lines: list[str] = []
    results = list(run.results.order_by("profile", "id"))
    for profile in sorted({r.profile for r in results}):
        rows = [r for r in results if r.profile == profile]
        counts = {s: sum(1 for r in rows if r.status == s) for s in ("pass", "fail", "manual", "not_applicable")}
        lines.append(
            f"{profile}: {counts['pass']} pass, {counts['fail']} fail, {counts['manual']} need a person, "
            f"{counts['not_applicable']} not applicable"
        )
        for r in rows:
            if not checks:
                decisive = list(dict.fromkeys(e["summary"] for e in r.evidence if e["status"] == r.status))
                lines.append(f"  {r.status.upper():<14} {r.control_id}: {'; '.join(decisive) or 'no check'}")
                continue
            lines.append(f"  {r.status.upper():<14} {r.control_id}")
            for e in r.evidence:
                proof = f" ({e['proof']})" if e.get("proof") else ""
                lines.append(f"      {e['status']:<14} {e['check']}{proof}: {e['summary']}")
    return lines
