"""The project's admin site. The project composes it (like urls.py), since it reaches into apps
above the floor (apps.accounts' audited password change), so it lives here and not in an app.

Django's site, except that
- changing one's own password goes through the audited service (apps.accounts.views.OwnPasswordChangeView);
- the bulk `delete_selected` action is offered nowhere: it would bypass the services (and their
  audit events) of any admin that ever allowed deleting, and no governed model is deleted from the admin.

Installed as the default site by SovereignAdminConfig (INSTALLED_APPS), so `admin.site` and every
`@admin.register` keep working unchanged."""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.urls import reverse


class SovereignAdminSite(admin.AdminSite):
    def __init__(self, name="admin"):
        super().__init__(name)
        self.disable_action("delete_selected")

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
