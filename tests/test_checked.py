"""The checked field types every request and agent message is built from."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel, Field, ValidationError

from coldplate.checked import AbsolutePath, FiniteFloat, Int32, Int64, SafeStr, clean_text, normalised_path


class Fields(BaseModel):
    text: SafeStr = ""
    small: Int32 = 0
    big: Int64 = 0
    ratio: FiniteFloat = 0.0
    path: AbsolutePath = "/"
    short: Annotated[SafeStr, Field(max_length=3)] = ""


@pytest.mark.parametrize("value", ["a\x00", "\ud800", "x\udfff", "\x00"])
def test_unstorable_text_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        clean_text(value)
    with pytest.raises(ValidationError) as raised:
        Fields(text=value)
    assert raised.value.errors()[0]["loc"] == ("text",)


@pytest.mark.parametrize("value", ["", "héllo", "\U0001f600 emoji", "tab\tnew\nline"])
def test_ordinary_text_passes(value: str) -> None:
    assert Fields(text=value).text == value


@pytest.mark.parametrize(("field", "value"), [
    ("small", 2**31), ("small", -(2**31) - 1), ("big", 2**63), ("big", -(2**63) - 1),
    ("ratio", float("nan")), ("ratio", float("inf")), ("ratio", float("-inf")), ("short", "abcd"),
])
def test_numbers_past_their_column_and_non_finite_floats_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as raised:
        Fields.model_validate({field: value})
    assert raised.value.errors()[0]["loc"] == (field,)


def test_the_edges_of_each_column_pass() -> None:
    edges = Fields(small=2**31 - 1, big=-(2**63), ratio=1e308)
    assert (edges.small, edges.big, edges.ratio) == (2**31 - 1, -(2**63), 1e308)


@pytest.mark.parametrize(("raw", "normal"), [
    ("//etc", "/etc"), ("///etc/", "/etc"), ("//proc/x", "/proc/x"), ("/data/../etc", "/etc"),
    ("/a/./b//c/", "/a/b/c"), ("/", "/"), ("//", "/"), ("/data", "/data"),
])
def test_paths_are_normalised_before_they_are_checked(raw: str, normal: str) -> None:
    assert normalised_path(raw) == normal
    assert Fields(path=raw).path == normal


@pytest.mark.parametrize("raw", ["etc", "", "./x", "/a\x00b"])
def test_relative_or_unclean_paths_are_refused(raw: str) -> None:
    with pytest.raises(ValidationError):
        Fields(path=raw)


def test_instants_are_taken_to_utc_and_those_utc_cannot_hold_are_refused() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from coldplate.checked import in_utc

    plus2 = timezone(timedelta(hours=2))
    assert in_utc(datetime(2026, 1, 1, 2, tzinfo=plus2)) == datetime(2026, 1, 1, tzinfo=UTC)
    assert in_utc(datetime(2026, 1, 1, 2, tzinfo=plus2)).tzinfo is UTC
    assert in_utc(datetime(2026, 1, 1)) == datetime(2026, 1, 1, tzinfo=UTC)  # naive is UTC
    for edge in (datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14))),
                 datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))):
        with pytest.raises(ValueError, match="out of range"):
            in_utc(edge)
