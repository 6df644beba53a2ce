from django.urls import path
from rest_framework.routers import SimpleRouter

from .views import AuditEventViewSet, AuditExportView, AuditVerifyViewSet

router = SimpleRouter()
router.register("events", AuditEventViewSet, basename="audit-event")
router.register("verify", AuditVerifyViewSet, basename="audit-verify")
urlpatterns = [path("export/<str:file_format>/", AuditExportView.as_view(), name="audit-export"), *router.urls]
