"""Permission-aware reads of chat-model governance: usage (who sees which rows), chat policies
(of the models the caller can see), retained exchanges' metadata.

Usage: roles holding `gateway.view_llmusage` (admin, security officer, auditor) read every row;
anyone else reads only the rows of their own calls (an analyst: their own usage, through any of
their tokens). A model-restricted token narrows either to its models. Grouping happens after that
filter, so `group_by=group` or `token` never reaches another person's rows."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth import get_user_model
from django.db.models import Count, F, QuerySet, Sum
from django.db.models.functions import Coalesce

from apps.accounts.roles import ROLES
from apps.registry.selectors import models_visible_to, restricted_to_token

from .models import ChatPolicy, LLMUsage, RetainedExchange

GROUP_BY = ("user", "group", "token", "model")
_KEYS = {
    "user": ("user_id", "username"),
    "token": ("token_id", "token__name"),
    "model": ("model_id", "model_name"),
}


def usage_visible_to(user, token=None) -> QuerySet[LLMUsage]:
    qs = LLMUsage.objects.all()
    if not user.has_perm("gateway.view_llmusage"):
        qs = qs.filter(user_id=user.pk)
    return restricted_to_token(qs, token, via="model")


def usage_summary(
    qs: QuerySet[LLMUsage],
    *,
    group_by: str,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
) -> list[dict]:
    """Calls and tokens per user, group (current membership, role groups aside: a user in two
    groups counts in both, a user in none under a null group), token or model, over [since, until)."""
    if group_by not in GROUP_BY:
        raise ValueError(group_by)
    if since is not None:
        qs = qs.filter(at__gte=since)
    if until is not None:
        qs = qs.filter(at__lt=until)
    if model:
        qs = qs.filter(model_name=model)
    if group_by == "group":
        return _by_group(qs)
    key, label = _KEYS[group_by]
    rows = (
        qs.values(key_id=F(key), key_label=F(label))
        .annotate(
            calls=Count("id"),
            prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
            completion_tokens=Coalesce(Sum("completion_tokens"), 0),
        )
        .order_by("key_label", "key_id")
    )
    return [
        {
            group_by: r["key_id"],
            "name": r["key_label"] or "",
            "calls": r["calls"],
            "prompt_tokens": r["prompt_tokens"],
            "completion_tokens": r["completion_tokens"],
            "total_tokens": r["prompt_tokens"] + r["completion_tokens"],
        }
        for r in rows
    ]


def _by_group(qs: QuerySet[LLMUsage]) -> list[dict]:
    """Per group of the users (role groups left out: they are roles, not teams). Summed per user
    in the database, then spread over each user's current groups."""
    per_user = {
        r["user_id"]: r
        for r in qs.values("user_id").annotate(
            calls=Count("id"),
            prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
            completion_tokens=Coalesce(Sum("completion_tokens"), 0),
        )
    }
    through = get_user_model().groups.through
    totals: dict[tuple[int | None, str], dict] = {}
    members = through.objects.filter(user_id__in=[u for u in per_user if u is not None]).exclude(group__name__in=ROLES)
    seen: set[int] = set()

    def add(key, r):
        t = totals.setdefault(key, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
        for name in t:
            t[name] += r[name]

    for user_id, group_id, name in members.values_list("user_id", "group_id", "group__name"):
        add((group_id, name), per_user[user_id])
        seen.add(user_id)
    for user_id, r in per_user.items():
        if user_id not in seen:
            add((None, ""), r)
    return [
        {"group": gid, "name": name, **t, "total_tokens": t["prompt_tokens"] + t["completion_tokens"]}
        for (gid, name), t in sorted(totals.items(), key=lambda kv: (kv[0][1], kv[0][0] or 0))
    ]


def chat_policies_visible_to(user, token=None) -> QuerySet[ChatPolicy]:
    """The policies of the models the caller can see (their metadata: roles with view_model see
    all; an analyst the models granted to them; a guest, who sees only the catalogue, none)."""
    return ChatPolicy.objects.filter(model__in=models_visible_to(user, token)).select_related("model", "updated_by")


def exchanges() -> QuerySet[RetainedExchange]:
    """Metadata of retained exchanges (the view's permission limits who calls this)."""
    return RetainedExchange.objects.defer("ciphertext").select_related("deleted_by")
