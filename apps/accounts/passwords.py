"""Password age (等保 8.1.4.1 a: periodic change). Django calls every validator's
password_changed() whenever a password is set and saved, so recording the time here catches
every path: admin, API, management commands."""

from django.utils import timezone


class PasswordAgeRecorder:
    def validate(self, password, user=None):
        return None

    def password_changed(self, password, user=None):
        if user is None or user.pk is None:
            return
        from .models import Profile

        Profile.objects.update_or_create(user=user, defaults={"password_changed_at": timezone.now()})

    def get_help_text(self):
        return ""
