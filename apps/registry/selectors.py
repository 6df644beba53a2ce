"""Permission-aware reads of the catalogue: every list, detail and gateway route asks here.

- A global `registry.view_model` (admin, security officer, auditor roles) sees every model.
- Otherwise a user sees the models granted to them or their groups (view_model or invoke_model,
  unexpired), as django-guardian object permissions with an expiry (apps.accounts.models).
  Group grants reach persons only; a service account reaches what is granted to it by name.
- Invocation needs an unexpired `invoke_model` grant; no role has it globally.
A model outside these sets does not exist for the caller (404, never 403).
"""

from __future__ import annotations

from django.db.models import Exists, Q, QuerySet
from django.utils import timezone

from .models import Artifact, Model, ModelVersion


def _granted(user, codenames: tuple[str, ...]) -> Q:
    """Grants to the user by name, or to one of its groups — group grants reach persons only: a
    service account reaches exactly the models granted to it by name. Otherwise a grant to a
    role group ("every analyst") would also reach the service accounts that people own, and
    their owners would mint tokens for models nobody granted them."""
    from apps.accounts.models import ModelGroupGrant, ModelUserGrant, Profile

    live = Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    mine = ModelUserGrant.objects.filter(live, user=user, permission__codename__in=codenames)
    service_account = Profile.objects.filter(user_id=user.pk, is_service_account=True)
    ours = ModelGroupGrant.objects.filter(
        ~Exists(service_account), live, group__user=user, permission__codename__in=codenames
    )
    return Q(pk__in=mine.values("content_object_id")) | Q(pk__in=ours.values("content_object_id"))


def restricted_to_token(qs: QuerySet, token, via: str = "pk") -> QuerySet:
    """A model-restricted token reaches only its models, on every surface: the gateway and every
    API list, detail, upload, deployment and usage answer. Filters `qs` (models, or rows whose
    model is at `via`, e.g. "model") to those models; `token` is DRF's `request.auth` (None for a
    session, where nothing changes). Models outside it are then 404 like any unseen model."""
    if not getattr(token, "restricted", False):
        return qs
    return qs.filter(**{f"{via}__in": token.allowed_models.values("pk")})


def models_visible_to(user, token=None) -> QuerySet[Model]:
    if user is None or not user.is_authenticated or not user.is_active:
        return Model.objects.none()
    if user.has_perm("registry.view_model"):
        return restricted_to_token(Model.objects.all(), token)
    return restricted_to_token(Model.objects.filter(_granted(user, ("view_model", "invoke_model"))), token)


def models_invokable_by(user) -> QuerySet[Model]:
    """Used on the inference path: no global-permission lookup; one query with a subquery per
    grant table and one for the role, so a guest (or an analyst demoted to guest) cannot invoke
    through a grant given to one of their groups or left over from before."""
    from django.contrib.auth.models import Group

    from apps.accounts.roles import MAY_INVOKE

    if user is None or not user.is_active:
        return Model.objects.none()
    if user.is_superuser:
        return Model.objects.all()
    may_invoke = Group.objects.filter(user=user, name__in=MAY_INVOKE)
    return Model.objects.filter(Exists(may_invoke), _granted(user, ("invoke_model",)))


def catalogue_visible_to(user, token=None) -> QuerySet[Model]:
    """The catalogue (names, descriptions, status): everything for roles with view_catalogue,
    otherwise the models the user can see (either way, only a restricted token's own models)."""
    if user is not None and user.is_authenticated and user.is_active and user.has_perm("registry.view_catalogue"):
        return restricted_to_token(Model.objects.all(), token)
    return models_visible_to(user, token)


def versions_visible_to(user, token=None) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(model__in=models_visible_to(user, token))


def artifact_labels(data_key_ids: list[int]) -> dict[int, str]:
    """{data key id: "model vN"} for the artifacts those data keys protect: the label provider of
    the `artifact` purpose in the key inventory (registered in RegistryConfig.ready())."""
    rows = Artifact.objects.filter(data_key_id__in=data_key_ids).values_list(
        "data_key_id", "version__model__name", "version__version"
    )
    return {key_id: f"{name} v{version}" for key_id, name, version in rows}
