"""Every deployment becomes a replica of a set (issue 16): one set per model version that has
deployments, active when any of them is desired active (replicas = how many), retired otherwise.

Traffic: the newest live set of each model (the one whose replica was most recently requested)
takes 100 % of the model's unversioned calls, the others 0. Before sets, the portal allowed one
version of a model per server, so two live versions meant an upgrade under way; sending every
unversioned call to the version most recently deployed is where that upgrade was heading (and what
a finished rollout leaves). An equal split would keep serving a version the operator was replacing.
"""

from django.db import migrations


def attach(apps, schema_editor):
    Deployment = apps.get_model("deployments", "Deployment")
    ReplicaSet = apps.get_model("deployments", "ReplicaSet")
    by_version: dict[int, list] = {}
    for dep in Deployment.objects.filter(replica_set__isnull=True).order_by("created_at", "pk"):
        by_version.setdefault(dep.model_version_id, []).append(dep)
    live: dict[int, list] = {}
    for version_id, deps in by_version.items():
        active = [d for d in deps if d.desired_state == "active"]
        has_active_set = ReplicaSet.objects.filter(model_version_id=version_id, state="active").exists()
        rs = ReplicaSet.objects.create(
            model_id=deps[0].model_id,
            model_version_id=version_id,
            replicas=len(active),
            min_replicas=min(1, len(active)),
            max_replicas=max(1, len(active)),
            state="active" if active and not has_active_set else "retired",
            requested_by_id=deps[-1].requested_by_id,
        )
        Deployment.objects.filter(pk__in=[d.pk for d in deps]).update(replica_set=rs)
        if rs.state == "active":
            live.setdefault(rs.model_id, []).append((max(d.created_at for d in active), rs.pk))
    for model_id, sets in live.items():
        if ReplicaSet.objects.filter(model_id=model_id, state="active", traffic_weight__gt=0).exists():
            continue
        newest = max(sets)[1]
        ReplicaSet.objects.filter(pk=newest).update(traffic_weight=100)


def detach(apps, schema_editor):
    Deployment = apps.get_model("deployments", "Deployment")
    Deployment.objects.update(replica_set=None)
    apps.get_model("deployments", "ReplicaSet").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("deployments", "0006_rollouts")]

    operations = [migrations.RunPython(attach, detach)]
