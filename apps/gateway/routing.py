"""The inference path's route lookup, as one hand-written SQL statement.

Built with the ORM, this query (deployment + version + server, restricted to models the caller
holds an unexpired invoke grant on, directly or — persons only — through a group, while holding a
role that may invoke, and to the token's models) cost ≈2.2 ms of CPU per call to compile on the reference
machine: more than everything else the gateway does. The statement below is fixed text (table
names from the models' metadata, role names from apps.accounts.roles), so it compiles never and
PostgreSQL prepares it once per connection. Its semantics are those of
apps.registry.selectors.models_invokable_by; the gateway tests pin both. It also selects the
model's de-identification policy (apps.compliance.effective.deid_policy_columns), so the
inference path needs no second query for it.
"""

from __future__ import annotations

import json
from functools import cache

from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.utils import timezone

from apps.accounts.models import ApiToken, ModelGroupGrant, ModelUserGrant, Profile
from apps.accounts.roles import MAY_INVOKE
from apps.compliance.effective import deid_policy_columns, effective_deid_mode
from apps.deployments.models import Deployment, InferenceServer
from apps.registry.models import Model, ModelVersion


@cache
def _sql() -> str:
    t = {
        "dep": Deployment._meta.db_table,
        "model": Model._meta.db_table,
        "mv": ModelVersion._meta.db_table,
        "srv": InferenceServer._meta.db_table,
        "user_groups": Group.user_set.through._meta.db_table,
        "grp": Group._meta.db_table,
        "perm": Permission._meta.db_table,
        "ug": ModelUserGrant._meta.db_table,
        "gg": ModelGroupGrant._meta.db_table,
        "tm": ApiToken.allowed_models.through._meta.db_table,
        "prof": Profile._meta.db_table,
    }
    roles = ", ".join(f"'{r}'" for r in sorted(MAY_INVOKE))  # constants of our own, not input
    # Table names from model metadata and our own role constants; every value is a parameter.
    return f"""
SELECT d.id, d.model_id, d.model_version_id, d.server_id, d.max_batch_size,
       mv.version, mv.signature, s.name, s.http_url, {deid_policy_columns("m.id")}
FROM {t["dep"]} d
JOIN {t["model"]} m ON m.id = d.model_id
JOIN {t["mv"]} mv ON mv.id = d.model_version_id
JOIN {t["srv"]} s ON s.id = d.server_id
WHERE m.name = %s AND d.desired_state = 'active' AND d.observed_state = 'active'
  AND (%s OR (
        EXISTS (SELECT 1 FROM {t["user_groups"]} r JOIN {t["grp"]} g ON g.id = r.group_id
                WHERE r.user_id = %s AND g.name IN ({roles}))
    AND (EXISTS (SELECT 1 FROM {t["ug"]} x JOIN {t["perm"]} p ON p.id = x.permission_id
                 WHERE x.content_object_id = m.id AND x.user_id = %s AND p.codename = 'invoke_model'
                   AND (x.expires_at IS NULL OR x.expires_at > %s))
      OR EXISTS (SELECT 1 FROM {t["gg"]} y JOIN {t["perm"]} q ON q.id = y.permission_id
                 JOIN {t["user_groups"]} yg ON yg.group_id = y.group_id
                 WHERE y.content_object_id = m.id AND yg.user_id = %s AND q.codename = 'invoke_model'
                   AND (y.expires_at IS NULL OR y.expires_at > %s)
                   AND NOT EXISTS (SELECT 1 FROM {t["prof"]} pr WHERE pr.user_id = yg.user_id
                                   AND pr.is_service_account)))))
  AND (%s OR EXISTS (SELECT 1 FROM {t["tm"]} tm WHERE tm.apitoken_id = %s AND tm.model_id = m.id))
"""  # noqa: S608


def invokable_deployments(user, token, name: str) -> list[Deployment]:
    """ACTIVE deployments of model `name` that this user may invoke with this token."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    params = [name, user.is_superuser, user.pk, user.pk, now, user.pk, now, not token.restricted, token.pk]
    with connection.cursor() as cursor:
        cursor.execute(_sql(), params)
        rows = cursor.fetchall()
    return [_deployment(*row) for row in rows]


def _deployment(
    pk, model_id, version_id, server_id, max_batch_size, version, signature, server_name, http_url, deid_mode, phi
):
    dep = Deployment(
        id=pk, model_id=model_id, model_version_id=version_id, server_id=server_id, max_batch_size=max_batch_size
    )
    dep.deid_mode = effective_deid_mode(deid_mode, phi)  # the model's compliance policy, read in the same statement
    if isinstance(signature, str | bytes):
        signature = json.loads(signature)
    dep.model_version = ModelVersion(id=version_id, model_id=model_id, version=version, signature=signature)
    dep.server = InferenceServer(id=server_id, name=server_name, http_url=http_url)
    return dep
