"""Who a request comes from, for per-client limits: the peer address, unless a trusted front proxy says otherwise.

A forwarded header is believed only when the peer itself is one of `TRUSTED_PROXIES`; anyone else could write any
address into it and get a fresh budget per request. `X-Forwarded-For` is read right to left, skipping the
trusted proxies' own addresses: the first one that is not a proxy is the client (entries left of it are whatever
the client claimed).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"


def parse_networks(text: str) -> list[Network]:
    """`10.0.0.0/8, 127.0.0.1` -> networks; raises ValueError naming the entry that is neither."""
    networks: list[Network] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
    return networks


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


class ClientAddress:
    """Resolves a request's client address; `header` (e.g. `x-forwarded-for`) only from `trusted` peers."""

    def __init__(self, header: str | None, trusted: Sequence[Network]) -> None:
        self._header = header.lower() if header else None
        self._trusted = tuple(trusted)

    def _is_trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self._trusted)

    def of(self, connection: HTTPConnection) -> str:
        peer_text = connection.client.host if connection.client else UNKNOWN
        peer = _address(peer_text)
        if self._header is None or peer is None or not self._is_trusted(peer):
            return peer_text
        forwarded = connection.headers.get(self._header)
        if not forwarded:
            return peer_text
        client = peer
        for entry in reversed(forwarded.split(",")):
            address = _address(entry)
            if address is None:
                break  # garbage from here on: the last proxy-verified address stands
            client = address
            if not self._is_trusted(address):
                break
        return str(client)

    def arrived_over_tls(self, connection: HTTPConnection) -> bool:
        """HTTPS (or WSS) to this process, or `X-Forwarded-Proto: https` from a trusted proxy (its last entry: the
        one the nearest proxy wrote; what a client wrote to the left of it proves nothing)."""
        if connection.scope.get("scheme") in ("https", "wss"):
            return True
        peer = _address(connection.client.host) if connection.client else None
        if peer is None or not self._is_trusted(peer):
            return False
        forwarded = connection.headers.get("x-forwarded-proto", "")
        return forwarded.rsplit(",", 1)[-1].strip().lower() == "https"
