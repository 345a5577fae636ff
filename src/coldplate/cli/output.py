"""Printing for the CLI: Rich tables for people, `--json` for scripts, errors on stderr."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from coldplate.client import Client, ColdplateError

console = Console()
errors = Console(stderr=True)


def admin_key_file() -> Path:
    return Path(os.environ.get("COLDPLATE_DATA_DIR", str(Path.home() / ".coldplate"))).expanduser() / "admin-key"


def _default_client() -> Client:
    url = os.environ.get("COLDPLATE_URL", "http://127.0.0.1:8787")
    key = os.environ.get("COLDPLATE_API_KEY")
    if not key and admin_key_file().exists():
        key = admin_key_file().read_text().strip()
    if not key:
        errors.print("error [unauthorized]: set COLDPLATE_API_KEY (or run `coldplate up` to create an admin key)")
        raise typer.Exit(1)
    return Client(url, key)


# Tests replace this to point the CLI at their server.
client_factory: Callable[[], Client] = _default_client


@contextmanager
def api() -> Iterator[Client]:
    """A client for one command; SDK errors become `error [code]: detail` and exit code 1."""
    client = client_factory()
    try:
        yield client
    except ColdplateError as exc:
        errors.print(f"error [{exc.code}]: {exc.detail}", markup=False, highlight=False)
        raise typer.Exit(1) from exc
    finally:
        client.close()


def show(data: BaseModel | Sequence[BaseModel], as_json: bool, columns: list[tuple[str, Callable[[Any], Any]]],
         title: str | None = None) -> None:
    items = [data] if isinstance(data, BaseModel) else list(data)
    if as_json:
        payload = [i.model_dump(mode="json") for i in items]
        typer.echo(json.dumps(payload[0] if isinstance(data, BaseModel) else payload, indent=2))
        return
    table = Table(title=title)
    for name, _ in columns:
        table.add_column(name)
    for item in items:
        table.add_row(*["" if (v := get(item)) is None else str(v) for _, get in columns])
    console.print(table)


def pairs(values: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=option)
        out[key] = val
    return out
