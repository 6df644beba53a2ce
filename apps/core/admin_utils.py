"""Admin helpers: governed models are written through services only, so admin change forms
are read-only and admin writes are explicit forms or actions that call a service."""

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.text import capfirst

from apps.core.errors import ServiceError
from apps.core.source import Source


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def run_service(modeladmin, request, func, **kwargs):
    """Call a service with the admin user as actor; show a ServiceError as a message."""
    try:
        return func(actor=request.user, source=Source.from_request(request), **kwargs)
    except ServiceError as err:
        modeladmin.message_user(request, f"{capfirst(err.detail)} ({err.code})", messages.ERROR)
        return None


class ServiceFormAdminMixin:
    """For add forms whose save_model calls a service: when the service refused (and said why in
    a message), go back to the list instead of to a change page of an object that does not exist."""

    def response_add(self, request, obj, post_url_continue=None):
        if obj.pk is None:
            opts = self.model._meta
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        return super().response_add(request, self._saved(obj), post_url_continue)

    def log_addition(self, request, obj, message):
        if obj.pk is not None:
            return super().log_addition(request, self._saved(obj), message)
        return None

    def _saved(self, obj):
        # save_model only copied the service's pk onto the unsaved form instance; its other fields
        # (foreign keys, generated values) live on the row the service wrote.
        return self.model._default_manager.get(pk=obj.pk)
