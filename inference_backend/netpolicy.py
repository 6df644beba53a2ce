"""Which network addresses the portal may open a connection to as a "Triton server".

A Triton server URL is typed by an administrator, and the portal then sends it model files and
inference requests and shows what it answers: a URL pointing at a cloud metadata service, a
link-local or multicast address, or a host outside the networks the operator expects is refused.
The same :class:`ServerPolicy` is applied when a server is registered and again on **every new
connection** (:mod:`inference_backend.transport`), after resolving the host name and to the very
address that was checked, so a name that later resolves elsewhere (DNS rebinding) is caught.

No Django here: the portal builds the policy from its settings (apps/deployments/transport.py).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Instance-metadata endpoints that are not already link-local (169.254.0.0/16 always is refused).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, Huawei (link-local anyway)
        "fd00:ec2::254",  # AWS IPv6 instance metadata
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
    )
)
#: Host names of metadata services (refused by name, whatever they resolve to), and their subdomains.
METADATA_HOSTNAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.azure.internal",
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(Exception):
    """The policy refuses this server. ``code`` is stable (API error code); ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        """Keep the machine-readable ``code`` next to the human-readable message."""
        super().__init__(message)
        self.code = code
        self.message = message


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse CIDR strings (``10.20.0.0/16``, ``fd12::/48``, a bare address); ValueError names a bad one."""
    networks = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a network in CIDR notation ({exc})") from None
    return tuple(networks)


def normalize_host(host: str) -> str:
    """Lower-case, without the brackets of an IPv6 literal or a trailing dot."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".")


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped ::ffff:a.b.c.d, NAT64, 6to4), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def effective_address(ip: IPAddress) -> IPAddress:
    """The address a connection really reaches: the embedded IPv4 one when there is one."""
    return _embedded_ipv4(ip) or ip


def _forbidden_reason(ip: IPAddress) -> str | None:
    if ip in METADATA_ADDRESSES:
        return "a cloud instance-metadata address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:  # before "reserved": ::1 lies in the reserved ::/8
        return None
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    return None


@dataclass(frozen=True)
class ServerPolicy:
    """What a Triton server address may be.

    Always refused: link-local (169.254/16, fe80::/10), multicast, unspecified, reserved, the
    cloud metadata addresses and names (also when hidden in an IPv4-mapped, NAT64 or 6to4 IPv6
    address). ``allowed_networks``, when not empty, is an allow-list every resolved address must
    fall in. ``require_tls`` (production): a server with any non-loopback address must be
    reached over https, and then only with a pinned CA (``ca_pinned``).
    """

    allowed_networks: tuple[IPNetwork, ...] = ()
    require_tls: bool = False
    ca_pinned: bool = False

    def check_address(self, ip: IPAddress, host: str = "") -> None:
        """Raise :class:`AddressRefused` if a connection to ``ip`` is not allowed."""
        shown = f"{host} ({ip})" if host and host != str(ip) else str(ip)
        effective = effective_address(ip)
        reason = _forbidden_reason(effective)
        if reason:
            raise AddressRefused("server_address_forbidden", f"{shown} is {reason}; it cannot be a Triton server")
        inside = any(effective in net for net in self.allowed_networks if net.version == effective.version)
        if self.allowed_networks and not inside:
            allowed = ", ".join(map(str, self.allowed_networks))
            raise AddressRefused(
                "server_address_not_allowed",
                f"{shown} is outside the networks allowed for Triton servers "
                f"(SOVEREIGN_TRITON_ALLOWED_NETWORKS: {allowed})",
            )

    def check_hostname(self, host: str) -> None:
        """Refuse metadata-service names before anything is resolved."""
        name = normalize_host(host)
        if any(name == m or name.endswith("." + m) for m in METADATA_HOSTNAMES):
            raise AddressRefused("server_address_forbidden", f"{name} is a cloud instance-metadata service")

    def resolve(self, host: str, port: int | None) -> list[IPAddress]:
        """Every address ``host`` resolves to, each checked; raises :class:`AddressRefused` if any is
        refused (one bad answer taints the name) and ``socket.gaierror`` if it does not resolve."""
        name = normalize_host(host)
        self.check_hostname(name)
        try:
            addresses = [ipaddress.ip_address(name)]
        except ValueError:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        for ip in addresses:
            self.check_address(ip, name)
        return addresses

    def check_transport(self, scheme: str, host: str, addresses: list[IPAddress]) -> None:
        """In production, anything but loopback needs https with a pinned CA."""
        if not self.require_tls or (addresses and all(effective_address(ip).is_loopback for ip in addresses)):
            return
        if scheme != "https":
            raise AddressRefused(
                "server_tls_required",
                f"{host} is not a loopback address: in production a Triton server must be reached over https "
                "(a TLS proxy beside Triton, docs/triton-tls.md)",
            )
        if not self.ca_pinned:
            raise AddressRefused(
                "server_ca_required",
                f"https to {host} needs a pinned CA in production: set SOVEREIGN_TRITON_CA_FILE (docs/triton-tls.md)",
            )
