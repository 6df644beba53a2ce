from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy
from django.utils.translation import gettext_lazy as _

from . import views

app_name = "accounts"
urlpatterns = [
    # Everyone's login (settings.LOGIN_URL): the admin's own takes staff only.
    path("login/", views.PortalLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page=reverse_lazy("accounts:login")), name="logout"),
    path("2fa/setup/", views.totp_setup, name="2fa-setup"),
    path("2fa/verify/", views.totp_verify, name="2fa-verify"),
    path("preferences/", views.preferences, name="preferences"),
    # Everyone's own API tokens (issue, list, revoke); a token manager sees others' on the admin's list.
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="token-revoke"),
    # For everyone, analysts included (the admin's own page is for staff only).
    path(
        "password/",
        views.OwnPasswordChangeView.as_view(
            template_name="accounts/password_change.html",
            success_url=reverse_lazy("accounts:password-change-done"),
            extra_context={"site_header": "Sovereign", "title": _("Change your password")},
        ),
        name="password-change",
    ),
    path(
        "password/done/",
        auth_views.PasswordChangeDoneView.as_view(
            template_name="accounts/password_change_done.html", extra_context={"site_header": "Sovereign"}
        ),
        name="password-change-done",
    ),
]
