"""Tokenizer and incremental detokenizer for the LLM file set (``tokenizer.json``).

:class:`Tokenizer` wraps a Hugging Face ``tokenizers`` tokenizer built from the bytes of
``tokenizer.json`` (in memory: the file arrives decrypted, it is never written to disk).

:class:`IncrementalDetokenizer` turns a growing list of token ids into text deltas that never
split a UTF-8 character: byte-level BPE emits one byte of a Chinese character per token, and
decoding such a token alone yields U+FFFD. It decodes a small window of recent tokens and
holds back text while the window's decoding ends in U+FFFD (an incomplete character), the
approach of vLLM's and Hugging Face's streamers.

:class:`StopMatcher` applies stop strings to that text: it holds back a tail that could be the
beginning of a stop string and truncates at the first complete match (the stop string itself
is not part of the output, as in vLLM and OpenAI).

No Django here: this module ships to Triton hosts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer as HFTokenizer

REPLACEMENT = "\ufffd"


class TokenizerError(Exception):
    """``tokenizer.json`` is unusable."""


class Tokenizer:
    """Encode prompts and decode token ids with the model's own tokenizer."""

    def __init__(self, tokenizer_json: bytes | str) -> None:
        text = tokenizer_json.decode("utf-8") if isinstance(tokenizer_json, bytes | bytearray) else tokenizer_json
        try:
            self._tok = HFTokenizer.from_str(text)
        except Exception as exc:  # the Rust error type is not exported
            raise TokenizerError(f"tokenizer.json cannot be loaded: {exc}") from exc
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens written in the text (``<|im_start|>``) are recognised
        and the tokenizer's post-processor applies (it adds a BOS only if it is configured to)."""
        return self._tok.encode(text, add_special_tokens=True).ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def detokenizer(self, prompt_ids: Sequence[int] = ()) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self, prompt_ids)


class IncrementalDetokenizer:
    """Feed generated token ids one by one (or a few at a time); get complete text deltas back.

    ``prefix`` is a few tokens before the ones not yet shown, decoded together with them so that
    tokenizers which decode a token differently at the start of a text (a SentencePiece leading
    space) give the same text as decoding everything at once.
    """

    #: Context tokens decoded with the new ones (the prompt's tail at first).
    CONTEXT = 6

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = ()) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = list(prompt_ids[-self.CONTEXT :])
        self._prefix = 0  # start of the decoded window
        self._read = len(self._ids)  # tokens before this index have been shown

    def push(self, token_ids: Iterable[int]) -> str:
        """Add tokens; return the text that is now complete ("" while a character is incomplete)."""
        self._ids.extend(token_ids)
        return self._step(final=False)

    def flush(self) -> str:
        """The text still held back when generation ends. A character whose bytes never completed
        (generation stopped in its middle) is dropped rather than shown as U+FFFD."""
        return self._step(final=True)

    def _step(self, *, final: bool) -> str:
        if len(self._ids) == self._read:
            return ""
        prefix_text = self._tokenizer.decode(self._ids[self._prefix : self._read])
        full_text = self._tokenizer.decode(self._ids[self._prefix :])
        if not final and (full_text.endswith(REPLACEMENT) or len(full_text) <= len(prefix_text)):
            return ""  # incomplete character (or nothing visible yet): wait for more tokens
        if not full_text.startswith(prefix_text):
            # Decoding is not prefix-stable here (rare normalisers); show only what is new.
            prefix_text = full_text[: len(prefix_text)]
        delta = full_text[len(prefix_text) :]
        if final:
            delta = delta.rstrip(REPLACEMENT)
        self._prefix = max(self._read, len(self._ids) - self.CONTEXT) if not final else len(self._ids)
        self._read = len(self._ids)
        # Keep the window small: drop ids before the prefix.
        if self._prefix > 64:
            del self._ids[: self._prefix]
            self._read -= self._prefix
            self._prefix = 0
        return delta


class StopMatcher:
    """Release text only when it cannot be the start of a stop string; stop at the first match."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self.matched: str | None = None

    def push(self, text: str) -> tuple[str, bool]:
        """Return (text safe to show, True if a stop string was found: generation must end)."""
        if self.matched is not None:
            return "", True
        if not self.stops:
            return text, False
        buffer = self._held + text
        first = -1
        for stop in self.stops:
            index = buffer.find(stop)
            if index != -1 and (first == -1 or index < first):
                first, self.matched = index, stop
        if first != -1:
            self._held = ""
            return buffer[:first], True
        keep = 0
        for stop in self.stops:
            # Longest suffix of the buffer that is a proper prefix of this stop string.
            for length in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if stop.startswith(buffer[-length:]):
                    keep = length
                    break
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """Text held back when generation ends for another reason (it was not a stop string)."""
        held, self._held = self._held, ""
        return "" if self.matched is not None else held
