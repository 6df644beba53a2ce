"""The control catalogue: one JSON file per profile in catalogs/, loaded once.

A control names the registered checks that evaluate it (apps/compliance/checks) and, optionally,
`preconditions`: checks that must not fail for the profile to be attached at all (a requirement
the system cannot meet by running, such as the 国密 suite while another suite is configured).
Controls with an `option` apply only when that option of the profile is on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from django.utils.translation import get_language

CATALOG_DIR = Path(__file__).resolve().parent / "catalogs"


def pick(texts: dict, language: str | None = None) -> str:
    """The Chinese text for a zh* language, else the English one."""
    language = (language or get_language() or "en").lower()
    return texts.get("zh" if language.startswith("zh") else "en") or texts.get("en", "")


@dataclass(frozen=True)
class Control:
    id: str
    profile: str
    framework: str
    family: dict
    summary: dict
    checks: tuple[str, ...]
    evidence: dict
    remedy: dict
    option: str | None = None
    preconditions: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "profile": self.profile,
            "framework": self.framework,
            "family": self.family,
            "summary": self.summary,
            "checks": list(self.checks),
            "evidence": self.evidence,
            "remedy": self.remedy,
            "option": self.option,
            "preconditions": list(self.preconditions),
        }


@dataclass(frozen=True)
class Profile:
    id: str
    framework: str
    name: dict
    default_language: str
    audit_retention_days: int
    phi: bool
    options: dict
    controls: tuple[Control, ...] = field(default_factory=tuple)

    def controls_for(self, options: dict | None = None) -> list[Control]:
        on = {k for k, v in (options or {}).items() if v}
        return [c for c in self.controls if c.option is None or c.option in on]

    def control(self, control_id: str) -> Control | None:
        return next((c for c in self.controls if c.id == control_id), None)


def _load(path: Path) -> Profile:
    data = json.loads(path.read_text(encoding="utf-8"))
    controls = tuple(
        Control(
            id=c["id"],
            profile=data["id"],
            framework=c.get("framework", data["framework"]),
            family=c["family"],
            summary=c["summary"],
            checks=tuple(c["checks"]),
            evidence=c["evidence"],
            remedy=c["remedy"],
            option=c.get("option"),
            preconditions=tuple(c.get("preconditions", ())),
        )
        for c in data["controls"]
    )
    return Profile(
        id=data["id"],
        framework=data["framework"],
        name=data["name"],
        default_language=data.get("default_language", "en"),
        audit_retention_days=int(data.get("audit_retention_days", 0)),
        phi=bool(data.get("phi")),
        options=data.get("options", {}),
        controls=controls,
    )


@lru_cache(maxsize=1)
def profiles() -> dict[str, Profile]:
    """Every shipped profile by id (hipaa, dengbao-l3)."""
    loaded = (_load(p) for p in sorted(CATALOG_DIR.glob("*.json")))
    return {p.id: p for p in loaded}


def get_profile(profile_id: str) -> Profile | None:
    return profiles().get(profile_id)


def control_of(profile_id: str, control_id: str) -> Control | None:
    profile = get_profile(profile_id)
    return profile.control(control_id) if profile else None


@lru_cache(maxsize=1)
def families() -> dict[str, dict]:
    """Every control family by its English name (as a ControlResult stores it) -> both languages."""
    return {c.family["en"]: c.family for p in profiles().values() for c in p.controls if c.family.get("en")}


def family_text(stored: str, profile_id: str = "", control_id: str = "", language: str | None = None) -> str:
    """A stored (English) family in `language` (default: the page's): the control's own when it is
    still in the catalogue (one English family may have two Chinese names in a profile), else the
    first family of that English name, else as stored."""
    control = control_of(profile_id, control_id) if profile_id else None
    if control is not None and control.family.get("en") == stored:
        return pick(control.family, language)
    texts = families().get(stored)
    return pick(texts, language) if texts else stored


def remedy_text(profile_id: str, control_id: str, stored: str, language: str | None = None) -> str:
    """A stored remedy in `language`: the catalogue's own remedy when it is that, else the checks'
    remedies translated as the Chinese report translates them (reports/summaries.py)."""
    from .reports.summaries import translate_summary

    if not stored:
        return ""
    control = control_of(profile_id, control_id)
    if control is not None and stored == control.remedy.get("en"):
        return pick(control.remedy, language)
    return translate_summary(stored, language)


def validate() -> None:
    """Fail at start-up if a catalogue names a check nobody registered or repeats a control id."""
    from .checks import REGISTRY

    for profile in profiles().values():
        seen = set()
        for control in profile.controls:
            if control.id in seen:
                raise ValueError(f"catalogue {profile.id}: control {control.id} appears twice")
            seen.add(control.id)
            unknown = [n for n in (*control.checks, *control.preconditions) if n not in REGISTRY]
            if unknown:
                raise ValueError(f"catalogue {profile.id}, control {control.id}: unknown checks {unknown}")
            if control.option and control.option not in profile.options:
                raise ValueError(f"catalogue {profile.id}, control {control.id}: unknown option {control.option}")


def matrix_markdown() -> str:
    """Every control of every profile as Markdown: clause (id and family), checks with what backs
    each (probe, query or attestation), and what the checks look at (the catalogue's evidence text).
    docs/compliance.md holds this output; a test keeps the two equal."""
    from .checks import PROOF_OF, load_all

    load_all()
    out = []
    for profile in profiles().values():
        out.append(f"### `{profile.id}` — {profile.name['en']}\n\n")
        out.append("| control | area | checks (what backs them) | what the checks look at |\n|---|---|---|---|\n")
        for c in profile.controls:
            option = f" (option `{c.option}`)" if c.option else ""
            checks = "<br>".join(f"`{n}` ({PROOF_OF.get(n, '?')})" for n in c.checks)
            evidence = c.evidence["en"].replace("|", "\\|").replace("\n", " ")
            out.append(f"| {c.id}{option} | {c.family['en']} | {checks} | {evidence} |\n")
        out.append("\n")
    return "".join(out)
