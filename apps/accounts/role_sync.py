"""Create the role groups and give each exactly its permission set (apps.accounts.roles).

Run by the data migration and again after every `migrate` (post_migrate), so that a permission
added later by any app reaches the roles without a hand-written migration."""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions

from .roles import PERMISSIONS


def sync_roles(apps, using: str = "default", strict: bool = True) -> None:
    """`strict=False` (the data migration) skips permissions of models that a later migration
    creates; the post_migrate run, after every migration, is strict and completes the set."""
    for app_config in apps.get_app_configs():
        original, app_config.models_module = getattr(app_config, "models_module", None), True
        try:
            create_permissions(app_config, apps=apps, verbosity=0, using=using)
        finally:
            app_config.models_module = original
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, perms in PERMISSIONS.items():
        group, _ = Group.objects.using(using).get_or_create(name=role)
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            row = Permission.objects.using(using).filter(content_type__app_label=app_label, codename=codename).first()
            if row is None and not strict:
                continue
            if row is None:
                raise LookupError(f"role {role}: permission {perm} does not exist")
            wanted.append(row)
        group.permissions.set(wanted)


def on_post_migrate(sender, app_config=None, using="default", apps=global_apps, **kwargs):
    # `flush` (and so every transactional test's teardown) sends post_migrate without `apps`.
    if app_config is not None and app_config.label == "accounts":
        sync_roles(apps, using)
