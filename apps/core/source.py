"""Where a call came from (client address, user agent, API token and who issued it): request
metadata that every service is handed and that audit events record. It lives in the floor so that
any app, and core's own admin helpers, can build one without importing the audit app."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .netaddr import request_client_address


@dataclass(frozen=True)
class Source:
    """Where a call came from: the client address, user agent and the API token used, if any,
    with the token's issuer (its `created_by`: id and user name, or None and "host" when the host
    issued it; `token_issuer` None: not known), so that every event made with a token says who put
    that token into the world."""

    ip: str | None = None
    user_agent: str = ""
    token_id: int | None = None
    token_issuer_id: int | None = None
    token_issuer: str | None = None

    @classmethod
    def from_request(cls, request, token_id: int | None = None, *, token=None) -> Source:
        """`token`: the ApiToken the request authenticated with (default: DRF's `request.auth`,
        which DRF also sets on the Django request). `token_id` is the older spelling of the same."""
        if request is None:
            return cls()
        if token is None and token_id is None:
            auth = getattr(request, "auth", None)
            token = auth if hasattr(auth, "created_by_id") else None
        base = cls(ip=request_client_address(request), user_agent=request.META.get("HTTP_USER_AGENT", "")[:300])
        return base.with_token(token) if token is not None else replace(base, token_id=token_id)

    def with_token(self, token) -> Source:
        """This source, for a call made with `token` (its issuer read from `created_by`, which the
        token lookups load in the same statement: no query here)."""
        issuer = token.created_by if token.created_by_id is not None else None
        return replace(
            self,
            token_id=token.pk,
            token_issuer_id=token.created_by_id,
            token_issuer=issuer.get_username() if issuer is not None else "host",
        )

    def token_details(self) -> dict:
        """What record_event adds to the details of an event made with a token."""
        if self.token_issuer is None:
            return {}
        return {"token_issuer_id": self.token_issuer_id, "token_issuer": self.token_issuer}


SYSTEM = Source()  # the platform itself: no client, no token
