"""Data: the five role groups with their permission sets; a profile for every existing user;
tokens issued before scopes existed keep the full access they had (invoke, read, manage)."""

from django.db import migrations


def forwards(apps, schema_editor):
    from apps.accounts.role_sync import sync_roles

    sync_roles(apps, schema_editor.connection.alias, strict=False)
    User = apps.get_model("auth", "User")
    Profile = apps.get_model("accounts", "Profile")
    for user in User.objects.filter(profile__isnull=True):
        Profile.objects.create(user=user)
    apps.get_model("accounts", "ApiToken").objects.filter(scopes=[]).update(scopes=["invoke", "manage", "read"])


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_alter_apitoken_options_apitoken_allowed_models_and_more"),
        ("registry", "0002_alter_model_options"),
        ("audit", "0002_alter_auditevent_options"),
        ("deployments", "0002_server_url_allows_single_label_hosts"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
