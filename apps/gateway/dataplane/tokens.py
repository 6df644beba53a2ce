"""Counting a language model's tokens in the gateway, with the model's own tokenizer.

The quota reservation and the context-length check need the prompt's size before the model sees
it, and some backends (TensorRT-LLM's ensemble) return no counts at all. The tokenizer is one file
of the model's encrypted artifact set (`tokenizer.json`); it is decrypted in memory once per
process and version (apps.registry.selectors.open_artifact_file, on a thread: it unwraps the data
key, which may ask the HSM). Until it is loaded, or if it cannot be, the count is the text's UTF-8
length: an upper bound for a byte-level BPE (every token covers at least one byte), so a quota is
never under-reserved; a failed load is tried again after a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time

from asgiref.sync import sync_to_async

logger = logging.getLogger(__name__)
_INLINE_CHARS = 2048
RETRY_SECONDS = 60.0  # longer texts are tokenised on a thread, off the event loop


class TokenCounter:
    def __init__(self, loader=None):
        self.loader = loader or _load_from_registry
        self._tokenizers: dict[int, object] = {}
        self._loading: dict[int, asyncio.Task] = {}
        self._failed_at: dict[int, float] = {}

    async def tokenizer(self, version_id: int):
        if version_id in self._tokenizers:
            found = self._tokenizers[version_id]
            if found is not None or time.monotonic() - self._failed_at.get(version_id, 0) < RETRY_SECONDS:
                return found
        task = self._loading.get(version_id)
        if task is None:
            # Django's thread-sensitive thread: the database as the rest of the data plane reads it
            task = asyncio.ensure_future(sync_to_async(self._load, thread_sensitive=True)(version_id))
            self._loading[version_id] = task
        try:
            return await asyncio.shield(task)
        finally:
            self._loading.pop(version_id, None)

    def _load(self, version_id: int):
        try:
            tokenizer = self.loader(version_id)
        except Exception as err:  # noqa: BLE001 - counted by bytes instead (an upper bound)
            logger.warning("tokenizer of model version %s unavailable (%s): counting bytes", version_id, err)
            tokenizer = None
            self._failed_at[version_id] = time.monotonic()  # tried again after RETRY_SECONDS
        self._tokenizers[version_id] = tokenizer
        return tokenizer

    async def count(self, route, text: str) -> int:
        if not text:
            return 0
        tokenizer = await self.tokenizer(route.version_id)
        if tokenizer is None:
            return len(text.encode("utf-8"))
        if len(text) <= _INLINE_CHARS:
            return len(tokenizer.encode(text, add_special_tokens=False).ids)
        return await asyncio.to_thread(lambda: len(tokenizer.encode(text, add_special_tokens=False).ids))


def _load_from_registry(version_id: int):
    from django.db import close_old_connections, connection
    from tokenizers import Tokenizer

    from apps.registry.selectors import open_artifact_file

    if connection.in_atomic_block:  # a test's transaction: the caller's connection, as it is
        data = open_artifact_file(version_id, "tokenizer.json")
    else:  # the data plane's worker thread: a connection checked before and let go after
        close_old_connections()
        try:
            data = open_artifact_file(version_id, "tokenizer.json")
        finally:
            close_old_connections()
    return Tokenizer.from_str(data.decode("utf-8"))
