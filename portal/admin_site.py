"""The project's admin site. The project composes it (like urls.py), since it reaches into apps
above the floor (apps.accounts' audited password change), so it lives here and not in an app.

Django's site, except that
- changing one's own password goes through the audited service (apps.accounts.views.OwnPasswordChangeView);
- the bulk `delete_selected` action is offered nowhere: it would bypass the services (and their
  audit events) of any admin that ever allowed deleting, and no governed model is deleted from the admin;
- the index opens with the operator dashboard (apps.observability, docs/dashboard.md) and its JSON
  endpoint `dashboard/data.json`; the app list names third-party apps readably.

Installed as the default site by SovereignAdminConfig (INSTALLED_APPS), so `admin.site` and every
`@admin.register` keep working unchanged."""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _

# The stock app list shows a third-party app's label ("AXES", "OTP_TOTP"): say what each one holds.
APP_NAMES = {
    "auth": _("Users and roles"),
    "axes": _("Login lockouts"),
    "otp_totp": _("Second factor (TOTP devices)"),
    "auditlog": _("Field history"),
    "guardian": _("Object permissions"),
    "accounts": _("Accounts and tokens"),
    "audit": _("Audit log"),
    "keys": _("Key management"),
    "registry": _("Model registry"),
    "deployments": _("Deployments and servers"),
    "gateway": _("Gateway and chat models"),
    "compliance": _("Compliance"),
    "observability": _("Observability"),
}


class SovereignAdminSite(admin.AdminSite):
    index_template = "admin/sovereign_index.html"

    def __init__(self, name="admin"):
        super().__init__(name)
        self.disable_action("delete_selected")

    def get_urls(self):
        from apps.observability.views import dashboard_data

        own = [path("dashboard/data.json", self.admin_view(dashboard_data), name="dashboard-data")]
        return own + super().get_urls()

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        for app in apps:
            app["name"] = APP_NAMES.get(app["app_label"], app["name"])
        return sorted(apps, key=lambda app: str(app["name"]).lower()) if app_label is None else apps

    def index(self, request, extra_context=None):
        """The stock index with the dashboard on top: its first figures rendered into the page (no
        wait for the first poll), the recent privileged actions for whom the audit log is open
        (that read recorded), and a Content-Security-Policy that lets only the portal's scripts run."""
        from apps.core.source import Source
        from apps.observability.selectors import dashboard, privileged_actions
        from apps.observability.services import record_dashboard_read
        from apps.observability.views import DASHBOARD_CSP

        actions = privileged_actions(request.user)
        context = {"dashboard": dashboard(request.user), "privileged_actions": actions, **(extra_context or {})}
        response = super().index(request, context)
        if actions is not None:
            record_dashboard_read(actor=request.user, source=Source.from_request(request), shown=len(actions))
        response["Content-Security-Policy"] = DASHBOARD_CSP
        return response

    def password_change(self, request, extra_context=None):
        from django.contrib.admin.forms import AdminPasswordChangeForm  # the site's own-password form

        from apps.accounts.views import OwnPasswordChangeView

        request.current_app = self.name
        return OwnPasswordChangeView.as_view(
            form_class=AdminPasswordChangeForm,
            success_url=reverse("admin:password_change_done", current_app=self.name),
            extra_context={**self.each_context(request), **(extra_context or {})},
            template_name=self.password_change_template or "registration/password_change_form.html",
            via="admin",
        )(request)


class SovereignAdminConfig(AdminConfig):
    default_site = "portal.admin_site.SovereignAdminSite"
