from django.urls import path
from rest_framework.routers import SimpleRouter

from .views import (
    AttestationViewSet,
    ComplianceReportViewSet,
    ControlResultViewSet,
    EvaluateView,
    EvaluationRunViewSet,
    ModelPolicyViewSet,
    ProfileAttachmentViewSet,
    ProfileViewSet,
)

router = SimpleRouter()
router.register("profiles", ProfileViewSet, basename="compliance-profile")
router.register("attachments", ProfileAttachmentViewSet, basename="compliance-attachment")
router.register("model-policies", ModelPolicyViewSet, basename="compliance-policy")
router.register("runs", EvaluationRunViewSet, basename="compliance-run")
router.register("results", ControlResultViewSet, basename="compliance-result")
router.register("attestations", AttestationViewSet, basename="compliance-attestation")
router.register("reports", ComplianceReportViewSet, basename="compliance-report")
urlpatterns = [path("evaluate/", EvaluateView.as_view(), name="compliance-evaluate"), *router.urls]
