from django.urls import path
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.routers import SimpleRouter

from .views import ImportJobViewSet, ModelVersionViewSet, ModelViewSet

router = SimpleRouter()
router.register("models", ModelViewSet, basename="model")
router.register("imports", ImportJobViewSet, basename="import")

urlpatterns = [
    *router.urls,
    path(
        "models/<str:model_name>/versions/",
        ModelVersionViewSet.as_view({"get": "list", "post": "create"}),
        name="model-version-list",
    ),
    path(
        "models/<str:model_name>/versions/<int:version>/",
        ModelVersionViewSet.as_view({"get": "retrieve"}),
        name="model-version-detail",
    ),
    path(
        "models/<str:model_name>/versions/<int:version>/shred/",
        ModelVersionViewSet.as_view({"post": "shred"}, parser_classes=[JSONParser, FormParser]),
        name="model-version-shred",
    ),
    path(
        "models/<str:model_name>/versions/<int:version>/triton-layout/",
        ModelVersionViewSet.as_view({"post": "triton_layout"}, parser_classes=[JSONParser]),
        name="model-version-triton-layout",
    ),
]
