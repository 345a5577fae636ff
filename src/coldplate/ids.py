"""Prefixed random identifiers (`inst_…`, `hn_…`) and secrets (`cp_…`)."""

from __future__ import annotations

import hashlib
import re
import secrets

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id(prefix: str, length: int = 16) -> str:
    """`length` base-36 digits of one random integer (a choice per digit costs 10x more)."""
    number = secrets.randbelow(36**length)
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 36)
        digits.append(_ALPHABET[digit])
    return f"{prefix}_" + "".join(digits)


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def is_secret(value: str, prefix: str) -> bool:
    """Whether `value` has the shape new_secret(prefix) gives: the prefix and 32 random bytes."""
    return re.fullmatch(rf"{re.escape(prefix)}_[A-Za-z0-9_-]{{43}}", value) is not None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
