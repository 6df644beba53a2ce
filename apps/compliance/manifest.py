"""The signed manifest of the installed code (等保 8.1.4.6 trusted verification).

`manage.py code_manifest --write` (run by `make run` after migrate, and by a deployment after it
installs the code) records the SHA-256 of every file under apps/, portal/ and inference_backend/
and, for every installed Python distribution, its version and the SHA-256 of its RECORD (pip's
list of the distribution's files with their hashes). The manifest is signed like a compliance
report (apps/compliance/reports/signing.py: the audit checkpoint key — ECDSA P-256 in the HSM with
PKCS#11, SM2 in 国密 mode) and written with its detached signature, both 0600, to
settings.CODE_MANIFEST_FILE and `<file>.sig`; the write is audited (`platform.code_manifest.write`).

`verify_manifest()` checks the signature with a trusted key, then recomputes everything and lists
what differs. The portal (portal/wsgi.py) and the Celery worker (portal/celery.py) call
`verify_at_start()` when they start: a mismatch is logged and audited
(`platform.code_manifest.mismatch`, outcome failure). The check `platform.code_manifest` runs the
same verification.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, record_event
from inference_backend.private_file import write_private

log = logging.getLogger(__name__)

FORMAT = "sovereign-code-manifest-v1"
ROOTS = ("apps", "portal", "inference_backend")
SKIP_DIRS = {"__pycache__"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
LIST_LIMIT = 20


def manifest_path() -> Path:
    return Path(settings.CODE_MANIFEST_FILE)


def signature_path() -> Path:
    path = manifest_path()
    return path.with_name(path.name + ".sig")


def code_base() -> Path:
    return Path(getattr(settings, "CODE_MANIFEST_BASE", None) or settings.BASE_DIR)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digests(base: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under the covered roots (bytecode caches left out:
    Python writes them itself)."""
    out = {}
    for root in ROOTS:
        top = base / root
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*")):
            rel = path.relative_to(base)
            if any(part in SKIP_DIRS for part in rel.parts) or path.suffix in SKIP_SUFFIXES:
                continue
            if path.is_file() and not path.is_symlink():
                out[rel.as_posix()] = _sha256_file(path)
            elif path.is_symlink():
                out[rel.as_posix()] = "symlink:" + str(path.readlink())
    return out


def distribution_digests() -> dict[str, str]:
    """{distribution name: "version sha256-of-RECORD"} as importlib.metadata finds them (the first
    of a name on sys.path, as for imports)."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = name.lower().replace("_", "-")
        if key in out:
            continue
        record = dist.read_text("RECORD")
        digest = hashlib.sha256(record.encode("utf-8")).hexdigest() if record is not None else "no-RECORD"
        out[key] = f"{dist.version} {digest}"
    return out


def build_manifest() -> dict:
    return {
        "format": FORMAT,
        "generated_at": timezone.now().isoformat(),
        "roots": list(ROOTS),
        "files": tree_digests(code_base()),
        "distributions": distribution_digests(),
    }


def _encode(manifest: dict) -> bytes:
    return json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False).encode("utf-8")


def write_manifest(*, actor=None, source: Source = SYSTEM) -> dict:
    """Build, sign and write the manifest and its signature; audited as `platform.code_manifest.write`."""
    from .reports.signing import sign_bytes

    manifest = build_manifest()
    data = _encode(manifest)
    path = manifest_path()
    sig = sign_bytes(data, path.name)
    with transaction.atomic():
        record_event(
            "platform.code_manifest.write",
            actor=actor,
            source=source,
            target_type="code_manifest",
            target_id=path.name[:64],
            target_display=str(path)[:200],
            details={
                "file": str(path),
                "sha256": hashlib.sha256(data).hexdigest(),
                "files": len(manifest["files"]),
                "distributions": len(manifest["distributions"]),
                "key_id": sig["statement"]["key_id"],
                "alg": sig["statement"]["alg"],
            },
        )
        write_private(path, data)
        write_private(signature_path(), json.dumps(sig, indent=1).encode("utf-8"))
    return manifest


@dataclass
class ManifestReport:
    status: str  # ok | missing | bad_signature | differs
    detail: str = ""
    key_id: str = ""
    generated_at: str = ""
    files: int = 0
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    distributions: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_evidence(self) -> dict:
        return {
            "status": self.status,
            "detail": self.detail,
            "manifest": str(manifest_path()),
            "signed_by": self.key_id,
            "generated_at": self.generated_at,
            "files": self.files,
            "changed": self.changed[:LIST_LIMIT],
            "missing": self.missing[:LIST_LIMIT],
            "added": self.added[:LIST_LIMIT],
            "distributions_changed": self.distributions[:LIST_LIMIT],
        }


def _dist_change(name: str, before: str | None, after: str | None) -> str:
    if before is None:
        return f"{name} {after.split(' ')[0]} installed since"
    if after is None:
        return f"{name} {before.split(' ')[0]} removed"
    old, new = before.split(" ")[0], after.split(" ")[0]
    return f"{name} {old} -> {new}" if old != new else f"{name} {old}: RECORD differs"


def verify_manifest() -> ManifestReport:
    """Check the signature (a trusted audit signing key), then compare the recorded digests with
    the code and distributions installed now."""
    from .reports.signing import ReportSignatureError, verify_file

    path, sig = manifest_path(), signature_path()
    if not path.is_file() or not sig.is_file():
        return ManifestReport("missing", f"no manifest at {path} (or no signature beside it)")
    try:
        key_id = verify_file(path, sig)
    except ReportSignatureError as err:
        return ManifestReport("bad_signature", str(err))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        recorded_files, recorded_dists = manifest["files"], manifest["distributions"]
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
    except (ValueError, KeyError, TypeError) as err:
        return ManifestReport("bad_signature", f"the signed manifest is not a {FORMAT}: {err}", key_id=key_id)
    now_files, now_dists = tree_digests(code_base()), distribution_digests()
    report = ManifestReport(
        "ok", key_id=key_id, generated_at=manifest.get("generated_at", ""), files=len(recorded_files)
    )
    report.changed = sorted(p for p, d in recorded_files.items() if p in now_files and now_files[p] != d)
    report.missing = sorted(p for p in recorded_files if p not in now_files)
    report.added = sorted(p for p in now_files if p not in recorded_files)
    report.distributions = sorted(
        _dist_change(name, recorded_dists.get(name), now_dists.get(name))
        for name in set(recorded_dists) | set(now_dists)
        if recorded_dists.get(name) != now_dists.get(name)
    )
    if report.changed or report.missing or report.added or report.distributions:
        report.status = "differs"
        report.detail = (
            f"{len(report.changed)} changed, {len(report.missing)} missing, {len(report.added)} added file(s); "
            f"{len(report.distributions)} distribution(s) differ"
        )
    return report


def verify_at_start(process: str) -> ManifestReport | None:
    """At the start of a serving process: verify, log, and audit a mismatch. Never stops the
    process (the compliance check fails and the event raises the alarm); never raises."""
    try:
        report = verify_manifest()
    except Exception:  # noqa: BLE001 - a start-up probe must not keep the portal from starting
        log.exception("the code manifest could not be verified")
        return None
    if report.ok:
        log.info("code manifest verified (%d files, signed by %s)", report.files, report.key_id)
        return report
    log.error("code manifest %s: %s", report.status, report.detail)
    if report.status == "missing" and settings.SOVEREIGN_ENV != "production":
        return report  # development without `make run`: the check says so, no event at every start
    try:
        with transaction.atomic():
            record_event(
                "platform.code_manifest.mismatch",
                actor=None,
                target_type="process",
                target_id=process,
                target_display=process,
                outcome=Outcome.FAILURE,
                error_code=f"code_manifest_{report.status}",
                details=report.as_evidence(),
            )
    except Exception:  # noqa: BLE001 - e.g. the database is not migrated yet
        log.exception("the code manifest mismatch could not be audited")
    return report
