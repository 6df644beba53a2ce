from rest_framework.routers import SimpleRouter

from .views import AuditEventViewSet, AuditVerifyViewSet

router = SimpleRouter()
router.register("events", AuditEventViewSet, basename="audit-event")
router.register("verify", AuditVerifyViewSet, basename="audit-verify")
urlpatterns = router.urls
