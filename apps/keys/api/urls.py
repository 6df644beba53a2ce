from django.urls import path
from rest_framework.routers import SimpleRouter

from .views import KekRotationViewSet, KeyInventoryView, RetireView, RotateView

router = SimpleRouter()
router.register("rotations", KekRotationViewSet, basename="kek-rotation")
urlpatterns = [
    path("inventory/", KeyInventoryView.as_view(), name="key-inventory"),
    path("rotate/", RotateView.as_view(), name="kek-rotate"),
    path("<int:pk>/retire/", RetireView.as_view(), name="kek-retire"),
    *router.urls,
]
