"""Files only their owner may read: the data directory (0700) and the secrets and database in it
(0600). Modes are set when a file is created (so there is no moment it is readable by others) and
tightened again on every start (a directory made by an older version, or by hand, may be looser)."""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """`path` exists, is owned by us as before, and is 0700 (its parents are left as they are)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path.chmod(DIR_MODE)
    return path


def tighten(path: Path) -> None:
    """A file that exists is made 0600; one that does not is left alone."""
    try:
        path.chmod(FILE_MODE)
    except FileNotFoundError:
        pass


def create_private(path: Path) -> None:
    """Creates an empty 0600 file if there is none (so whoever fills it later inherits the mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def write_private(path: Path, content: str | bytes) -> None:
    """Writes `content` to a 0600 file, replacing any old one in one step (never half-written)."""
    data = content.encode() if isinstance(content, str) else content
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def read_private(path: Path) -> str:
    """Reads a secret we own, tightening its mode first if it was looser."""
    tighten(path)
    return path.read_text().strip()
