"""Where GGUF uploads wait for their import task: ciphertext under an ephemeral data key
(apps/registry/uploads.py writes it, apps/registry/tasks.py reads and deletes it). A
subdirectory of the artifact store unless SOVEREIGN_IMPORT_STAGING_DIR says otherwise; the web
process and the workers must share it."""

from pathlib import Path

from django.conf import settings


def staging_dir() -> Path:
    configured = getattr(settings, "IMPORT_STAGING_DIR", "")
    return Path(configured) if configured else settings.ARTIFACT_DIR / "staging"
