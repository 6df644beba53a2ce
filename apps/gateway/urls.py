from django.urls import path

from . import views

urlpatterns = [
    path("v2/models/<str:name>", views.metadata, name="gateway-metadata"),
    path("v2/models/<str:name>/ready", views.ready, name="gateway-ready"),
    path("v2/models/<str:name>/infer", views.infer, name="gateway-infer"),
    path("v2/models/<str:name>/versions/<str:version>", views.metadata, name="gateway-version-metadata"),
    path("v2/models/<str:name>/versions/<str:version>/ready", views.ready, name="gateway-version-ready"),
    path("v2/models/<str:name>/versions/<str:version>/infer", views.infer, name="gateway-version-infer"),
]
