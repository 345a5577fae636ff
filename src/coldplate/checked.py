"""Annotated types for whatever a client or an agent sends: every value fits where it is stored.

A leaf module (pydantic only): the public request schemas (`api/schemas.py`) and the agent protocol
(`protocol.py`) build every field from these, so a value PostgreSQL or a JSON encoder would refuse
(NUL, a lone surrogate, an integer past its column, NaN) is a 422 naming the field before anything
is written, on SQLite as on PostgreSQL.
"""

from __future__ import annotations

import posixpath
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def clean_text(value: str) -> str:
    """The string itself, if it is valid Unicode without NUL (PostgreSQL's text and UTF-8 need both)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode (a lone surrogate is not)") from exc
    return value


def normalised_path(path: str) -> str:
    """An absolute path, normalised: `//etc/./x/..` is `/etc` (posixpath.normpath keeps a leading `//`)."""
    if not path.startswith("/"):
        raise ValueError("must be an absolute path")
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/")


def in_utc(value: datetime) -> datetime:
    """The instant in UTC (a naive one is taken as UTC); one that UTC cannot hold (year 1 at +14:00,
    year 9999 at -14:00) is refused here, not an OverflowError when it is compared or answered."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("is out of range once converted to UTC") from exc


SafeStr = Annotated[str, AfterValidator(clean_text)]
UtcDatetime = Annotated[datetime, AfterValidator(in_utc)]
AwareUtcDatetime = Annotated[AwareDatetime, AfterValidator(in_utc)]
Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
AbsolutePath = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(clean_text),
                         AfterValidator(normalised_path)]
# Identifiers in URL paths: prefixed ids (`inst_…`) and names; anything else cannot name a row.
REF_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"

