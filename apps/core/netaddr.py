"""The client's address: the one function every part of the portal reads it through (the audit
log's Source, django-axes, a token's last-used address, the rate limiter).

`X-Forwarded-For` is believed only as far as it was written by proxies we trust
(SOVEREIGN_TRUSTED_PROXIES, a list of CIDRs): starting from the socket peer, walk the header right
to left while the hop we are at is a trusted proxy; the first untrusted hop is the client. A
client cannot forge its way past this, because anything it writes into the header sits to the
left of what our own proxies appended. With no trusted proxies the header is ignored entirely.

`client_address` is framework-free (the async data plane calls it with the peer and the header);
`request_client_address` is the Django wrapper, memoised on the request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_ATTR = "_sv_client_address"
_networks_cache: tuple[tuple[str, ...], tuple[Network, ...]] = ((), ())


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) as networks; raises ValueError naming a malformed entry."""
    nets = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"SOVEREIGN_TRUSTED_PROXIES: {cidr!r} is not an address or CIDR") from exc
    return tuple(nets)


def _parse(value: str | None) -> Address | None:
    """An address as proxies write it: bare, `v4:port`, `[v6]` or `[v6]:port`; None if malformed."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # IPv4 with a port; a bare IPv6 has several colons
        value = value.partition(":")[0]
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(addr: Address, trusted: Sequence[Network]) -> bool:
    return any(addr.version == net.version and addr in net for net in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """The client's address given the socket peer, the X-Forwarded-For header and the trusted
    proxies: the rightmost hop that is not a trusted proxy. A malformed hop ends the walk at the
    last trusted hop seen (a proxy's address, never a string the client chose)."""
    current = _parse(peer)
    if current is None:
        return None
    if not trusted or not forwarded_for or not _trusted(current, trusted):
        return str(current)
    for hop in reversed(forwarded_for.split(",")):
        addr = _parse(hop)
        if addr is None:
            break
        current = addr
        if not _trusted(addr, trusted):
            break
    return str(current)


def trusted_proxies() -> tuple[Network, ...]:
    """settings.TRUSTED_PROXIES parsed once (and again if a test changes the setting)."""
    global _networks_cache
    from django.conf import settings

    source = tuple(getattr(settings, "TRUSTED_PROXIES", ()) or ())
    if source != _networks_cache[0]:
        _networks_cache = (source, parse_networks(source))
    return _networks_cache[1]


def request_client_address(request) -> str | None:
    """The client address of a Django request (memoised on it). Also django-axes'
    AXES_CLIENT_IP_CALLABLE."""
    request = getattr(request, "_request", request)  # a DRF Request wraps the Django one
    cached = getattr(request, _ATTR, False)
    if cached is not False:
        return cached
    meta = request.META
    addr = client_address(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"), trusted_proxies())
    setattr(request, _ATTR, addr)
    return addr


def limit_key(addr: str | None, ipv6_prefix: int = 64) -> str:
    """The address as a rate-limit subject: an IPv6 client owns a whole prefix (usually a /64),
    so it is counted by that prefix, not by each of its 2**64 addresses."""
    if not addr:
        return "unknown"
    parsed = ipaddress.ip_address(addr)
    if parsed.version == 6 and ipv6_prefix < 128:
        return str(ipaddress.ip_network(f"{addr}/{ipv6_prefix}", strict=False))
    return addr
