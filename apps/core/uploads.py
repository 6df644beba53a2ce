"""Uploads stay in memory: a model file is plaintext, and Django's default handler would spool
anything over 2.5 MB to a temporary file on disk. Past SOVEREIGN_MAX_UPLOAD_BYTES the bytes are
counted but discarded, so the view can refuse the upload with `file_too_large`."""

from io import BytesIO

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler


class InMemoryLimitedUploadHandler(FileUploadHandler):
    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.buffer = BytesIO()
        self.total = 0

    def receive_data_chunk(self, raw_data, start):
        self.total += len(raw_data)
        if self.total <= settings.MAX_UPLOAD_BYTES:
            self.buffer.write(raw_data)
        return None

    def file_complete(self, file_size):
        if self.total > settings.MAX_UPLOAD_BYTES:
            self.buffer = BytesIO()
        self.buffer.seek(0)
        return InMemoryUploadedFile(
            file=self.buffer,
            field_name=self.field_name,
            name=self.file_name,
            content_type=self.content_type,
            size=self.total,
            charset=self.charset,
            content_type_extra=self.content_type_extra,
        )
