from django.apps import AppConfig


class DemoConfig(AppConfig):
    """`make run`'s demo bootstrap (manage.py bootstrap_demo): demo accounts, the local Triton server,
    the demo model deployed and a token to call it. The top app: it drives the services of every app
    below it and nothing imports it. No models."""

    name = "apps.demo"
    label = "demo"
    verbose_name = "Demo"
