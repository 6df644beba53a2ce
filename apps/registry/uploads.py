"""The upload handler of `POST /api/v1/registry/imports/`: a GGUF of many gigabytes goes straight
to the staging directory, encrypted segment by segment under an ephemeral data key as it arrives
(never whole in memory, never plaintext on disk). Past SOVEREIGN_MAX_IMPORT_BYTES the staging file
is removed and the rest of the upload discarded, so the view refuses it with `file_too_large`.
Only the form field `file` is staged; any other file field is discarded.

The ephemeral key is wrapped by the active KEK at once; its wrapped bytes travel with the
StagedUpload into the ImportJob row, which the import task uses to decrypt and then clears."""

from __future__ import annotations

import hashlib
import io
import uuid

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler

from apps.keys import services as keys
from apps.keys.models import Purpose

from .staging import staging_dir
from .storage import PrivateSink

FIELD = "file"


class StagedUpload(UploadedFile):
    """What the view sees in request.FILES["file"]: no bytes, only where the ciphertext waits."""

    def __init__(self, *, name, size, staging_name, aad, suite, kek_id, wrapped, sha256, too_large):
        super().__init__(file=io.BytesIO(), name=name, content_type="application/octet-stream", size=size)
        self.staging_name, self.aad, self.suite, self.kek_id = staging_name, aad, suite, kek_id
        self.wrapped, self.sha256, self.too_large = wrapped, sha256, too_large
        self.claimed = False  # set when an ImportJob takes it; otherwise the view deletes it

    @property
    def path(self):
        return staging_dir() / self.staging_name if self.staging_name else None

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.staging_name = ""


class StagingUploadHandler(FileUploadHandler):
    def __init__(self, request=None) -> None:
        super().__init__(request)
        self.staged = False
        self._active = False

    def new_file(self, field_name, file_name, *args, **kwargs):
        super().new_file(field_name, file_name, *args, **kwargs)
        self._active = field_name == FIELD and not self.staged
        if not self._active:
            return
        self.staged = True
        self.total = 0
        self.too_large = False
        self.hash = hashlib.sha256()
        self.staging_name = f"{uuid.uuid4().hex}.gguf.enc"
        self.aad = f"sovereign:import:{self.staging_name}"
        self.sealer = keys.StreamSealer(purpose=Purpose.ARTIFACT)
        self.sink = PrivateSink(staging_dir() / self.staging_name)
        self.encryptor = self.sealer.encryptor(self.sink, self.aad.encode())

    def receive_data_chunk(self, raw_data, start):
        if not self._active:
            return None  # discarded
        self.total += len(raw_data)
        if self.too_large:
            return None
        if self.total > settings.MAX_IMPORT_BYTES:
            self.too_large = True
            self._drop()
            return None
        self.hash.update(raw_data)
        self.encryptor.write(raw_data)
        return None

    def _drop(self) -> None:
        self.sink.discard()
        self.sealer.close()

    def file_complete(self, file_size):
        if not self._active:
            return None
        self._active = False
        if not self.too_large:
            self.encryptor.close()
            self.sink.close()
            self.sealer.close()
        key = self.sealer.data_key
        return StagedUpload(
            name=self.file_name,
            size=self.total,
            staging_name="" if self.too_large else self.staging_name,
            aad=self.aad,
            suite=key.suite,
            kek_id=key.kek_id,
            wrapped=bytes(key.wrapped),
            sha256=self.hash.hexdigest(),
            too_large=self.too_large,
        )

    def upload_interrupted(self):
        if self._active and not self.too_large:
            self._drop()
        self._active = False


class DiscardingUploadHandler(FileUploadHandler):
    """For a caller who may not import (a session without `registry.add_modelversion`): the body is
    read and dropped — nothing staged, nothing encrypted — before the refusal (DRF's CSRF check
    parses the body ahead of the permission check)."""

    def receive_data_chunk(self, raw_data, start):
        return None

    def file_complete(self, file_size):
        return None
