"""The per-token governance the OpenAI adapter applies (docs/llm.md): the model's chat policy,
quotas reserved before a call and settled after it, the usage table and what is kept of prompts
and answers. The rules live in apps/gateway (chatpolicy.py, quota.py, services.py); this binds
them to the data plane: policies and quotas come from the policy snapshot (no query per call),
the reservation is one Redis round trip, and only when the call has a quota at all."""

from __future__ import annotations

import logging

from ..chatpolicy import check_request, policy_for, system_messages
from ..quota import QuotaGate
from ..services import arecord_usage, aretain_exchange

logger = logging.getLogger(__name__)


class Governance:
    def __init__(self, policy_holder, gate: QuotaGate | None = None):
        self.holder = policy_holder
        self.gate = gate or QuotaGate.from_settings()

    def policy(self, route) -> dict:
        return policy_for(self.holder.snapshot.chat_policies, route.model_id)

    @staticmethod
    def check(policy: dict, max_tokens, sampling: dict) -> dict:
        """The sampling parameters for the model (max_tokens always set), or 400
        `max_tokens_exceeded` / `sampling_not_allowed`."""
        return check_request(policy, max_tokens, sampling)

    @staticmethod
    def system_messages(policy: dict, messages: list[dict]) -> list[dict]:
        return system_messages(policy, messages)

    async def reserve(self, caller, route, tokens: int):
        """Reserve `tokens` in every quota that applies (user, groups, token; this model or all),
        atomically, or raise 429 `quota_exceeded` / `rate_limited` with Retry-After. None when
        no quota applies (nothing asked of Redis)."""
        limits = self.holder.snapshot.quotas.applicable(
            user_id=caller.user_id, token_id=caller.token_id, model_id=route.model_id
        )
        if not limits:
            return None
        return await self.gate.reserve(limits, tokens)

    async def settle(self, reservation, used: int) -> None:
        if reservation is not None:
            await self.gate.settle(reservation, used)

    async def record(self, call, route, req, ex, *, status: int, finish: str, duration_ms: float, messages, error):
        """The usage row of a served call (also when the client left), then what the policy keeps of
        the de-identified exchange."""
        caller = call.caller
        state = "cancelled" if ex.disconnected else ("error" if error is not None else "ok")
        await arecord_usage(
            request_id=call.inbound.request_id,
            user_id=caller.user_id,
            username=caller.username,
            token_id=caller.token_id,
            model_id=route.model_id,
            model_name=route.model,
            model_version=route.version,
            prompt_tokens=ex.prompt_tokens,
            completion_tokens=ex.completion_tokens,
            ttft_ms=ex.ttft_ms,
            duration_ms=duration_ms,
            finish_reason=finish,
            status=state,
        )
        policy = self.policy(route)
        if policy.get("retention", "none") != "none":
            await aretain_exchange(
                policy=policy,
                request_id=call.inbound.request_id,
                model_id=route.model_id,
                model_name=route.model,
                user_id=caller.user_id,
                username=caller.username,
                messages=messages,
                answer=ex.answer,  # what the client received (after the answer screen)
            )

    async def close(self) -> None:
        await self.gate.close()
