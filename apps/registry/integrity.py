"""Verifying stored artifacts for real: decrypt a sample through the key path a deployment uses
(the wrapped data key unwrapped by the KEK provider — the HSM in production —, every segment's
AES-GCM or SM4-GCM tag authenticated) and recompute the plaintext SHA-256 against the digest
recorded at upload. Each run is recorded (`IntegrityRun`) and audited
(`registry.integrity.verify`, outcome failure when any artifact failed); Celery beat runs it
(`registry-verify-artifacts`, settings.INTEGRITY_VERIFY_SECONDS) and `make run` once at start
(`manage.py verify_artifacts`). The plaintext goes into a hash, never to disk.

The compliance check `registry.artifact_integrity` reads the newest run
(`selectors.latest_integrity_run`). Other apps call it as `services.verify_artifacts`."""

from __future__ import annotations

import hashlib
import hmac
import random

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, record_event
from apps.core.errors import ServiceError, _
from apps.keys import services as keys
from inference_backend import envelope, stream

from .models import Artifact, IntegrityRun

DETAIL_LIMIT = 50


class _HashSink:
    """A write-only file object that hashes and counts what the decryption writes."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.bytes = 0

    def write(self, data) -> int:
        self.hash.update(data)
        self.bytes += len(data)
        return len(data)


def _verify_file(path, aad: str, expected_sha256: str, data_key) -> tuple[int, str, str]:
    """(plaintext bytes, failure code, reason); code "" when the file decrypts and matches."""
    try:
        with open(path, "rb") as src:
            head = src.read(len(stream.MAGIC) + 1)
            src.seek(0)
            if head == stream.MAGIC + bytes([envelope.FORMAT_VERSION]):
                data = keys.open_sealed(src.read(), aad.encode("utf-8"), data_key=data_key)  # format 1
                sink = _HashSink()
                sink.write(data)
                del data
            else:
                sink = _HashSink()
                keys.open_stream(src, sink, aad.encode("utf-8"), data_key=data_key)
    except FileNotFoundError:
        return 0, "artifact_missing", "the ciphertext file is missing"
    except OSError as err:
        return 0, "artifact_unreadable", f"the ciphertext file cannot be read: {err.strerror or err}"
    except (ServiceError, envelope.ArtifactDecryptError, stream.StreamError) as err:
        code = getattr(err, "code", "ciphertext_invalid")
        detail = getattr(err, "detail", None) or str(err)
        return 0, code, str(detail)[:300]
    if not hmac.compare_digest(sink.hash.hexdigest(), expected_sha256):
        return sink.bytes, "digest_mismatch", "the plaintext's SHA-256 differs from the digest recorded at upload"
    return sink.bytes, "", ""


def verify_artifact(artifact: Artifact) -> tuple[int, list[dict]]:
    """Decrypt every file of one artifact and compare digests: (plaintext bytes, failures)."""
    failures, total = [], 0
    files = list(artifact.files.all())
    targets = [(f.name, f.path, f.aad, f.sha256) for f in files] or [
        ("", artifact.path, artifact.aad, artifact.version.sha256)
    ]
    for name, path, aad, sha in targets:
        n, code, reason = _verify_file(path, aad, sha, artifact.data_key)
        total += n
        if code:
            failures.append(
                {
                    "artifact": artifact.pk,
                    "version": str(artifact.version),
                    "storage_name": path.name,
                    "file": name,
                    "code": code,
                    "reason": reason,
                }
            )
    return total, failures


def _sample(size: int) -> tuple[int, list[Artifact]]:
    live = Artifact.objects.live()
    ids = list(live.values_list("pk", flat=True))
    chosen = ids if len(ids) <= size else random.SystemRandom().sample(ids, size)
    rows = live.filter(pk__in=chosen).select_related("version__model", "data_key").prefetch_related("files")
    return len(ids), list(rows.order_by("pk"))


def verify_artifacts(*, sample_size: int | None = None, actor=None, source: Source = SYSTEM) -> IntegrityRun:
    """Verify a sample (settings.INTEGRITY_SAMPLE_SIZE; every live artifact when there are no more)
    and record the run with its audit event in one transaction. An artifact shredded while the run
    looked at it is left out (its file goes with its key)."""
    size = sample_size if sample_size is not None else settings.INTEGRITY_SAMPLE_SIZE
    if size < 1:
        raise ServiceError("invalid_sample_size", _("the sample size must be at least 1"), field="sample_size")
    started = timezone.now()
    live_count, artifacts = _sample(size)
    verified, sampled, plaintext, failures, ids = 0, 0, 0, [], []
    for art in artifacts:
        n, failed = verify_artifact(art)
        if failed and Artifact.objects.filter(pk=art.pk, data_key__destroyed_at__isnull=False).exists():
            continue  # shredded meanwhile: not a failure of integrity
        sampled += 1
        ids.append(art.pk)
        plaintext += n
        if failed:
            failures.extend(failed)
        else:
            verified += 1
    with transaction.atomic():
        run = IntegrityRun.objects.create(
            started_at=started,
            finished_at=timezone.now(),
            live_artifacts=live_count,
            sampled=sampled,
            verified=verified,
            plaintext_bytes=plaintext,
            failures=failures,
            artifact_ids=ids,
        )
        record_event(
            "registry.integrity.verify",
            actor=actor,
            source=source,
            target=run,
            outcome=Outcome.FAILURE if failures else Outcome.SUCCESS,
            error_code="artifact_integrity_failed" if failures else "",
            details={
                "live_artifacts": live_count,
                "sampled": sampled,
                "verified": verified,
                "plaintext_bytes": plaintext,
                "failures": failures[:DETAIL_LIMIT],
            },
        )
    return run
