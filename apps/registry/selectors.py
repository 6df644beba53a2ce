"""Permission-aware reads of the catalogue: every list, detail and gateway route asks here.

Who may see, list and invoke which model is decided in one place, apps/registry/access.py (see its
docstring and docs/access-control.md, "One policy"); this module gathers that policy's facts through
the ORM — the caller's roles and profile, the grants it holds, its token's models — and turns its
answers into querysets. A model outside these sets does not exist for the caller (404, never 403).
The gateway gathers the same facts in its own fixed statement (apps/gateway/routing.py) and asks the
same functions, re-exported here for the apps above registry.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import QuerySet
from django.utils import timezone

from apps.accounts.models import ModelGroupGrant, ModelUserGrant, Profile
from apps.accounts.services import roles_of
from apps.core.errors import _

from . import access
from .access import (  # noqa: F401 - the policy's public names, for the apps above registry
    SESSION,
    Grant,
    Principal,
    Reach,
    Token,
    catalogue,
    deid_mode,
    gateway_scope_allows,
    invokable,
    may_invoke,
    may_reidentify,
    may_see,
    visible,
)
from .models import Artifact, Model, ModelVersion


def principal_of(user) -> Principal | None:
    """The access policy's facts about `user`: those its token lookup already gathered
    (`user.account_facts`), or read now. None for no user or an anonymous one."""
    if user is None or not user.is_authenticated:
        return None
    facts = getattr(user, "account_facts", None)
    if facts is not None:
        roles, roles_now, service_account = facts.standing_roles, facts.roles, facts.service_account
    else:
        roles, roles_now = roles_of(user, include_emergency=False), roles_of(user)
        service_account = Profile.objects.filter(user_id=user.pk, is_service_account=True).exists()
    return Principal(
        user_id=user.pk,
        active=user.is_active,
        superuser=user.is_superuser,
        service_account=service_account,
        roles=frozenset(roles),
        roles_now=frozenset(roles_now),
    )


def token_of(token) -> Token:
    """The access policy's facts about an API token (DRF's `request.auth`); a session (None) has no
    token limits."""
    if token is None:
        return SESSION
    ids = frozenset(token.allowed_models.values_list("pk", flat=True)) if token.restricted else frozenset()
    return Token(scopes=frozenset(token.scopes), restricted=bool(token.restricted), model_ids=ids)


class _Grants:
    """The grants `user` holds, read only if the policy asks (it does not for those who see all)."""

    def __init__(self, user):
        self.user = user

    def __iter__(self) -> Iterator[Grant]:
        fields = ("content_object_id", "permission__codename", "expires_at")
        for model_id, codename, expires_at in ModelUserGrant.objects.filter(user=self.user).values_list(*fields):
            yield Grant(model_id, codename, expires_at, via_group=False)
        for model_id, codename, expires_at in ModelGroupGrant.objects.filter(group__user=self.user).values_list(
            *fields
        ):
            yield Grant(model_id, codename, expires_at, via_group=True)


def _models(reach: Reach, qs: QuerySet | None = None, via: str = "pk") -> QuerySet:
    qs = Model.objects.all() if qs is None else qs
    if reach.every:
        return qs
    return qs.filter(**{f"{via}__in": sorted(reach.ids)}) if reach.ids else qs.none()


def _ask(decision, user, token) -> QuerySet[Model]:
    principal = principal_of(user)
    if principal is None:
        return Model.objects.none()
    return _models(decision(principal, token_of(token), _Grants(user), timezone.now()))


def restricted_to_token(qs: QuerySet, token, via: str = "pk") -> QuerySet:
    """A model-restricted token reaches only its models, on every surface: the gateway and every
    API list, detail, upload, deployment and usage answer. Filters `qs` (models, or rows whose
    model is at `via`, e.g. "model") to those models; `token` is DRF's `request.auth` (None for a
    session, where nothing changes). Models outside it are then 404 like any unseen model."""
    if not getattr(token, "restricted", False):
        return qs
    return _models(access.token_reach(token_of(token)), qs, via)


def models_visible_to(user, token=None) -> QuerySet[Model]:
    return _ask(visible, user, token)


def models_invokable_by(user, token=None) -> QuerySet[Model]:
    """The models `user` may invoke (with `token`, when given). The gateway asks the same policy in
    its own statement (apps/gateway/routing.py)."""
    return _ask(invokable, user, token)


def catalogue_visible_to(user, token=None) -> QuerySet[Model]:
    """The catalogue (names, descriptions, status): everything for roles with view_catalogue,
    otherwise the models the user can see (either way, only a restricted token's own models)."""
    return _ask(catalogue, user, token)


def versions_visible_to(user, token=None) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(model__in=models_visible_to(user, token))


def artifact_labels(data_key_ids: list[int]) -> dict[int, str]:
    """{data key id: "model vN"} for the artifacts those data keys protect: the label provider of
    the `artifact` purpose in the key inventory (registered in RegistryConfig.ready())."""
    rows = Artifact.objects.filter(data_key_id__in=data_key_ids).values_list(
        "data_key_id", "version__model__name", "version__version"
    )
    return {key_id: f"{name} v{version}" for key_id, name, version in rows}


def open_artifact_file(version_id: int, name: str) -> bytes:
    """The plaintext of one file of a language model's artifact set, decrypted in memory and
    checked against its recorded SHA-256 (the gateway counts tokens with `tokenizer.json`).
    ServiceError: 404 `artifact_file_not_found`, 409 `data_key_destroyed` after a shred, 400
    `ciphertext_invalid`, 500 `artifact_integrity_failed`."""
    import hashlib
    import hmac
    import io

    from apps.core.errors import NotFound, ServiceError
    from apps.keys.services import open_stream

    from .models import ArtifactFile

    found = (
        ArtifactFile.objects.select_related("artifact__data_key")
        .filter(artifact__version_id=version_id, name=name)
        .first()
    )
    if found is None:
        raise NotFound(
            "artifact_file_not_found",
            _("model version %(version_id)s has no file %(name)s") % {"version_id": version_id, "name": repr(name)},
        )
    out = io.BytesIO()
    with found.path.open("rb") as src:
        open_stream(src, out, found.aad.encode("utf-8"), data_key=found.artifact.data_key)
    data = out.getvalue()
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), found.sha256):
        raise ServiceError(
            "artifact_integrity_failed",
            _("%(name)s of model version %(version_id)s fails its digest") % {"name": name, "version_id": version_id},
            500,
        )
    return data


def latest_integrity_run():
    """The newest artifact verification run (apps/registry/integrity.py), or None."""
    from .models import IntegrityRun

    return IntegrityRun.objects.order_by("-finished_at", "-pk").first()


def allowed_formats() -> dict[str, tuple[str, ...]]:
    """What the registry accepts, for the compliance checks: {version format: file names} (an ONNX
    version is one file; a language model's set holds only these names, apps/registry/llm.py)."""
    from .llm import ALLOWED_FILES
    from .models import ModelFormat

    return {ModelFormat.ONNX.value: ("model.onnx",), ModelFormat.LLM.value: tuple(ALLOWED_FILES)}


# The model page (issue 17) shows, below the model and its versions, sections that higher layers
# add: registry knows nothing of deployments or the gateway, so apps/deployments/admin.py adds the
# live versions and replicas, apps/gateway the usage. Each is a callable (request, model) returning
# a dict {"id", "title", "template", ...its context} or None (nothing to show to that person).
MODEL_PAGE_SECTIONS: list = []


def add_model_page_section(section):
    MODEL_PAGE_SECTIONS.append(section)
    return section
