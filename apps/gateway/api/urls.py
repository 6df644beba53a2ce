from rest_framework.routers import SimpleRouter

from .views import ChatPolicyViewSet, ExchangeViewSet, QuotaViewSet

router = SimpleRouter()
router.register("chat-policies", ChatPolicyViewSet, basename="llm-chat-policy")
router.register("quotas", QuotaViewSet, basename="llm-quota")
router.register("exchanges", ExchangeViewSet, basename="llm-exchange")
urlpatterns = router.urls
