from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from ..selectors import key_inventory
from .serializers import KeyInventorySerializer


class KeyInventoryView(APIView):
    """KEKs in use and how many artifacts each protects; never any key material."""

    action_perms = {"get": "registry.view_artifact"}

    @extend_schema(responses={200: KeyInventorySerializer(many=True)})
    def get(self, request):
        rows = [row.as_dict() for row in key_inventory()]
        return Response(KeyInventorySerializer(rows, many=True).data)
