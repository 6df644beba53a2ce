from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.audit.services import Source

from .. import services
from ..models import ApiToken
from .serializers import ApiTokenCreatedSerializer, ApiTokenCreateSerializer, ApiTokenSerializer


class ApiTokenViewSet(viewsets.ReadOnlyModelViewSet):
    """Your API tokens. The token value is returned once, at creation; only its hash is kept."""

    serializer_class = ApiTokenSerializer
    filterset_fields = {"name": ["exact"], "revoked_at": ["isnull"]}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: there is no user
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user).select_related("user")

    @extend_schema(request=ApiTokenCreateSerializer, responses={201: ApiTokenCreatedSerializer})
    def create(self, request):
        form = ApiTokenCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        token, plaintext = services.issue_token(
            user=request.user,
            name=form.validated_data["name"],
            days=form.validated_data.get("days"),
            actor=request.user,
            source=Source.from_request(request),
        )
        token.token = plaintext
        return Response(ApiTokenCreatedSerializer(token).data, status=201)

    @extend_schema(request=None, responses={200: ApiTokenSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        token = services.revoke_token(
            token_id=self.get_object().pk, actor=request.user, source=Source.from_request(request)
        )
        return Response(ApiTokenSerializer(token).data)
