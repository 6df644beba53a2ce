from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from apps.audit.services import Source
from apps.core.errors import NotFound, ServiceError, _

from .. import imports, services
from ..models import ImportJob, Model, ModelVersion
from ..selectors import catalogue_visible_to, models_visible_to, restricted_to_token, versions_visible_to
from ..uploads import DiscardingUploadHandler, StagedUpload, StagingUploadHandler
from .serializers import (
    ImportJobSerializer,
    ImportRequestSerializer,
    ModelSerializer,
    ModelVersionSerializer,
    ShredSerializer,
    TritonLayoutSerializer,
    VersionUploadSerializer,
)


class ModelViewSet(viewsets.ReadOnlyModelViewSet):
    """The model catalogue. Models are created by uploading their first version."""

    serializer_class = ModelSerializer
    lookup_field = "name"
    filterset_fields = {"name": ["exact", "icontains"]}
    action_perms = {"list": None, "retrieve": None}  # scoped by the catalogue selector

    def get_queryset(self):
        return catalogue_visible_to(self.request.user, self.request.auth).prefetch_related("versions", "deployments")


class ModelVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Versions of one model. Upload with multipart POST; the file is validated, its signature
    read and the artifact stored encrypted (AES-256-GCM, data key wrapped by the KEK)."""

    serializer_class = ModelVersionSerializer
    parser_classes = [MultiPartParser, FormParser]  # uploads; the shred route takes JSON (urls.py)
    # shred checks registry.shred_artifact itself, after the lookup: out of scope is a 404.
    action_perms = {
        "list": None,
        "retrieve": None,
        "create": "registry.add_modelversion",
        "shred": None,
        "triton_layout": None,  # a read of what the caller already sees
    }
    lookup_field = "version"
    lookup_value_regex = r"\d+"
    filterset_fields = {"version": ["exact", "gte", "lte"]}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user, no model_name
            return ModelVersion.objects.none()
        return (
            versions_visible_to(self.request.user, self.request.auth)
            .filter(model__name=self.kwargs["model_name"])
            .select_related("model", "artifact__data_key")
        )

    def list(self, request, *args, **kwargs):
        if not models_visible_to(request.user, request.auth).filter(name=kwargs["model_name"]).exists():
            raise NotFound(
                "model_not_found", _("unknown model %(model_name)s") % {"model_name": repr(kwargs["model_name"])}
            )
        return super().list(request, *args, **kwargs)

    @extend_schema(request={"multipart/form-data": VersionUploadSerializer}, responses={201: ModelVersionSerializer})
    def create(self, request, model_name: str):
        token = request.auth
        mine = restricted_to_token(Model.objects.filter(name=model_name), token)
        if getattr(token, "restricted", False) and not mine.exists():
            # also refuses a new model: a restricted token reaches its models and nothing else
            raise NotFound("model_not_found", _("unknown model %(model_name)s") % {"model_name": repr(model_name)})
        source = Source.from_request(request)
        form = self._validated_upload(request, model_name, source)
        mv = services.register_model_version(
            model_name=model_name,
            data=form.validated_data["file"].read(),
            version=form.validated_data.get("version"),
            description=form.validated_data["description"],
            actor=request.user,
            source=source,
        )
        return Response(ModelVersionSerializer(mv).data, status=201)

    @extend_schema(request=ShredSerializer, responses={200: ModelVersionSerializer})
    @action(detail=True, methods=["post"])
    def shred(self, request, model_name: str, version: int):
        """Destroy the version's wrapped data key (crypto-shredding) and delete its ciphertext."""
        mv = self.get_object()
        if not request.user.has_perm("registry.shred_artifact"):
            self.permission_denied(request)
        body = ShredSerializer(data=request.data)
        if not body.is_valid() or not body.validated_data["reason"].strip():
            raise ServiceError("reason_required", _("say why the data key is destroyed"), field="reason")
        mv = services.shred_model_version(
            model_version_id=mv.pk,
            reason=body.validated_data["reason"],
            actor=request.user,
            source=Source.from_request(request),
        )
        mv.refresh_from_db()
        return Response(ModelVersionSerializer(mv).data)

    @extend_schema(request=TritonLayoutSerializer, responses={200: dict})
    @action(detail=True, methods=["post"], url_path="triton-layout")
    def triton_layout(self, request, model_name: str, version: int):
        """The Triton configuration of a language model version for a GPU backend — vLLM
        (`config.pbtxt` + `1/model.json`) or TensorRT-LLM's inflight_batcher_llm ensemble — rendered
        from the registry entry and parsed with Triton's own model-config protobuf before it is
        returned. Nothing is stored or deployed: an operator copies the files to the GPU host's
        model repository (docs/llm.md)."""
        mv = self.get_object()
        body = TritonLayoutSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        files = services.render_triton_layout(
            model_version=mv, backend=body.validated_data["backend"], options=body.validated_data.get("options") or {}
        )
        return Response({"backend": body.validated_data["backend"], "files": files})

    def _validated_upload(self, request, model_name: str, source: Source) -> VersionUploadSerializer:
        """Refusals made here, before the service sees the upload, are audited like the service's own."""
        upload = request.FILES.get("file")
        form = VersionUploadSerializer(data=request.data)
        try:
            if upload is not None and upload.size > settings.MAX_UPLOAD_BYTES:
                raise ServiceError(
                    "file_too_large",
                    _("the upload is %(size)s bytes; the limit is %(max_upload_bytes)s (SOVEREIGN_MAX_UPLOAD_BYTES)")
                    % {"size": upload.size, "max_upload_bytes": settings.MAX_UPLOAD_BYTES},
                    413,
                    "file",
                )
            form.is_valid(raise_exception=True)
        except (ServiceError, ValidationError) as err:
            error = err if isinstance(err, ServiceError) else ServiceError("invalid", str(err.detail))  # i18n-ok: DRF
            services.record_rejection(
                model_name=model_name,
                version=request.data.get("version"),
                size_bytes=upload.size if upload is not None else 0,
                error=error,
                actor=request.user,
                source=source,
            )
            raise
        return form


class ImportJobViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """GGUF imports (docs/llm.md). POST a multipart upload (`file`, `name`, `quant`, `version`,
    `description`): the file is encrypted into the staging directory as it arrives and a worker
    converts and registers it; GET the job for its state and progress. A server-side path is not
    accepted here (it would let a web caller make the portal read any file it can): operators on
    the host use `manage.py import_gguf FILE`."""

    serializer_class = ImportJobSerializer
    parser_classes = [MultiPartParser, FormParser]
    action_perms = {
        "list": "registry.add_modelversion",
        "retrieve": "registry.add_modelversion",
        "create": "registry.add_modelversion",
    }
    filterset_fields = {"state": ["exact"], "model_name": ["exact"]}

    def get_queryset(self):
        jobs = ImportJob.objects.select_related("result")
        if getattr(self, "swagger_fake_view", False):
            return jobs.none()
        user = self.request.user
        return jobs if user.is_superuser else jobs.filter(created_by=user)

    def initialize_request(self, request, *args, **kwargs):
        # Before anything parses the body (the CSRF check reads request.POST): GGUF uploads are
        # staged encrypted, never held in memory by the default handler.
        if request.method == "POST":
            user = getattr(request, "user", None)
            # A session user (authenticated by Django's middleware, so DRF's CSRF check will parse the
            # body before the permission check) who may not import stages nothing: the body is dropped.
            # Bearer-token callers are refused by DRF before their body is read.
            refused = user is not None and user.is_authenticated and not user.has_perm("registry.add_modelversion")
            request.upload_handlers = [DiscardingUploadHandler()] if refused else [StagingUploadHandler(request)]
        return super().initialize_request(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        # A staged upload no job took (refused, unauthorised, invalid form) is deleted now.
        files = getattr(getattr(request, "_request", request), "_files", None) or {}
        for staged in files.values() if hasattr(files, "values") else []:
            if isinstance(staged, StagedUpload) and not staged.claimed:
                staged.discard()
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(request={"multipart/form-data": ImportRequestSerializer}, responses={202: ImportJobSerializer})
    def create(self, request):
        source = Source.from_request(request)
        name = str(request.data.get("name", ""))[:63]
        token = request.auth
        if getattr(token, "restricted", False) and not restricted_to_token(Model.objects.filter(name=name), token):
            raise NotFound("model_not_found", _("unknown model %(name)s") % {"name": repr(name)})
        form = ImportRequestSerializer(data=request.data)
        staged = request.FILES.get("file")
        try:
            if not isinstance(staged, StagedUpload):
                raise ServiceError("file_required", _("send the GGUF as the multipart field 'file'"), field="file")
            form.is_valid(raise_exception=True)
        except (ServiceError, ValidationError) as err:
            error = err if isinstance(err, ServiceError) else ServiceError("invalid", str(err.detail))  # i18n-ok: DRF
            services.record_rejection(
                model_name=name,
                version=request.data.get("version"),
                size_bytes=getattr(staged, "size", 0) or 0,
                error=error,
                actor=request.user,
                source=source,
                extra={"format": "llm", "importer": "gguf"},
            )
            raise
        data = form.validated_data
        job = imports.create_import_job(
            staged=staged,
            model_name=data["name"],
            quant=data["quant"],
            version=data.get("version"),
            description=data["description"],
            actor=request.user,
            source=source,
        )
        return Response(ImportJobSerializer(job).data, status=202)
