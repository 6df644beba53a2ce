"""Celery application. Tasks live in apps/<app>/tasks.py and are discovered from INSTALLED_APPS."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("sovereign")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
