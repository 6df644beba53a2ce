"""A small, thread-safe Triton HTTP/REST client built on urllib3.

``tritonclient.http`` is gevent-based and must not be shared across threads;
the portal's request handlers and Celery workers share one :class:`TritonClient`.
Its connections obey a :class:`~inference_backend.netpolicy.ServerPolicy` and a
:class:`~inference_backend.transport.TlsConfig` (see :mod:`inference_backend.transport`).
"""

from __future__ import annotations

import base64
import json
import unicodedata
from typing import Any
from urllib.parse import quote

import urllib3
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from inference_backend.netpolicy import AddressRefused, ServerPolicy
from inference_backend.server import CREDENTIAL_HEADER
from inference_backend.transport import GuardedPoolManager, TlsConfig

#: Default timeout of load/unload calls: a model load runs initialize() on the Triton host.
DEFAULT_LOAD_TIMEOUT = 300.0
#: Longest upstream error text the portal stores or shows (characters).
UPSTREAM_TEXT_LIMIT = 500
# Unicode categories replaced by a space: controls (C0, C1, DEL), format characters (bidi
# overrides, zero-width), line and paragraph separators, surrogates, private use, unassigned.
_STRIPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def clean_upstream_text(text: str | bytes, limit: int = UPSTREAM_TEXT_LIMIT) -> str:
    """Text from a Triton server (or any upstream), made safe to store and show: control and
    format characters (terminal escapes, bidi overrides, NULs, newlines) become spaces, runs of
    whitespace collapse, and the result is cut to ``limit`` characters (ending with "…")."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text[: limit * 8]).decode("utf-8", "replace")
    head = str(text)[: limit * 8]  # bounded work on a hostile multi-megabyte answer
    cleaned = " ".join("".join(" " if unicodedata.category(ch) in _STRIPPED_CATEGORIES else ch for ch in head).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


class TritonError(Exception):
    """Triton answered with an error (``status`` is the HTTP status, None if there was no answer).

    ``message`` is already cleaned (:func:`clean_upstream_text`): safe to store and show.
    """

    def __init__(self, status: int | None, message: str) -> None:
        """Keep the HTTP status in ``status`` (None: no answer) and the cleaned error text in ``message``."""
        message = clean_upstream_text(message)
        super().__init__(f"{message} (HTTP {status})" if status is not None else message)
        self.status = status
        self.message = message


class TritonUnavailable(TritonError):
    """Triton could not be reached (connection refused, reset or timed out): a transient failure."""


class TritonRefused(TritonError):
    """The connection was refused on the portal's side: the address policy refused the server
    (``code`` is the policy's code) or its TLS certificate did not verify (``code`` is
    ``triton_tls_failed``). Permanent: retrying does not help until the configuration changes."""

    def __init__(self, code: str, message: str) -> None:
        """``code``: a stable error code; ``message``: why."""
        super().__init__(None, message)
        self.code = code


def _check_file_key(key: str) -> str:
    path = key.removeprefix("file:")
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid model file path {key!r}: use a relative path such as '1/model.py'")
    return "file:" + path


class TritonClient:
    """Client of one Triton server's KServe v2 HTTP API; safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 30.0,
        pool: urllib3.PoolManager | None = None,
        *,
        policy: ServerPolicy | None = None,
        tls: TlsConfig | None = None,
        credential: str | None = None,
    ) -> None:
        """``base_url`` like ``http://127.0.0.1:8000``; ``timeout`` (seconds) applies to calls without
        their own. Without ``pool`` the client makes its own :class:`GuardedPoolManager` from
        ``policy`` (default: the development policy, which still refuses link-local, multicast and
        metadata addresses) and ``tls``. ``credential``: the server's restricted-API credential, sent
        in the ``CREDENTIAL_HEADER`` header of every call (docs/triton-credential.md)."""
        self.base_url = base_url.rstrip("/")
        self._auth = {CREDENTIAL_HEADER: credential} if credential else {}
        self.timeout = timeout
        self._owns_pool = pool is None
        if pool is None:
            pool = GuardedPoolManager(policy or ServerPolicy(), tls, maxsize=16, block=False)
        self._pool = pool

    def close(self) -> None:
        """Close the pooled keep-alive connections (a stopping Triton waits for open ones).

        A pool passed in by the caller is left alone. The client stays usable.
        """
        if not self._owns_pool:
            return
        # PoolManager.clear() only forgets its pools (urllib3 2 no longer closes them), so close each.
        for key in list(self._pool.pools.keys()):
            pool = self._pool.pools.get(key)
            if pool is not None:
                pool.close()
        self._pool.clear()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TritonClient({self.base_url!r})"

    def _request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> tuple[int, bytes]:
        seconds = self.timeout if timeout is None else timeout
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        headers.update(self._auth)
        try:
            response = self._pool.request(
                method,
                self.base_url + path,
                body=data,
                headers=headers,
                timeout=urllib3.Timeout(connect=min(seconds, 10.0), read=seconds),
                retries=False,
                redirect=False,
            )
        except AddressRefused as exc:
            raise TritonRefused(exc.code, f"Triton at {self.base_url} is refused: {exc.message}") from exc
        except SSLError as exc:
            raise TritonRefused("triton_tls_failed", f"TLS with Triton at {self.base_url} failed: {exc}") from exc
        except (NewConnectionError, Urllib3Timeout, ProtocolError, MaxRetryError, ConnectionError) as exc:
            raise TritonUnavailable(None, f"Triton at {self.base_url} is unavailable: {exc}") from exc
        return response.status, response.data

    @staticmethod
    def _error_text(status: int, payload: bytes) -> str:
        try:
            parsed = json.loads(payload)
            if isinstance(parsed, dict) and "error" in parsed:
                return str(parsed["error"])
        except ValueError:
            pass
        return payload.decode("utf-8", "replace").strip() or f"HTTP {status}"

    def _call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        status, payload = self._request(method, path, body, timeout)
        if not 200 <= status < 300:
            raise TritonError(status, self._error_text(status, payload))
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise TritonError(status, f"Triton returned invalid JSON for {method} {path}: {exc}") from exc

    @staticmethod
    def _model_path(name: str) -> str:
        if not name:
            raise ValueError("model name must not be empty")
        return "/v2/models/" + quote(name, safe="")

    def server_ready(self) -> bool:
        """True when ``GET /v2/health/ready`` answers 200; False for any other answer or no answer."""
        try:
            status, _ = self._request("GET", "/v2/health/ready", timeout=min(self.timeout, 5.0))
        except TritonUnavailable:
            return False
        return status == 200

    def model_ready(self, name: str) -> bool:
        """True when the model's ready endpoint answers 200. Raises :class:`TritonUnavailable` if Triton is down."""
        status, _ = self._request("GET", self._model_path(name) + "/ready")
        return status == 200

    def model_config(self, name: str) -> dict[str, Any]:
        """Return the configuration Triton serves the model with now (``max_batch_size``, ``dynamic_batching`` ...)."""
        return self._call("GET", self._model_path(name) + "/config")

    def model_metadata(self, name: str) -> dict[str, Any]:
        """Return the model's KServe v2 metadata (``name``, ``versions``, ``inputs``, ``outputs`` ...)."""
        return self._call("GET", self._model_path(name))

    def load_model(
        self, name: str, config: dict[str, Any], files: dict[str, bytes], *, timeout: float | None = None
    ) -> None:
        """Load (or reload) ``name`` from a config and files sent in the request.

        ``files`` maps paths relative to the model directory (``"1/model.py"``) to bytes;
        Triton writes them to a private temporary repository. ``timeout`` defaults to
        :data:`DEFAULT_LOAD_TIMEOUT`. Raises :class:`TritonError` with Triton's reason
        when the load fails.
        """
        parameters: dict[str, str] = {"config": json.dumps(config)}
        for key, content in files.items():
            parameters[_check_file_key(key)] = base64.b64encode(bytes(content)).decode("ascii")
        self._call(
            "POST",
            "/v2/repository/models/" + quote(name, safe="") + "/load",
            {"parameters": parameters},
            DEFAULT_LOAD_TIMEOUT if timeout is None else timeout,
        )

    def unload_model(self, name: str, *, timeout: float | None = None) -> None:
        """Ask Triton to unload ``name`` (in-flight requests finish first)."""
        self._call(
            "POST",
            "/v2/repository/models/" + quote(name, safe="") + "/unload",
            {},
            DEFAULT_LOAD_TIMEOUT if timeout is None else timeout,
        )

    def infer_json(
        self, name: str, inputs: list[dict[str, Any]], *, outputs: list[str] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Run a plain KServe v2 JSON inference.

        ``inputs`` are ``{"name", "shape", "datatype", "data"}`` dicts (``data`` flat or nested lists).
        Returns Triton's response: ``{"model_name", "outputs": [{"name", "shape", "datatype", "data"}]}``.
        """
        body: dict[str, Any] = {"inputs": inputs}
        if outputs:
            body["outputs"] = [{"name": output} for output in outputs]
        return self._call("POST", self._model_path(name) + "/infer", body, timeout)

    def generate_stream(
        self, name: str, body: dict[str, Any], *, timeout: float | None = None, max_events: int = 10_000
    ) -> list[dict[str, Any]]:
        """POST ``/v2/models/{name}/generate_stream`` (a decoupled model) and return every event's
        JSON object. Triton reports failures inside the event stream, before the first token with
        HTTP 400 and later inside a 200 stream: any event with an ``error`` key raises
        :class:`TritonError` with that text."""
        seconds = self.timeout if timeout is None else timeout
        try:
            response = self._pool.request(
                "POST",
                self.base_url + self._model_path(name) + "/generate_stream",
                body=json.dumps(body).encode("utf-8"),
                headers={"Content-Type": "application/json", "Accept": "text/event-stream", **self._auth},
                timeout=urllib3.Timeout(connect=min(seconds, 10.0), read=seconds),
                retries=False,
                redirect=False,
                preload_content=False,
            )
        except AddressRefused as exc:
            raise TritonRefused(exc.code, f"Triton at {self.base_url} is refused: {exc.message}") from exc
        except SSLError as exc:
            raise TritonRefused("triton_tls_failed", f"TLS with Triton at {self.base_url} failed: {exc}") from exc
        except (NewConnectionError, Urllib3Timeout, ProtocolError, MaxRetryError, ConnectionError) as exc:
            raise TritonUnavailable(None, f"Triton at {self.base_url} is unavailable: {exc}") from exc
        events: list[dict[str, Any]] = []
        try:
            content_type = response.headers.get("Content-Type", "")
            if "event-stream" not in content_type:
                payload = response.read()
                raise TritonError(response.status, self._error_text(response.status, payload))
            buffer = b""
            for chunk in response.stream(65536):
                buffer += chunk
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    data = b"\n".join(line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:"))
                    if not data:
                        continue
                    try:
                        event = json.loads(data)
                    except ValueError as exc:
                        raise TritonError(response.status, f"Triton sent an invalid event: {exc}") from exc
                    if isinstance(event, dict) and "error" in event:
                        raise TritonError(response.status, str(event["error"]))
                    events.append(event)
                    if len(events) >= max_events:
                        return events
        except (Urllib3Timeout, ProtocolError) as exc:
            raise TritonUnavailable(None, f"Triton at {self.base_url} broke off the stream: {exc}") from exc
        finally:
            # An unread rest (max_events reached, an error) must not go back into the pool; closing
            # also cancels the request on Triton (is_cancelled()).
            response.close()
            response.release_conn()
        if not 200 <= response.status < 300:
            raise TritonError(response.status, f"HTTP {response.status}")
        return events

    def probe(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> tuple[int, str]:
        """One raw call (``path`` from ``/v2``): the HTTP status and the answer's error text, cleaned
        and bounded. For checks that expect a refusal (compliance `triton.bypass_refused`)."""
        status, payload = self._request(method, path, body, timeout)
        return status, clean_upstream_text(self._error_text(status, payload) if payload else "")

    def repository_index(self) -> list[dict[str, Any]]:
        """Return Triton's repository index: ``[{"name", "version", "state", "reason"}, ...]``."""
        return self._call("POST", "/v2/repository/index", {}) or []

    def metrics(self, metrics_url: str, *, timeout: float | None = None) -> str:
        """Return the Prometheus text exposition at ``metrics_url`` (Triton serves it on its metrics port)."""
        try:
            response = self._pool.request(
                "GET",
                metrics_url,
                timeout=self.timeout if timeout is None else timeout,
                retries=False,
            )
        except AddressRefused as exc:
            raise TritonRefused(exc.code, f"Triton metrics at {metrics_url} are refused: {exc.message}") from exc
        except SSLError as exc:
            raise TritonRefused("triton_tls_failed", f"TLS with Triton metrics at {metrics_url} failed: {exc}") from exc
        except (NewConnectionError, Urllib3Timeout, ProtocolError, MaxRetryError, ConnectionError) as exc:
            raise TritonUnavailable(None, f"Triton metrics at {metrics_url} are unavailable: {exc}") from exc
        if response.status != 200:
            raise TritonError(response.status, self._error_text(response.status, response.data))
        return response.data.decode("utf-8", "replace")
