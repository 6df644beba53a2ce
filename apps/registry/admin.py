from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.text import capfirst
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from apps.accounts.roles import ROLE_LABELS
from apps.accounts.services import grant_model_access, revoke_model_access
from apps.core.admin_utils import ReadOnlyAdmin, ServiceFormAdminMixin, run_service
from apps.core.errors import ServiceError
from apps.core.form_fields import IsoDateTimeField
from apps.core.source import Source

from . import services
from .changes import describe_all
from .models import Artifact, Model, ModelVersion
from .selectors import MODEL_PAGE_SECTIONS


class VersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ["version", "format", "sha256", "size_bytes", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


HISTORY_LIMIT = 20


@admin.register(Model)
class ModelAdmin(ReadOnlyAdmin):
    list_display = ["name", "description", "version_count", "created_at"]
    search_fields = ["name", "description"]
    inlines = [VersionInline]
    change_form_template = "admin/registry/model/change_form.html"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        model = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if model is not None:
            sections = [s for s in (section(request, model) for section in MODEL_PAGE_SECTIONS) if s]
            extra.update(
                sv_sections=sections, sv_grants=_grants(model), sv_history=_history(request, model, HISTORY_LIMIT)
            )
        return super().change_view(request, object_id, form_url, extra)

    def has_add_permission(self, request):
        return False  # a model is created by uploading its first version

    def get_urls(self):
        grants = path(
            "<path:object_id>/grants/", self.admin_site.admin_view(self.grants_view), name="registry_model_grants"
        )
        return [grants, *super().get_urls()]

    def grants_view(self, request, object_id):
        """Who may see, call or re-identify this model, until when, granted by whom; a security
        officer (accounts.manage_grants) grants and revokes here through grant_model_access /
        revoke_model_access, which apply the policy of powers (never to oneself, one's own service
        accounts or groups; invoke and re-identify only to a role that may invoke)."""
        model = self.get_object(request, unquote(object_id))
        if model is None:
            raise Http404(gettext("no such model"))
        if not self.has_view_permission(request, model):
            raise PermissionDenied
        may_grant = request.user.has_perm("accounts.manage_grants")
        form = GrantForm(request.POST if request.method == "POST" and "revoke" not in request.POST else None)
        if request.method == "POST":
            if not may_grant:
                raise PermissionDenied(gettext("only a security officer grants access to models"))
            here = HttpResponseRedirect(request.path)
            if "revoke" in request.POST:
                self._revoke(request, model)
                return here
            if form.is_valid():
                data = form.cleaned_data
                grantee = {"user_id": data["user"].pk} if data["user"] else {"group_id": data["group"].pk}
                done = run_service(
                    self,
                    request,
                    grant_model_access,
                    model_id=model.pk,
                    permission=data["permission"],
                    expires_at=data["expires_at"],
                    **grantee,
                )
                if done is not None:
                    self.message_user(
                        request,
                        gettext("%(who)s was granted %(permission)s on %(model)s.")
                        % {
                            "who": data["user"] or data["group"],
                            "permission": GRANT_LABELS[data["permission"]],
                            "model": model.name,
                        },
                        messages.SUCCESS,
                    )
                    return here
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Grants on %(model)s") % {"model": model.name},
            "opts": self.opts,
            "original": model,
            "sv_grants": _grants(model),
            "form": form if may_grant else None,
            "may_grant": may_grant,
            "model_url": reverse("admin:registry_model_change", args=(model.pk,)),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/registry/model/grants.html", context)

    def _revoke(self, request, model) -> None:
        kind, grantee, permission = (request.POST.get(k, "") for k in ("kind", "grantee", "permission"))
        if kind not in ("user", "group") or not grantee.isdigit() or permission not in GRANT_LABELS:
            self.message_user(request, gettext("Choose a grant to revoke."), messages.ERROR)
            return
        done = run_service(
            self,
            request,
            revoke_model_access,
            model_id=model.pk,
            permission=permission,
            **{f"{kind}_id": int(grantee)},
        )
        if done is not None:
            self.message_user(
                request,
                gettext("Revoked %(permission)s on %(model)s.")
                % {"permission": GRANT_LABELS[permission], "model": model.name},
                messages.SUCCESS,
            )

    @admin.display(description=_("versions"))
    def version_count(self, obj):
        return obj.versions.count()


GRANT_LABELS = {
    "view_model": _("view the model"),
    "invoke_model": _("invoke the model"),
    "reidentify": _("re-identify answers"),
}


class _GroupChoice(forms.ModelChoiceField):
    """A role's group in words: a Chinese page listed "admin, analyst, auditor…" (the groups' names)."""

    def label_from_instance(self, obj):
        return str(ROLE_LABELS.get(obj.name, obj.name))


class GrantForm(forms.Form):
    """A grant on one model to a person (or service account) or a group, with an optional expiry."""

    user = forms.ModelChoiceField(
        label=_("person or service account"), queryset=get_user_model().objects.none(), required=False
    )
    group = _GroupChoice(label=_("or a group"), queryset=Group.objects.none(), required=False)
    permission = forms.ChoiceField(label=_("permission"), choices=list(GRANT_LABELS.items()))
    expires_at = IsoDateTimeField(
        label=_("expires"), required=False, help_text=_("YYYY-MM-DD HH:MM:SS, in your time zone. Empty: no expiry.")
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = get_user_model().objects.filter(is_active=True).order_by("username")
        self.fields["group"].queryset = Group.objects.order_by("name")

    def clean(self):
        data = super().clean()
        if bool(data.get("user")) == bool(data.get("group")):
            raise forms.ValidationError(_("Choose a person or a group (one of the two)."))
        return data


def _grants(model) -> list[dict]:
    """Who may see or call the model (read-only here; grants change through the grant service)."""
    from apps.accounts.models import ModelGroupGrant, ModelUserGrant

    rows = []
    related = ("permission", "granted_by")
    for grant in ModelUserGrant.objects.filter(content_object=model).select_related("user", *related):
        rows.append({"kind": "user", "who": grant.user, "grant": grant, "label": _grant_label(grant)})
    for grant in ModelGroupGrant.objects.filter(content_object=model).select_related("group", *related):
        named = ROLE_LABELS.get(grant.group.name, grant.group.name)  # a role's group in words
        rows.append(
            {"kind": "group", "who": grant.group, "who_label": named, "grant": grant, "label": _grant_label(grant)}
        )
    return rows


def _grant_label(grant) -> str:
    code = grant.permission.codename
    return str(GRANT_LABELS.get(code, code))


def _history(request, model, limit: int):
    """The latest audit events about the model and its versions (newest first, `limit` of them),
    for someone who may read the audit log; showing them is a read of the log, recorded as the
    audit admin records its own (`audit.search`)."""
    from django.db import transaction
    from django.db.models import Q

    from apps.audit.selectors import events_visible_to
    from apps.audit.services import record_event

    if not request.user.has_perm("audit.view_auditevent"):
        return None
    version_ids = [str(pk) for pk in model.versions.values_list("pk", flat=True)]
    events = list(
        events_visible_to(request.user)
        .filter(
            Q(target_type="registry.model", target_id=str(model.pk))
            | Q(target_type="registry.modelversion", target_id__in=version_ids)
        )
        .order_by("-timestamp", "-id")[:limit]
    )
    with transaction.atomic():
        record_event(
            "audit.search",
            actor=request.user,
            source=Source.from_request(request),
            details={"admin": True, "model": model.pk, "rows": len(events)},
        )
    return events


# Refusals said in the words of the person uploading, not in the ONNX parser's or protobuf's.
UPLOAD_ERRORS = {
    "not_onnx": _(
        "This file is not an ONNX model, or it is damaged. Export the model to ONNX and upload the .onnx file."
    ),
    "invalid_onnx": _("The ONNX checker rejected this model. Check that it was exported completely."),
    "unsupported_dtype": _("The model uses a data type the portal cannot serve."),
    "unsupported_shape": _("The model has an input or output of unknown rank."),
    "onnx_external_data": _("The model keeps its weights in separate files: save it as one .onnx file."),
    "file_too_large": _("The file is larger than the upload limit."),
    "duplicate_version": _("This model already has that version: leave the version empty for the next one."),
    "invalid_model_name": _("Use lowercase letters, digits and hyphens for the model name."),
}
UPLOAD_ERROR_FIELDS = {"file": "upload", "version": "version_number", "name": "model_name"}


class UploadVersionForm(forms.ModelForm):
    model_name = forms.CharField(
        label=_("model name"), max_length=63, help_text=_("Existing or new model name, e.g. triage-classifier")
    )
    upload = forms.FileField(
        label=_("ONNX file"), help_text=_("ONNX file; validated, its signature read, stored encrypted")
    )
    version_number = forms.IntegerField(
        label=_("version"), min_value=1, required=False, help_text=_("Defaults to the next version")
    )
    description = forms.CharField(
        label=_("description"), required=False, widget=forms.Textarea, help_text=_("Used when the model is new")
    )

    class Meta:
        model = ModelVersion
        fields = []

    request = None  # set by ModelVersionAdmin.get_form
    registered = None

    def clean(self):
        """Register the upload here, through the service, so that a refusal shows on this form with
        what was typed kept, instead of on the list page with the form gone (issue 17)."""
        data = super().clean()
        if self.errors or self.request is None:
            return data
        try:
            self.registered = services.register_model_version(
                model_name=data["model_name"],
                data=data["upload"].read(),
                version=data.get("version_number"),
                description=data.get("description") or "",
                actor=self.request.user,
                source=Source.from_request(self.request),
            )
        except ServiceError as err:
            # The plain words and the code; the parser's own text (often protobuf's) is kept in the
            # `registry.version.rejected` event's details for whoever investigates.
            said = UPLOAD_ERRORS.get(err.code)
            text = f"{said} ({err.code})" if said else f"{capfirst(err.detail)} ({err.code})"
            self.add_error(UPLOAD_ERROR_FIELDS.get(err.field or ""), text)
        return data


@admin.register(ModelVersion)
class ModelVersionAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    list_display = ["model", "version", "format", "short_sha256", "size_bytes", "suite", "compatible", "created_at"]
    list_filter = ["format", "model"]
    search_fields = ["model__name", "sha256"]
    readonly_fields = [
        "model",
        "version",
        "format",
        "sha256",
        "size_bytes",
        "signature",
        "breaking_changes_said",
        "created_by",
        "created_at",
    ]
    # Registry knows nothing of deployments: apps/deployments/admin.py adds its Deploy action to this page.

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = UploadVersionForm
        form = super().get_form(request, obj, **kwargs)
        if obj is None:
            form = type(form.__name__, (form,), {"request": request})
        return form

    def get_fields(self, request, obj=None):
        return ["model_name", "upload", "version_number", "description"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        mv = form.registered  # registered by the form's clean(), through the service
        if mv is not None:
            obj.pk = mv.pk
            if mv.breaking_changes:
                messages.warning(
                    request,
                    gettext(
                        "%(version)s breaks callers of the previous version: %(changes)s. "
                        "A rollout onto it is refused unless forced."
                    )
                    % {"version": mv, "changes": describe_all(mv.breaking_changes)},
                )

    @admin.display(description=_("breaking changes"))
    def breaking_changes_said(self, obj):
        return describe_all(obj.breaking_changes) or "—"

    @admin.display(description=_("compatible with previous"), boolean=True)
    def compatible(self, obj):
        return not obj.breaking_changes

    @admin.display(description=_("sha256"))
    def short_sha256(self, obj):
        return obj.sha256[:12]

    @admin.display(description=_("suite"))
    def suite(self, obj):
        return obj.artifact.suite


@admin.register(Artifact)
class ArtifactAdmin(ReadOnlyAdmin):
    list_display = ["version", "suite", "kek_id", "ciphertext_bytes", "short_digest", "created_at", "shredded_at"]
    list_filter = [
        ("data_key__suite", admin.AllValuesFieldListFilter),
        ("data_key__kek_id", admin.AllValuesFieldListFilter),
    ]
    list_select_related = ["version__model", "data_key"]
    fields = [
        "version",
        "storage_name",
        "suite",
        "kek_id",
        "aad",
        "ciphertext_sha256",
        "ciphertext_bytes",
        "created_at",
        "shredded_at",
    ]  # the wrapped data key is deliberately not shown
    readonly_fields = fields
    change_list_template = "admin/registry/artifact/change_list.html"

    def changelist_view(self, request, extra_context=None):
        from apps.keys.selectors import key_inventory

        # The key inventory is an aggregate over these rows, so it is shown above them.
        return super().changelist_view(request, {**(extra_context or {}), "key_inventory": key_inventory()})

    def has_add_permission(self, request):
        return False

    # The data key's facts, named in the page's language (model properties have no verbose name: a Chinese
    # page read "Suite", "Kek id", "Shredded at: None").
    @admin.display(description=_("suite"))
    def suite(self, obj):
        return obj.suite

    @admin.display(description=_("kek id"))
    def kek_id(self, obj):
        return obj.kek_id

    @admin.display(description=_("destroyed at"))
    def shredded_at(self, obj):
        return obj.shredded_at or self.get_empty_value_display()  # a read-only field printed None

    @admin.display(description=_("ciphertext sha256"))
    def short_digest(self, obj):
        return obj.ciphertext_sha256[:12]
