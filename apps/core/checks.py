"""System checks of the production guard (apps/core/production.py). `check --deploy` warns about
every weakness SOVEREIGN_INSECURE_OVERRIDE lets a production process run with, so the override
cannot be forgotten; the compliance check settings.deploy_check then fails on these warnings."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register

from .production import OVERRIDE_VAR, in_effect


@register(Tags.security, deploy=True)
def insecure_override(app_configs, **kwargs) -> list[Warning]:
    return [
        Warning(
            f"{OVERRIDE_VAR} allows {name}: {problem}",
            hint=f"Fix the setting and remove {name} from {OVERRIDE_VAR} (docs/production.md).",
            id="sovereign.W001",
        )
        for name, problem in in_effect(settings).items()
    ]
