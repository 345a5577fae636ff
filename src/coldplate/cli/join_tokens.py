"""`coldplate join-tokens create|list|revoke` (admin): the tokens new hosts register with."""

from __future__ import annotations

from typing import Any

import typer

from coldplate.cli.output import api, show

join_tokens_app = typer.Typer(help="Join tokens for registering new hosts (admin).", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
COLUMNS: list[tuple[str, Any]] = [
    ("id", lambda t: t.id), ("name", lambda t: t.name), ("state", lambda t: t.state),
    ("uses", lambda t: f"{t.uses}/{t.max_uses}" if t.max_uses is not None else str(t.uses)),
    ("expires", lambda t: t.expires_at or "never"), ("created", lambda t: t.created_at),
]


@join_tokens_app.command("create")
def create(name: str = typer.Option("agent"),
           expires_in_hours: float = typer.Option(None, help="Refused after this many hours."),
           expires_at: str = typer.Option(None, help="Refused from this time on (ISO 8601 with a zone)."),
           max_uses: int = typer.Option(None, help="How many new hosts may register with it."),
           as_json: bool = JSON) -> None:
    """Create a join token; its secret is shown only now. Hand it to the host's agent in
    COLDPLATE_JOIN_TOKEN or a 0600 file (--join-token-file), never on a command line."""
    with api() as client:
        token = client.create_join_token(name, expires_in_hours=expires_in_hours, expires_at=expires_at,
                                         max_uses=max_uses)
    show(token, as_json, [*COLUMNS, ("token", lambda t: t.token)])


@join_tokens_app.command("list")
def list_(as_json: bool = JSON) -> None:
    """Every join token with its state and use count (never the secret)."""
    with api() as client:
        show(client.list_join_tokens(), as_json, COLUMNS)


@join_tokens_app.command("revoke")
def revoke(token_id: str) -> None:
    """Refuse the token from now on (hosts already registered keep their own agent tokens)."""
    with api() as client:
        client.revoke_join_token(token_id)
    typer.echo(f"revoked {token_id}")
