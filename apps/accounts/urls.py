from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("2fa/setup/", views.totp_setup, name="2fa-setup"),
    path("2fa/verify/", views.totp_verify, name="2fa-verify"),
]
