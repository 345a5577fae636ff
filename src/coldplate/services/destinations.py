"""Where a webhook may be sent: only http(s), and (unless allowed) never to loopback, private,
link-local or otherwise non-public addresses.

The check runs on the RESOLVED addresses, and the dispatcher then connects to the address it
checked (the URL's host stays in the Host header and in TLS's SNI), so a name that resolves to a
public address at check time and to 127.0.0.1 a moment later (DNS rebinding) cannot slip through."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from coldplate.services.errors import InvalidInput


class DestinationRefused(Exception):
    """The URL is well-formed but resolves somewhere webhooks may not go (or does not resolve)."""


class Unresolvable(DestinationRefused):
    """The URL's host does not resolve (now)."""


@dataclass(frozen=True)
class Destination:
    """A checked URL and the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address."""
        parts = urlsplit(self.url)
        host = f"[{self.address}]" if ":" in self.address else self.address
        return SplitResult(parts.scheme, f"{host}:{self.port}", parts.path or "/", parts.query, "").geturl()

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse(url: str) -> SplitResult:
    """Syntax only: an absolute http(s) URL with a host and no credentials."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise InvalidInput(f"url is not a valid URL: {exc}", param="url") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("url must be an http:// or https:// URL", param="url")
    if not parts.hostname:
        raise InvalidInput("url must name a host", param="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url must not carry credentials; the signature authenticates deliveries", param="url")
    return parts


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def resolve(url: str, *, allow_private: bool) -> Destination:
    """Resolve the URL's host and pick the address to connect to; refuse non-public ones unless allowed.

    Every resolved address must pass, not just the first: the connection could go to any of them."""
    parts = parse(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise Unresolvable(f"{host} does not resolve: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise DestinationRefused(f"{host} resolves to {refused[0]}, a loopback, private or link-local "
                                     f"address; the server was not started with --allow-private-webhooks")
    return Destination(url=url, scheme=parts.scheme, host=host, port=port, address=addresses[0])


def check_at_create(url: str, *, allow_private: bool) -> None:
    """At create and update: refuse what resolves somewhere forbidden now; a name that does not
    resolve yet is accepted (each delivery checks again)."""
    parse(url)
    try:
        resolve(url, allow_private=allow_private)
    except Unresolvable:
        pass
    except DestinationRefused as exc:
        raise InvalidInput(str(exc), param="url") from exc
