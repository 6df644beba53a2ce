"""Where surrogate mappings live between the calls of one conversation (docs/deidentification.md).

A mapping without a conversation id lives for its call only, in memory. With the header
`X-Sovereign-Conversation: <id>` (1-128 of A-Z a-z 0-9 . _ : -) it is kept in Redis for
SOVEREIGN_DEID_CONVERSATION_TTL seconds (default 3600, renewed by each call), bound to the caller's
TOKEN: the Redis key is HMAC(k, token id, conversation id), so the same id sent with another token
names another (empty) mapping — nobody reuses or reads someone else's.

The value is AES-256-GCM under k, with the Redis key as associated data; k is derived (HKDF-SHA256)
from the installation's pseudonymisation key, a data key that exists on disk only wrapped by the
KEK (apps/keys/pseudonym.py). Without that key the call is refused (503 deid_unavailable) before
anything is forwarded. The plaintext mapping is never written anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from apps.core.errors import ServiceError, _

from ..deid import DeidError, SurrogateMap

CONVERSATION_HEADER = b"x-sovereign-conversation"
_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_PREFIX = "sov:deid:conv:"


def conversation_id(value: str | None) -> str | None:
    if value is None:
        return None
    if not _ID_RE.match(value):
        raise ServiceError(
            "invalid_conversation_id",
            _("X-Sovereign-Conversation must be 1-128 characters of A-Z a-z 0-9 . _ : -"),
            400,
        )
    return value


def _ttl() -> int:
    return int(settings.DEID_CONVERSATION_TTL)


def check_size(mapping: SurrogateMap) -> None:
    """413 `deid_conversation_full` past SOVEREIGN_DEID_CONVERSATION_MAX_ENTRIES identifiers: every
    call loads the whole mapping and screens its answer against all its surrogates, so it is bounded
    (checked before it is saved or anything is forwarded)."""
    limit = int(settings.DEID_CONVERSATION_MAX_ENTRIES)
    if len(mapping) > limit:
        raise ServiceError(
            "deid_conversation_full",
            _(
                "the conversation holds more than %(limit)s identifiers; start a new conversation (or a "
                "call without X-Sovereign-Conversation)"
            )
            % {"limit": limit},
            413,
        )


class ConversationStore:
    """`redis`: a redis.asyncio client, or None (one process: an in-memory dict, still encrypted)."""

    def __init__(self, redis=None):
        self.redis = redis
        self._local: dict[str, bytes] = {}

    @staticmethod
    def _key(pseudonym_key: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"sovereign surrogate mapping v1").derive(
            pseudonym_key
        )

    def _name(self, k: bytes, token_id: int, conversation: str) -> str:
        tag = hmac.new(k, f"{token_id}\x00{conversation}".encode(), hashlib.sha256).hexdigest()
        return _PREFIX + tag

    async def load(self, pseudonym_key: bytes, token_id: int, conversation: str | None, *, date_shift: bool):
        """The conversation's mapping (a new one if none, expired, or unreadable)."""
        fresh = SurrogateMap.with_date_shift() if date_shift else SurrogateMap()
        if conversation is None:
            return fresh
        k = self._key(pseudonym_key)
        name = self._name(k, token_id, conversation)
        blob = await self.redis.get(name) if self.redis is not None else self._local.get(name)
        if not blob:
            return fresh
        try:  # off the event loop: a mapping of thousands of entries takes milliseconds to open
            mapping = await asyncio.to_thread(_open, k, name, blob)
        except (ValueError, DeidError, KeyError):
            return fresh  # tampered or from an older key: start again
        if date_shift and mapping.date_shift_days is None:
            mapping.date_shift_days = fresh.date_shift_days
        return mapping

    async def save(self, pseudonym_key: bytes, token_id: int, conversation: str | None, mapping: SurrogateMap) -> None:
        if conversation is None:
            return
        k = self._key(pseudonym_key)
        name = self._name(k, token_id, conversation)
        blob = await asyncio.to_thread(_seal, k, name, mapping)
        if self.redis is not None:
            await self.redis.set(name, blob, ex=_ttl())
        else:
            self._local[name] = blob


def _open(k: bytes, name: str, blob: bytes) -> SurrogateMap:
    return SurrogateMap.from_bytes(AESGCM(k).decrypt(blob[:12], blob[12:], name.encode()))


def _seal(k: bytes, name: str, mapping: SurrogateMap) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(k).encrypt(nonce, mapping.to_bytes(), name.encode())


def surrogate_strings(mapping: SurrogateMap) -> frozenset[str]:
    """Every surrogate string of the mapping (whole values and the Latin name tokens they are built of:
    "Jones" of "Paul Jones" when the model says "Mr. Jones"): what the gateway itself put in the
    request, which the answer screen lets through. Not a Han surname alone ("王"): blanked wherever it
    stands, it would take the surname off every Chinese name in the answer."""
    tokens = {t for key, t in mapping.tokens.items() if t and not key.startswith("zh:")}
    return frozenset(mapping.reverse) | frozenset(tokens) | frozenset(t.title() for t in tokens)
