"""The signal a service sends after changing what the gateway decides on without model signals.

Every save and delete of a model the gateway's policy reads (tokens, users, profiles, roles,
break-glass, grants, models, versions, servers, deployments, de-identification policies) already
tells the data plane's policy snapshot to rebuild: apps.gateway connects receivers to those
models' post_save / post_delete / m2m_changed in its AppConfig.ready(). QuerySet.update(),
bulk_create() and raw SQL send no such signal, so a service that changes those facts that way
sends `policy_changed` itself, inside the same transaction. It lives in the floor so that any app
can send it without importing the gateway (which sits above them all).
"""

from django.dispatch import Signal

# Sent with `sender` (the model class changed) and `using` (the database alias, default "default").
policy_changed = Signal()
