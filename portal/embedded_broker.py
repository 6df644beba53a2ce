"""The embedded Celery broker of `make run`: kombu's filesystem transport, made safe to share.

Why not the stock transport: its producer creates the message file under its final name and
only then writes into it, and its consumer takes any file with that name (flock is advisory, and
the consumer never takes it). A consumer that lists the folder in between reads an empty or
half-written file and dies with JSONDecodeError; with the seal task queued every second this took
`make run`'s worker down within minutes (issue 10). It also moved each message it read to the
system temp directory (world-readable by default), and rewrote exchange tables in place.

What this subclass changes, and nothing else:

- a producer writes the message into `staging/` (same filesystem, 0600) and renames it into the
  queue folder: a consumer sees a whole file or none (rename is atomic within a filesystem);
- a consumer claims a message by renaming it into its own `processing/` folder (the rename is
  the claim: exactly one consumer wins), reads it there and deletes it; a file that still does not
  decode (e.g. left by a process killed mid-write under the old transport) is moved aside to
  `rejected/` with an error in the log, never raised into the worker's event loop;
- exchange tables (fanout bindings) are rewritten by rename under a lock file, so readers need
  no lock and never see a half-written table;
- every folder is 0700 and every file 0600: message bodies are task arguments.

Alternatives considered (docs in README "Embedded broker"): kombu's SQLAlchemy transport on a
SQLite file never deletes consumed rows (86,400 seal messages a day) and has no fanout, and
SQLite's lock upgrade from several processes fails with "database is locked" instead of waiting;
starting redis-server from `make run` only where it is installed would give a newcomer's machine
two different brokers. With REDIS_URL set, Redis is used and this module is not involved.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

from inference_backend.private_file import write_private

logger = logging.getLogger(__name__)

FOLDERS = ("queue", "staging", "processing", "rejected", "control")


def prepare(root: Path) -> dict:
    """Create the broker's folders (0700) under root and return the transport options."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    for sub in FOLDERS:
        (root / sub).mkdir(exist_ok=True, mode=0o700)
        os.chmod(root / sub, 0o700)
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "staging_folder": str(root / "staging"),
        "processing_folder": str(root / "processing"),
        "rejected_folder": str(root / "rejected"),
        "control_folder": str(root / "control"),
        "store_processed": False,
    }


def _write_atomically(folder: str, final: str, data: bytes, staging: str) -> None:
    # Staged outside the queue folder, so a consumer never lists a half-written message; not
    # fsynced: a message is transient (the embedded broker is for one host without Redis).
    write_private(os.path.join(folder, final), data, tmp_dir=staging, sync=False)


class Channel(filesystem.Channel):
    """Atomic publish (stage + rename), claim by rename, tolerant read."""

    @cached_property
    def staging_folder(self) -> str:
        return self.transport_options.get("staging_folder") or os.path.join(self.data_folder_out, os.pardir, "staging")

    @cached_property
    def processing_folder(self) -> str:
        return self.transport_options.get("processing_folder") or os.path.join(
            self.data_folder_in, os.pardir, "processing"
        )

    @cached_property
    def rejected_folder(self) -> str:
        return self.transport_options.get("rejected_folder") or os.path.join(self.data_folder_in, os.pardir, "rejected")

    def _put(self, queue, payload, **kwargs):
        data = str_to_bytes(dumps(payload))  # serialise before anything is visible
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        try:
            _write_atomically(self.data_folder_out, name, data, self.staging_folder)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add message {name!r} to {self.data_folder_out!r}") from exc

    def _get(self, queue):
        wanted = f"{queue}.msg"
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.partition(".")[2] != wanted:
                continue
            claimed = os.path.join(self.processing_folder, filename)
            try:
                os.rename(os.path.join(self.data_folder_in, filename), claimed)  # the claim: one consumer wins
            except FileNotFoundError:
                continue  # another consumer took it
            try:
                with open(claimed, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise filesystem.ChannelError(f"Cannot read message {claimed!r}") from exc
            try:
                payload = loads(bytes_to_str(data))
            except ValueError:
                self._reject(claimed, filename, len(data))
                continue
            if self.store_processed:
                os.replace(claimed, os.path.join(self.processed_folder, filename))
            else:
                os.unlink(claimed)
            return payload
        raise Empty()

    def _reject(self, claimed: str, filename: str, size: int) -> None:
        with contextlib.suppress(OSError):
            os.replace(claimed, os.path.join(self.rejected_folder, filename))
        logger.error(
            "embedded broker: message %s (%d bytes) is not valid JSON; moved to %s",
            filename,
            size,
            self.rejected_folder,
        )

    # --- exchange tables (fanout bindings), rewritten whole under a lock ------------------------

    @contextlib.contextmanager
    def _control_lock(self):
        self.control_folder.mkdir(exist_ok=True, mode=0o700)
        fd = os.open(self.control_folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def get_table(self, exchange):
        file = self._exchange_file(exchange)
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot open {file}") from exc
        return [filesystem.exchange_queue_t(*q) for q in loads(bytes_to_str(data))]

    def _write_table(self, exchange, queues) -> None:
        file = self._exchange_file(exchange)
        _write_atomically(str(file.parent), file.name, str_to_bytes(dumps(queues)), self.staging_folder)

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._exchange_file(exchange)  # validates the name before taking the lock
        with self._control_lock():
            queues = self.get_table(exchange)
            if entry not in queues:
                queues.insert(0, entry)
                self._write_table(exchange, queues)

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs):
        self._purge(queue)
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._control_lock():
            queues = self.get_table(exchange)
            if entry in queues:
                queues.remove(entry)
                self._write_table(exchange, queues)


class Transport(filesystem.Transport):
    Channel = Channel
    driver_type = "filesystem"
    driver_name = "sovereign-filesystem"
