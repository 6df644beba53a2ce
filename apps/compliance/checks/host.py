"""Checks of the host: what is installed in the portal's Python environment."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from django.conf import settings

from . import FAIL, PASS, CheckResult, register
from .settings import override_evidence, override_note

LIST_LIMIT = 50
# Required when listed in requirements.txt; requirements-models.txt (the demo models, `make run`)
# may be installed or not, and when it is its pins must hold too.
REQUIREMENT_FILES = (("requirements.txt", True), ("requirements-models.txt", False))


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: Path) -> list[str]:
    """The requirement lines of a pip requirements file (comments, options and hash lines dropped)."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip().rstrip("\\").strip()
        if line and not line.startswith("-"):
            out.append(line)
    return out


def read_allowlist(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {canonical(ln.split("#")[0].strip()) for ln in path.read_text().splitlines() if ln.split("#")[0].strip()}


def installed_distributions() -> dict:
    """{canonical name: Distribution} as importlib.metadata finds them on sys.path; the first one
    of a name wins, as it does for imports."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist)
    return found


def dependency_closure(roots, installed: dict) -> set[str]:
    """The names reachable from the pinned requirements through the installed distributions'
    `Requires-Dist` (environment markers evaluated, extras followed)."""
    from packaging.requirements import InvalidRequirement, Requirement

    seen: set[tuple[str, frozenset]] = set()
    todo = [(canonical(r.name), frozenset(r.extras)) for r in roots]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = installed.get(name)
        if dist is None:
            continue
        for spec in dist.requires or []:
            try:
                req = Requirement(spec)
            except InvalidRequirement:
                continue
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((canonical(req.name), frozenset(req.extras)))
    return {name for name, _ in seen}


@register("platform.minimal_install", proof="query")
def minimal_install(ctx) -> CheckResult:
    """Reads the installed distributions (importlib.metadata), not only requirements.txt: every
    installed distribution must be a pinned requirement or in its dependency closure (or on the
    allow-list file), every pin must match the installed version; DEBUG off."""
    from packaging.requirements import Requirement

    installed = installed_distributions()
    roots, problems, unpinned, mismatched, missing = [], [], [], [], []
    files = {}
    for name, required in REQUIREMENT_FILES:
        path = settings.BASE_DIR / name
        if not path.is_file():
            if required:
                problems.append(f"{name} is missing")
            continue
        lines = read_requirements(path)
        files[name] = len(lines)
        for line in lines:
            req = Requirement(line)
            roots.append(req)
            pins = [s for s in req.specifier if s.operator == "=="]
            if not pins:
                unpinned.append(line)
            dist = installed.get(canonical(req.name))
            if dist is None:
                if required:
                    missing.append(req.name)
            elif not req.specifier.contains(dist.version, prereleases=True):
                mismatched.append(f"{req.name} {dist.version} installed, {name} pins {req.specifier}")
    allowlist_path = Path(settings.INSTALL_ALLOWLIST_FILE)
    allowed = read_allowlist(allowlist_path)
    needed = dependency_closure(roots, installed)
    extras = sorted(n for n in installed if n not in needed and n not in allowed)
    evidence = {
        "requirement_files": files,
        "installed": len(installed),
        "required_closure": len(needed & set(installed)),
        "not_required": [f"{n} {installed[n].version}" for n in extras][:LIST_LIMIT],
        "version_mismatch": mismatched[:LIST_LIMIT],
        "pinned_not_installed": missing[:LIST_LIMIT],
        "unpinned": unpinned[:LIST_LIMIT],
        "allowlist": str(allowlist_path),
        "allowed_extras": sorted(n for n in installed if n in allowed and n not in needed),
        "DEBUG": settings.DEBUG,
    }
    evidence.update(override_evidence("debug"))
    if extras:
        problems.append(f"{len(extras)} installed distribution(s) no requirement needs: {', '.join(extras[:10])}")
    if mismatched:
        problems.append(f"{len(mismatched)} pinned version(s) differ from the installed ones")
    if missing:
        problems.append(f"{len(missing)} pinned requirement(s) not installed: {', '.join(missing[:10])}")
    if unpinned:
        problems.append(f"{len(unpinned)} unpinned requirement(s)")
    if settings.DEBUG:
        problems.append("DEBUG is on")
    if problems or "insecure_override" in evidence:
        return CheckResult(
            FAIL,
            "; ".join(problems or ["DEBUG allowed"]) + override_note(evidence),
            evidence,
            "Uninstall the listed distributions (or add a requirement for them), install the pinned versions "
            "(`pip install -r requirements.txt`), pin every requirement with == and set SOVEREIGN_DEBUG=false.",
        )
    return CheckResult(
        PASS,
        f"{len(installed)} installed distribution(s), all required by {sum(files.values())} pinned requirement(s) "
        "or allow-listed, versions as pinned; DEBUG off",
        evidence,
    )


@register("platform.code_manifest", proof="probe")
def code_manifest(ctx) -> CheckResult:
    """等保 8.1.4.6: the signed manifest of the installed code verifies (trusted signing key) and
    every file and distribution it records is as recorded now (apps/compliance/manifest.py)."""
    from ..manifest import verify_manifest

    report = verify_manifest()
    evidence = report.as_evidence()
    if report.status == "missing":
        return CheckResult(
            FAIL,
            "no signed code manifest: the installed code cannot be verified",
            evidence,
            "Run `manage.py code_manifest --write` at install or deploy (make run does it).",
        )
    if report.status == "bad_signature":
        return CheckResult(
            FAIL,
            f"the code manifest's signature does not verify: {report.detail}",
            evidence,
            "Find out who changed the manifest; reinstall the code from a trusted source and write a new manifest.",
        )
    if not report.ok:
        first = (report.changed + report.missing + report.added + report.distributions)[:5]
        return CheckResult(
            FAIL,
            f"the installed code differs from the signed manifest ({report.detail}): {', '.join(first)}",
            evidence,
            "Find out what changed the listed files; reinstall from a trusted source, or, for an intended "
            "deployment, write a new manifest with `manage.py code_manifest --write`.",
        )
    return CheckResult(
        PASS,
        f"{report.files} file(s) and the installed distributions match the manifest signed by {report.key_id} "
        f"at {report.generated_at[:16]}",
        evidence,
    )


def listening_sockets() -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state in this host's network namespace, read
    from /proc/net/tcp and /proc/net/tcp6 (Linux). Raises OSError where they do not exist."""
    import ipaddress

    found = []
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except FileNotFoundError:
            if width == 8:
                raise
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 4 or parts[3] != "0A":  # 0A: TCP_LISTEN
                continue
            hex_addr, hex_port = parts[1].split(":")
            raw = bytes.fromhex(hex_addr)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            addr = ipaddress.ip_address(raw)
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                addr = addr.ipv4_mapped
            found.append((str(addr), int(hex_port, 16)))
    return found


def _is_loopback(address: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address).is_loopback


def _internal_services() -> dict[str, int]:
    """The configured internal ports, plus the port of every registered Triton on this host."""
    from urllib.parse import urlsplit

    from apps.deployments.models import InferenceServer

    services = dict(settings.LISTEN_INTERNAL)
    for name, url in InferenceServer.objects.values_list("name", "http_url"):
        parts = urlsplit(url)
        if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port:
            services.setdefault(f"triton {name}", parts.port)
    return services


@register("platform.listening", proof="query")
def listening(ctx) -> CheckResult:
    """等保 8.1.3 boundary protection, as far as this host shows it: the sockets actually in LISTEN
    state (the kernel's table) for each configured service; an internal one (portal behind the data
    plane, Triton's HTTP, gRPC and metrics ports, SOVEREIGN_INTERNAL_PORTS) on a non-loopback
    address fails. The public data plane's addresses are listed."""
    internal = _internal_services()
    try:
        sockets = listening_sockets()
    except OSError as err:
        return CheckResult(
            FAIL,
            f"the listening sockets cannot be read on this host ({err.strerror or err})",
            {"error": str(err)},
            "Run the portal on Linux (the check reads /proc/net/tcp), or attest the exposure of every port.",
        )
    by_port: dict[int, list[str]] = {}
    for address, port in sockets:
        by_port.setdefault(port, []).append(address)
    seen_internal = {name: sorted(set(by_port.get(port, []))) for name, port in internal.items()}
    exposed = [
        f"{name} listens on {addr}:{internal[name]}"
        for name, addrs in seen_internal.items()
        for addr in addrs
        if not _is_loopback(addr)
    ]
    public = {f"{name} :{port}": sorted(set(by_port.get(port, []))) for name, port in settings.LISTEN_PUBLIC.items()}
    evidence = {
        "probed": "/proc/net/tcp, /proc/net/tcp6 (LISTEN sockets of this host)",
        "internal": {f"{name} :{port}": seen_internal[name] or "not listening here" for name, port in internal.items()},
        "public": {k: v or "not listening here" for k, v in public.items()},
        "tls_redirect": settings.SECURE_SSL_REDIRECT,
        "exposed": exposed,
    }
    if exposed:
        return CheckResult(
            FAIL,
            f"{len(exposed)} internal service socket(s) reachable beyond this host: " + "; ".join(exposed[:5]),
            evidence,
            "Bind the listed services to 127.0.0.1 (Triton: --http-address/--grpc-address/--metrics-address, as "
            "inference_backend/server.py does; gunicorn: --bind 127.0.0.1:PORT); expose only the data plane, "
            "behind TLS.",
        )
    listening_count = sum(1 for v in seen_internal.values() if v)
    return CheckResult(
        PASS,
        f"{listening_count} internal service(s) listening here, all on loopback; public: "
        + ", ".join(f"{k} on {', '.join(v) or '—'}" for k, v in public.items()),
        evidence,
    )
