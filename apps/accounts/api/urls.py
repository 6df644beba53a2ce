from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("tokens", views.ApiTokenViewSet, basename="token")
router.register("users", views.UserViewSet, basename="user")
router.register("grants", views.UserGrantViewSet, basename="grant")
router.register("group-grants", views.GroupGrantViewSet, basename="group-grant")
router.register("service-accounts", views.ServiceAccountViewSet, basename="service-account")
router.register("break-glass", views.EmergencyAccessViewSet, basename="break-glass")
urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    path("login/", views.LoginView.as_view(), name="login"),
    *router.urls,
]
