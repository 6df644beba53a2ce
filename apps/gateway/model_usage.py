"""The usage section of the model page (issue 17): calls and tokens of the last 24 hours and 30 days
from the gateway's per-call usage rows (apps.registry.admin.MODEL_PAGE_SECTIONS)."""

from datetime import timedelta

from django.db.models import Count, Q, Sum
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from apps.registry.selectors import add_model_page_section

from .models import LLMUsage, UsageStatus


def model_usage_section(request, model):
    if not request.user.has_perm("gateway.view_llmusage"):
        return None
    now = timezone.now()
    rows = []
    for label, since in (
        (_("last 24 hours"), now - timedelta(hours=24)),
        (_("last 30 days"), now - timedelta(days=30)),
    ):
        figures = LLMUsage.objects.filter(model=model, at__gte=since).aggregate(
            calls=Count("id"),
            errors=Count("id", filter=~Q(status=UsageStatus.OK)),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
        )
        rows.append({"period": label, **{k: v or 0 for k, v in figures.items()}})
    return {"id": "model-usage", "title": _("Usage"), "template": "admin/gateway/model_usage.html", "rows": rows}


add_model_page_section(model_usage_section)
