from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.audit.services import Source
from apps.core.errors import ServiceError, _

from .. import services
from ..models import KekRotation
from ..selectors import key_inventory
from .serializers import KekRotationSerializer, KeyInventorySerializer, RotationRequestSerializer


class KeyInventoryView(APIView):
    """Every KEK version, its state and times, and how many data keys (by purpose) each protects; no key material."""

    action_perms = {"get": "keys.view_keyencryptionkey"}

    @extend_schema(responses={200: KeyInventorySerializer(many=True)})
    def get(self, request):
        rows = [row.as_dict() for row in key_inventory()]
        return Response(KeyInventorySerializer(rows, many=True).data)


def _pk(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ServiceError("invalid_id", _("%(value)s is not an id") % {"value": repr(value)}) from None


class RotateView(APIView):
    """Start a KEK rotation: a new version is created in the HSM and becomes active; a Celery task
    re-wraps every data key (the ciphertext is not rewritten). Deployments keep serving."""

    action_perms = {"post": "keys.rotate_keyencryptionkey"}

    @extend_schema(request=RotationRequestSerializer, responses={202: KekRotationSerializer})
    def post(self, request):
        form = RotationRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        rotation = services.start_rotation(
            actor=request.user, reason=form.validated_data["reason"], source=Source.from_request(request)
        )
        return Response(KekRotationSerializer(rotation).data, status=202)


class RetireView(APIView):
    """Destroy an old KEK version in the HSM; refused while anything still references it."""

    action_perms = {"post": "keys.retire_keyencryptionkey"}

    @extend_schema(request=None, responses={200: KeyInventorySerializer})
    def post(self, request, pk):
        kek = services.retire_kek(kek_pk=_pk(pk), actor=request.user, source=Source.from_request(request))
        row = next(r for r in key_inventory() if r.kek_id == kek.kek_id)
        return Response(KeyInventorySerializer(row.as_dict()).data)


class KekRotationViewSet(viewsets.ReadOnlyModelViewSet):
    """KEK rotations and their progress."""

    queryset = KekRotation.objects.select_related("to_kek", "requested_by")
    serializer_class = KekRotationSerializer
    action_perms = {
        "list": "keys.view_kekrotation",
        "retrieve": "keys.view_kekrotation",
        "resume": "keys.rotate_keyencryptionkey",
    }

    @extend_schema(request=None, responses={202: KekRotationSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        rotation = services.resume_rotation(
            rotation_id=_pk(pk), actor=request.user, source=Source.from_request(request)
        )
        return Response(KekRotationSerializer(rotation).data, status=202)
