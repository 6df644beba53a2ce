"""The API's default pagination: limit/offset with a ceiling on the page size.

DRF's LimitOffsetPagination has no `max_limit` by default, so `?limit=1000000000` made one request
read, serialise and hold a whole table. The ceiling (SOVEREIGN_API_MAX_PAGE_SIZE, 500 by default)
caps it silently, as DRF does: the answer's `next` link leads to the rest. The audit log keeps its
own cursor pagination (at most 1000 a page) and its export streams without pages."""

from __future__ import annotations

from django.conf import settings
from rest_framework.pagination import LimitOffsetPagination


class CappedLimitOffsetPagination(LimitOffsetPagination):
    @property
    def max_limit(self) -> int:
        return settings.API_MAX_PAGE_SIZE
