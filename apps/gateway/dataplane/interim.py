"""Interim policy and audit for the pipeline (replaced by snapshot.py and auditsink.py)."""

from __future__ import annotations

from asgiref.sync import sync_to_async

from apps.accounts.services import authenticate_bearer

from ..routing import route as db_route


class DbCaller:
    def __init__(self, user, token):
        self.user, self.token = user, token
        self.token_id = token.pk
        self.superuser = user.is_superuser
        self.user_id, self.username = user.pk, user.username
        self.roles = getattr(user, "audit_roles", [])

    def source(self, base):
        return base.with_token(self.token)


class DbRoute:
    def __init__(self, dep):
        self.deployment_id = dep.pk
        self.model_id = dep.model_id
        self.version = dep.model_version.version
        self.server_name = self.server = dep.server.name
        self.http_url = dep.server.http_url
        self.max_batch_size = dep.max_batch_size
        self.signature = dep.model_version.signature
        self.deid_mode = dep.deid_mode


class DatabasePolicy:
    async def authenticate(self, authorization, ip):
        user, token = await sync_to_async(authenticate_bearer, thread_sensitive=True)(authorization, ip, lean=True)
        return DbCaller(user, token)

    async def route(self, caller, name, version, *, invoke):
        from apps.core.errors import ServiceError

        deps = await sync_to_async(db_route, thread_sensitive=True)(caller.user, caller.token, name, invoke=invoke)
        if version is not None:
            deps = [d for d in deps if str(d.model_version.version) == version]
            if not deps:
                raise ServiceError("model_version_not_deployed", f"version {version} of {name!r} is not deployed", 404)
        return [DbRoute(d) for d in deps]
