"""Query parameters several list routes share, bounded and checked like request bodies: a cursor
is a short clean string, and a datetime is one that can be held in UTC (a naive one is UTC)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from coldplate.checked import SafeStr, UtcDatetime

Since = Annotated[UtcDatetime | None, Query(description="only what starts at or after this instant")]
Until = Annotated[UtcDatetime | None, Query(description="only what starts before this instant")]
Cursor = Annotated[SafeStr | None, Query(max_length=500, description="next_cursor of the previous page")]
