"""The portal's URLconf plus one API view someone left open (AllowAny), for the gate check's test."""

from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.urls import urlpatterns as portal_patterns


class LeakyView(APIView):
    permission_classes = [AllowAny]

    def get(self, request, pk):
        return Response({"patients": []})


urlpatterns = [*portal_patterns, path("api/v1/leak/<int:pk>/", LeakyView.as_view())]
