"""Secrets an agent holds, kept where `ps` and other users cannot read them.

- The join token comes from the environment (`COLDPLATE_JOIN_TOKEN`) or a file only its owner
  can read (`--join-token-file`), never from the command line: every user on a host sees every
  process's arguments.
- The agent token is kept in `<data-dir>/agent-tokens/<name>` (0600 in a 0700 directory): a new
  host proposes its own and keeps it before asking, so that a lost answer can be retried; the
  server may issue another, which replaces it. A restarted agent presents it to re-register its
  own name; without it, a registered name can only be taken back by an admin
  (services.hostnodes.register)."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from coldplate.files import private_dir, read_private, write_private

JOIN_TOKEN_ENV = "COLDPLATE_JOIN_TOKEN"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class CredentialError(ValueError):
    pass


def read_secret_file(path: Path) -> str:
    """A secret from a file that only its owner may read (like ssh's private keys)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise CredentialError(f"cannot read {path}: {exc.strerror}") from exc
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise CredentialError(f"{path} is readable by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                              f"run `chmod 600 {path}`")
    value = path.read_text().strip()
    if not value:
        raise CredentialError(f"{path} is empty")
    return value


def join_token(file: Path | None) -> str | None:
    """The join token from `file` if given, else from the environment; None when neither has one."""
    if file is not None:
        return read_secret_file(file)
    return os.environ.get(JOIN_TOKEN_ENV) or None


class TokenStore:
    """One agent token per host name, each in its own 0600 file."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / "agent-tokens"

    def path(self, host: str) -> Path:
        safe = host if _SAFE_NAME.match(host) else "h-" + hashlib.sha256(host.encode()).hexdigest()[:32]
        return self.directory / safe

    def load(self, host: str) -> str | None:
        path = self.path(host)
        if not path.exists():
            return None
        return read_private(path) or None

    def save(self, host: str, token: str) -> None:
        private_dir(self.directory)
        write_private(self.path(host), token + "\n")
