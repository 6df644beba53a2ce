"""Permission-aware reads of the catalogue. Until per-model grants exist (issue 3) an active
user sees every model; everything that asks "may this user see/invoke X" goes through here."""

from django.db.models import QuerySet

from .models import Model, ModelVersion


def models_visible_to(user) -> QuerySet[Model]:
    if user is None or not user.is_active:
        return Model.objects.none()
    return Model.objects.all()


def versions_visible_to(user) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(model__in=models_visible_to(user))
