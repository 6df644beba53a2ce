"""The API of chat-model governance: /api/v1/llm/ (chat policies, quotas, retained exchanges)
and /api/v1/usage/. Who may do what: docs/llm.md and docs/access-control.md."""

import csv
import io
import json

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, renderers, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.audit.services import Source
from apps.core.errors import NotFound, ServiceError, _
from apps.core.spreadsheet import safe_row
from apps.registry.models import Model
from apps.registry.selectors import restricted_to_token

from .. import selectors, services
from ..models import Quota
from .serializers import (
    ChatPolicySerializer,
    ExchangeContentSerializer,
    ExchangeDeleteSerializer,
    ExchangeSerializer,
    QuotaSerializer,
    UsageQuerySerializer,
    UsageRowSerializer,
)


def _check_token_reaches(token, model) -> None:
    """A model-restricted token changes nothing of another model: it does not exist for it."""
    if model is None:
        if getattr(token, "restricted", False):
            raise NotFound("model_not_found", _("a model-restricted token sets quotas of its own models only"))
        return
    if not restricted_to_token(Model.objects.filter(pk=model.pk), token).exists():
        raise NotFound("model_not_found", _("unknown model %(model)s") % {"model": repr(model.name)})


class ChatPolicyViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Chat models' policies: maximum tokens per call, allowed sampling, the enforced system prompt
    and what is kept of prompts and answers. Listed for the models the caller can see; POST sets
    (creates or replaces) one model's policy (admin, security officer)."""

    serializer_class = ChatPolicySerializer
    filterset_fields = {"model__name": ["exact"]}
    action_perms = {"list": None, "create": "gateway.manage_chatpolicy"}

    def get_queryset(self):
        return selectors.chat_policies_visible_to(self.request.user, self.request.auth)

    def create(self, request, *args, **kwargs):
        form = self.get_serializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        model = data.pop("model")
        _check_token_reaches(request.auth, model)
        policy = services.set_chat_policy(
            model_id=model.pk, actor=request.user, source=Source.from_request(request), **data
        )
        return Response(self.get_serializer(policy).data, status=200)


class QuotaViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Token quotas and per-minute limits per user, group or token, on one model or all. POST sets
    (creates or replaces) the quota of (scope, subject, model); DELETE removes it."""

    serializer_class = QuotaSerializer
    filterset_fields = {"scope": ["exact"], "model__name": ["exact"]}
    action_perms = {
        "list": "gateway.view_quota",
        "retrieve": "gateway.view_quota",
        "create": "gateway.manage_quota",
        "destroy": "gateway.manage_quota",
    }

    def get_queryset(self):
        qs = Quota.objects.select_related("model", "updated_by")
        token = self.request.auth
        if getattr(token, "restricted", False):
            return restricted_to_token(qs.filter(model__isnull=False), token, via="model")
        return qs

    def create(self, request, *args, **kwargs):
        form = self.get_serializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        model = data.pop("model", None)
        _check_token_reaches(request.auth, model)
        quota = services.set_quota(
            scope=data.pop("scope"),
            subject_id=data.pop("subject_id"),
            model_id=model.pk if model else None,
            actor=request.user,
            source=Source.from_request(request),
            **data,
        )
        return Response(self.get_serializer(quota).data, status=200)

    def destroy(self, request, *args, **kwargs):
        quota = self.get_object()
        services.delete_quota(quota_id=quota.pk, actor=request.user, source=Source.from_request(request))
        return Response(status=204)


class ExchangeViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Retained prompts and answers. The list is metadata (auditor; the security officer too, who
    handles deletion on request). Reading one decrypts it: the auditor only, from a session (never
    with a token), audited `llm.exchange.read`. DELETE wipes it on
    request and keeps a tombstone (security officer); no token may delete."""

    serializer_class = ExchangeSerializer
    filterset_fields = {"model_name": ["exact"], "username": ["exact"], "request_id": ["exact"]}
    action_perms = {
        "list": "gateway.view_retainedexchange",
        "retrieve": "gateway.view_retainedexchange_content",
        "destroy": "gateway.erase_retainedexchange",
    }
    token_writes_refused = True

    def get_queryset(self):
        return selectors.exchanges()

    @extend_schema(responses={200: ExchangeContentSerializer})
    def retrieve(self, request, *args, **kwargs):
        exchange_id = int(self.kwargs["pk"]) if str(self.kwargs["pk"]).isdigit() else 0
        source = Source.from_request(request)
        if hasattr(request.auth, "scopes"):
            services.record_exchange_read_refusal(
                exchange_id=exchange_id, actor=request.user, source=source, error_code="token_not_allowed"
            )
            raise ServiceError(
                "token_not_allowed", _("retained exchanges are read from a portal session, never with a token"), 403
            )
        content = services.read_exchange(exchange_id=exchange_id, actor=request.user, source=source)
        return Response(ExchangeContentSerializer(content).data)

    @extend_schema(
        request=ExchangeDeleteSerializer,
        parameters=[OpenApiParameter("reason", OpenApiTypes.STR, required=False)],
        responses={200: ExchangeSerializer},
    )
    def destroy(self, request, *args, **kwargs):
        exchange = self.get_object()
        reason = request.data.get("reason") if hasattr(request.data, "get") else None
        form = ExchangeDeleteSerializer(data={"reason": reason or request.query_params.get("reason", "")})
        if not form.is_valid():
            raise ServiceError("reason_required", _("say why the exchange is deleted (reason)"), field="reason")
        exchange = services.delete_exchange(
            exchange_id=exchange.pk,
            reason=form.validated_data["reason"],
            actor=request.user,
            source=Source.from_request(request),
        )
        return Response(self.get_serializer(exchange).data)


class CSVRenderer(renderers.BaseRenderer):
    """`?format=csv`: the view hands rows (a list of lists) or an error (a dict, sent as JSON)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, dict):
            return json.dumps(data).encode()
        out = io.StringIO()
        writer = csv.writer(out)
        for row in data:
            writer.writerow(safe_row(row))
        return out.getvalue().encode("utf-8")


class UsageView(APIView):
    """Calls and tokens per user, group, token or model over a period (`since` inclusive, `until`
    exclusive). Admin, security officer and auditor read everyone's; anyone else their own calls
    only. `format=csv` answers a spreadsheet-safe CSV."""

    action_perms = {"get": None}  # the selector scopes the rows
    renderer_classes = [renderers.JSONRenderer, CSVRenderer]

    @extend_schema(
        parameters=[
            UsageQuerySerializer,
            OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"], required=False),
        ],
        responses={200: UsageRowSerializer(many=True)},
    )
    def get(self, request):
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        rows = selectors.usage_summary(
            selectors.usage_visible_to(request.user, request.auth),
            group_by=params["group_by"],
            since=params.get("since"),
            until=params.get("until"),
            model=params.get("model"),
        )
        if request.accepted_renderer.format == "csv":
            key = params["group_by"]
            columns = [key, "name", "calls", "prompt_tokens", "completion_tokens", "total_tokens"]
            response = Response([columns, *([r[c] for c in columns] for r in rows)])
            response["Content-Disposition"] = f'attachment; filename="usage-by-{key}.csv"'
            return response
        return Response(rows)  # plain dicts from the selector; UsageRowSerializer documents them
