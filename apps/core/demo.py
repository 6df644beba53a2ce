"""What `make run` (manage.py bootstrap_demo, apps/demo) creates, by name: shared with the compliance
check that flags a demo installation's accounts and token when they are found in production.

Names only, in the floor: the compliance check sits below apps.demo and must recognise what the
demo left behind even where apps.demo is not installed, so it cannot ask the demo app for them."""

OFFICER, ADMIN_USER, AUDITOR_USER, ANALYST_USER = "demo-officer", "demo-admin", "demo-auditor", "demo-analyst"
DEMO_ACCOUNT = "svc-demo"  # the service account the demo token belongs to
DEMO_TOKEN = "make-run demo"  # the name of that token
DEMO_ACCOUNTS = (OFFICER, ADMIN_USER, AUDITOR_USER, ANALYST_USER, DEMO_ACCOUNT)
