from rest_framework.routers import SimpleRouter

from .views import BatchingSweepViewSet, DeploymentViewSet, InferenceServerViewSet, ReplicaSetViewSet, RolloutViewSet

router = SimpleRouter()
router.register("servers", InferenceServerViewSet, basename="server")
router.register("deployments", DeploymentViewSet, basename="deployment")
router.register("rollouts", RolloutViewSet, basename="rollout")
router.register("replica-sets", ReplicaSetViewSet, basename="replicaset")
router.register("batching-sweeps", BatchingSweepViewSet, basename="batchingsweep")
urlpatterns = router.urls
