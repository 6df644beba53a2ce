from django.db.models import Q
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.audit.services import Source
from apps.core.errors import Conflict, NotFound, ServiceError, _
from apps.registry.models import Model
from apps.registry.selectors import restricted_to_token

from .. import services
from ..catalog import profiles
from ..models import (
    Attestation,
    ComplianceReport,
    ControlResult,
    EvaluationRun,
    ModelPolicy,
    ProfileAttachment,
    ReportState,
)
from ..storage import directory
from .serializers import (
    AttestationSerializer,
    AttestationUploadSerializer,
    ComplianceReportSerializer,
    ControlResultSerializer,
    EvaluationRunSerializer,
    ModelPolicySerializer,
    ProfileAttachmentSerializer,
    ProfileSpecSerializer,
    ReportRequestSerializer,
)


def _check_token_reaches(token, model) -> None:
    """A model-restricted token changes no other model's compliance settings: it does not exist."""
    if not restricted_to_token(Model.objects.filter(pk=model.pk), token).exists():
        raise NotFound("model_not_found", _("unknown model %(model)s") % {"model": repr(model.name)})


class ProfileViewSet(viewsets.ViewSet):
    """The shipped compliance profiles and their control catalogues (English and Chinese)."""

    action_perms = {"list": "compliance.view_profileattachment"}

    @extend_schema(responses={200: ProfileSpecSerializer(many=True)})
    def list(self, request):
        rows = [
            {
                "id": p.id,
                "framework": p.framework,
                "name": p.name,
                "default_language": p.default_language,
                "audit_retention_days": p.audit_retention_days,
                "options": p.options,
                "controls": [c.as_dict() for c in p.controls],
            }
            for p in profiles().values()
        ]
        return Response(ProfileSpecSerializer(rows, many=True).data)


class ProfileAttachmentViewSet(
    mixins.ListModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Profiles attached to the installation (no model) or to one model; attach and detach."""

    queryset = ProfileAttachment.objects.select_related("model", "attached_by")
    serializer_class = ProfileAttachmentSerializer
    filterset_fields = {"profile": ["exact"]}
    action_perms = {
        "list": "compliance.view_profileattachment",
        "create": "compliance.manage_profiles",
        "destroy": "compliance.manage_profiles",
    }

    def get_queryset(self):
        # A model-restricted token sees installation-wide attachments and its models' only.
        token = self.request.auth
        if not getattr(token, "restricted", False):
            return self.queryset
        return self.queryset.filter(Q(model__isnull=True) | Q(model__in=token.allowed_models.values("pk")))

    def create(self, request, *args, **kwargs):
        form = self.get_serializer(data=request.data)
        form.is_valid(raise_exception=True)
        model = form.validated_data.get("model")
        if model is not None:
            _check_token_reaches(request.auth, model)
        attachment = services.attach_profile(
            profile=form.validated_data["profile"],
            model_id=model.pk if model else None,
            options=form.validated_data.get("options"),
            actor=request.user,
            source=Source.from_request(request),
        )
        return Response(self.get_serializer(attachment).data, status=201)

    def destroy(self, request, *args, **kwargs):
        attachment = self.get_object()
        services.detach_profile(attachment_id=attachment.pk, actor=request.user, source=Source.from_request(request))
        return Response(status=204)


class ModelPolicyViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Per-model personal-data policy: does it receive PHI, and how are its requests de-identified.
    POST sets (creates or replaces) a model's policy."""

    queryset = ModelPolicy.objects.select_related("model", "updated_by")
    serializer_class = ModelPolicySerializer
    action_perms = {"list": "compliance.view_modelpolicy", "create": "compliance.manage_profiles"}

    def get_queryset(self):
        return restricted_to_token(self.queryset, self.request.auth, via="model")

    def create(self, request, *args, **kwargs):
        form = self.get_serializer(data=request.data)
        form.is_valid(raise_exception=True)
        _check_token_reaches(request.auth, form.validated_data["model"])
        policy = services.set_model_policy(
            model_id=form.validated_data["model"].pk,
            phi=form.validated_data.get("phi", False),
            deid_mode=form.validated_data["deid_mode"],
            answer_screen=form.validated_data.get("answer_screen"),
            numeric_inputs_reason=form.validated_data.get("numeric_inputs_reason"),
            actor=request.user,
            source=Source.from_request(request),
        )
        return Response(self.get_serializer(policy).data, status=200)


class EvaluateView(APIView):
    """Evaluate every attached profile now; returns the run (its results are under results/?run=)."""

    action_perms = {"post": "compliance.evaluate_controls"}

    @extend_schema(request=None, responses={201: EvaluationRunSerializer})
    def post(self, request):
        run = services.evaluate_now(actor=request.user, source=Source.from_request(request))
        return Response(EvaluationRunSerializer(run).data, status=201)


class EvaluationRunViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Evaluation history, newest first: posture over time (counts per run)."""

    queryset = EvaluationRun.objects.filter(finished_at__isnull=False)
    serializer_class = EvaluationRunSerializer
    filterset_fields = {"started_at": ["gte", "lt"], "trigger": ["exact"]}
    action_perms = {"list": "compliance.view_controlresult"}


class ControlResultViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Control results with their evidence and remedy; filter by run, profile, control or status."""

    queryset = ControlResult.objects.all()
    serializer_class = ControlResultSerializer
    filterset_fields = {
        "run": ["exact"],
        "profile": ["exact"],
        "control_id": ["exact"],
        "status": ["exact"],
        "evaluated_at": ["gte", "lt"],
    }
    action_perms = {"list": "compliance.view_controlresult"}


class AttestationViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Attestations for manual controls (procedure documents, restore drills) with an expiry."""

    queryset = Attestation.objects.select_related("uploaded_by")
    serializer_class = AttestationSerializer
    filterset_fields = {"profile": ["exact"], "control_id": ["exact"]}
    parser_classes = [MultiPartParser]
    action_perms = {"list": "compliance.view_attestation", "create": "compliance.add_attestation"}

    @extend_schema(request=AttestationUploadSerializer, responses={201: AttestationSerializer})
    def create(self, request, *args, **kwargs):
        form = AttestationUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        upload = form.validated_data["file"]
        att = services.upload_attestation(
            profile=form.validated_data["profile"],
            control_id=form.validated_data["control_id"],
            content=upload.read(),
            file_name=upload.name,
            expires_at=form.validated_data["expires_at"],
            note=form.validated_data["note"],
            actor=request.user,
            source=Source.from_request(request),
        )
        return Response(AttestationSerializer(att).data, status=201)


DOWNLOAD_FORMATS = ("pdf", "csv", "json", "pdf.sig", "csv.sig", "json.sig")
CONTENT_TYPES = {"pdf": "application/pdf", "csv": "text/csv", "json": "application/json"}


class ComplianceReportViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Signed compliance reports: request one (generated by a worker), follow its progress, download
    the PDF, CSV or JSON and each file's detached signature (downloads are audited)."""

    queryset = ComplianceReport.objects.select_related("requested_by")
    serializer_class = ComplianceReportSerializer
    filterset_fields = {"profile": ["exact"], "state": ["exact"]}
    action_perms = {
        "list": "compliance.view_compliancereport",
        "retrieve": "compliance.view_compliancereport",
        "create": "compliance.export_compliancereport",
        "download": "compliance.export_compliancereport",
    }

    @extend_schema(request=ReportRequestSerializer, responses={202: ComplianceReportSerializer})
    def create(self, request, *args, **kwargs):
        form = ReportRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        report = services.request_report(**form.validated_data, actor=request.user, source=Source.from_request(request))
        report.refresh_from_db()
        return Response(self.get_serializer(report).data, status=202)

    @extend_schema(
        parameters=[OpenApiParameter("file_format", str, enum=DOWNLOAD_FORMATS, description="default pdf")],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        report = self.get_object()
        fmt = request.query_params.get("file_format", "pdf")
        if fmt not in DOWNLOAD_FORMATS:
            raise ServiceError(
                "invalid_format",
                _("file_format must be one of %(download_formats)s")
                % {"download_formats": ", ".join(DOWNLOAD_FORMATS)},
                field="file_format",
            )
        if report.state != ReportState.DONE:
            raise Conflict(
                "report_not_ready",
                _("the report is %(state)s (%(progress)s%%)") % {"state": report.state, "progress": report.progress},
            )
        path = directory("reports") / report.files.get(fmt, "")
        if not report.files.get(fmt) or not path.is_file():
            raise NotFound(
                "report_file_missing",
                _("the %(fmt)s file of report %(report)s is missing") % {"fmt": fmt, "report": report.pk},
            )
        services.record_download(report=report, fmt=fmt, actor=request.user, source=Source.from_request(request))
        content_type = "application/json" if fmt.endswith(".sig") else CONTENT_TYPES[fmt]
        return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name, content_type=content_type)
