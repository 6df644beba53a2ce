from rest_framework.routers import SimpleRouter

from .views import DeploymentViewSet, InferenceServerViewSet

router = SimpleRouter()
router.register("servers", InferenceServerViewSet, basename="server")
router.register("deployments", DeploymentViewSet, basename="deployment")
urlpatterns = router.urls
