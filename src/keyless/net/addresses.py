"""Which addresses keyless may connect to when it fetches an issuer's keys (pure, no I/O).

An issuer URL, and every URL taken from its discovery document, is chosen by whoever
registered the issuer or runs it, not by keyless's operator: without a policy, ``issuer add``
would be a way to make the server send requests to its own network (the cloud metadata
service, a database's HTTP port, an admin console on loopback). So keyless connects only to
globally routable unicast addresses, and to the ranges an operator names
(``--allow-issuer-network CIDR``) or loopback in ``--dev``.

Rules, for the address actually connected to (see ``keyless.net.connect``):

- refused, and never allowed by any CIDR: unspecified (0.0.0.0/8, ``::``), multicast and the
  IPv4 broadcast address, which are not one host to fetch from;
- refused unless a CIDR names exactly that single address (``169.254.169.254/32``): the cloud
  metadata and host-agent addresses (``METADATA``), so that allowing a private range never
  opens the metadata service that sits inside it;
- refused unless ``--dev`` or a CIDR allows it: loopback;
- refused unless a CIDR allows it: every other range that is not globally routable (link-local,
  RFC 1918, carrier-grade NAT, unique local, documentation, benchmarking, reserved, ...);
- IPv6 forms that embed an IPv4 address (IPv4-mapped, NAT64 ``64:ff9b::/96``, 6to4, Teredo)
  are judged by the IPv4 address they lead to, CIDRs included.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# never: no CIDR allows it; metadata: only a CIDR naming exactly it; loopback: --dev or a CIDR;
# allowable: a CIDR.
Kind = Literal["never", "metadata", "loopback", "allowable"]

_net = ipaddress.ip_network

METADATA: dict[Address, str] = {
    ipaddress.ip_address(ip): name
    for ip, name in (
        (
            "169.254.169.254",
            "the cloud metadata address (AWS, Azure, Google Cloud, OpenStack, ...)",
        ),
        ("169.254.170.2", "the AWS ECS task metadata address"),
        ("169.254.170.23", "the AWS EKS Pod Identity agent address"),
        ("169.254.0.23", "the Tencent Cloud metadata address"),
        ("100.100.100.200", "the Alibaba Cloud metadata address"),
        ("192.0.0.192", "the Oracle Cloud metadata address"),
        ("168.63.129.16", "the Azure WireServer (host agent) address"),
        ("fd00:ec2::254", "the AWS IPv6 metadata address"),
        ("fd00:ec2::23", "the AWS EKS Pod Identity agent IPv6 address"),
        ("fd20:ce::254", "the Google Cloud IPv6 metadata address"),
    )
}

# First match wins, so a specific range comes before the one that holds it.
_TABLE: tuple[tuple[str, Kind, str], ...] = (
    ("0.0.0.0/8", "never", "an unspecified ('this network') address"),
    ("10.0.0.0/8", "allowable", "a private address (RFC 1918)"),
    ("100.64.0.0/10", "allowable", "a carrier-grade NAT address (RFC 6598)"),
    ("127.0.0.0/8", "loopback", "a loopback address"),
    ("169.254.0.0/16", "allowable", "a link-local address"),
    ("172.16.0.0/12", "allowable", "a private address (RFC 1918)"),
    ("192.0.0.0/24", "allowable", "an IETF protocol assignment address (192.0.0.0/24)"),
    ("192.0.2.0/24", "allowable", "a documentation address (RFC 5737)"),
    ("192.88.99.0/24", "allowable", "a deprecated 6to4 relay address (RFC 7526)"),
    ("192.168.0.0/16", "allowable", "a private address (RFC 1918)"),
    ("198.18.0.0/15", "allowable", "a benchmarking address (RFC 2544)"),
    ("198.51.100.0/24", "allowable", "a documentation address (RFC 5737)"),
    ("203.0.113.0/24", "allowable", "a documentation address (RFC 5737)"),
    ("224.0.0.0/4", "never", "a multicast address"),
    ("255.255.255.255/32", "never", "the broadcast address"),
    ("240.0.0.0/4", "allowable", "a reserved address (240.0.0.0/4)"),
    ("::/128", "never", "the unspecified address"),
    ("::1/128", "loopback", "a loopback address"),
    ("64:ff9b:1::/48", "allowable", "a local-use NAT64 address (RFC 8215)"),
    ("100::/64", "allowable", "a discard-only address (RFC 6666)"),
    ("2001:db8::/32", "allowable", "a documentation address (RFC 3849)"),
    ("2001::/23", "allowable", "an IETF protocol assignment address (2001::/23)"),
    ("3fff::/20", "allowable", "a documentation address (RFC 9637)"),
    ("fc00::/7", "allowable", "a unique local address (fc00::/7)"),
    ("fe80::/10", "allowable", "a link-local address"),
    ("fec0::/10", "allowable", "a deprecated site-local address"),
    ("ff00::/8", "never", "a multicast address"),
)
_RANGES = tuple((_net(cidr), kind, what) for cidr, kind, what in _TABLE)
_GLOBAL_UNICAST_V6 = _net("2000::/3")
_NAT64 = _net("64:ff9b::/96")
_TEREDO = _net("2001::/32")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an address is refused: ``what`` it is (e.g. "a private address (RFC 1918)") and
    ``hint``, how an operator could allow it (empty when nothing can)."""

    address: Address
    what: str
    hint: str

    def describe(self, host: str) -> str:
        """One line: ``HOST resolves to ADDRESS, WHAT; HINT`` (``ADDRESS is WHAT`` for literals)."""
        shown = host.strip("[]")
        if _is_canonical_literal(shown):
            text = f"{shown} is {self.what}"
        elif parse_ip_literal(shown) is not None:  # 2130706433, 0x7f.1, ...
            text = f"{shown} is {self.address}, {self.what}"
        else:
            text = f"{shown} resolves to {self.address}, {self.what}"
        return f"{text}; {self.hint}" if self.hint else text


def embedded_ipv4(address: Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 form leads to, and the form's name; None for other addresses.

    Teredo leads to two (its server and the client's public mapping): the client is returned
    when both are routable, else the first one that is not, so that either one refuses it.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "an IPv4-mapped address"
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "a NAT64 address"
    if address.sixtofour is not None:
        return address.sixtofour, "a 6to4 address"
    if address in _TEREDO and address.teredo is not None:
        server, client = address.teredo
        worst = next((ip for ip in (server, client) if _classify(ip) is not None), client)
        return worst, "a Teredo address"
    return None


def _plain(address: Address) -> Address:
    """``address`` without an IPv6 scope id (``fe80::1%eth0``): it does not change a verdict."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return ipaddress.IPv6Address(int(address))
    return address


def _classify(address: Address) -> tuple[Kind, str] | None:
    """``(kind, what)`` for an address that is not globally routable; None for one that is."""
    named = METADATA.get(_plain(address))
    if named is not None:
        return "metadata", named
    for network, kind, what in _RANGES:
        if address.version == network.version and address in network:
            return kind, what
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return "allowable", "a reserved address (outside 2000::/3)"
    if not address.is_global:  # anything a newer registry knows of that the table does not
        return "allowable", "a reserved address"
    return None


class AddressPolicy:
    """Decides, per address, whether keyless may open a connection to it."""

    def __init__(self, *, allow_loopback: bool = False, allowed: Iterable[Network] = ()) -> None:
        self.allow_loopback = allow_loopback
        self.allowed: tuple[Network, ...] = tuple(allowed)

    def _named(self, address: Address) -> bool:
        return any(address.version == net.version and address in net for net in self.allowed)

    def check(self, address: Address) -> Refusal | None:
        """None if ``address`` may be connected to, else why not."""
        plain = _plain(address)
        inner = embedded_ipv4(plain)
        if inner is not None:
            v4, form = inner
            refusal = self.check(v4)
            if refusal is None:
                return None
            return Refusal(address, f"{form} of {v4}, {refusal.what}", refusal.hint)
        found = _classify(plain)
        if found is None:
            return None
        kind, what = found
        if kind == "never":
            return Refusal(address, what, "")
        if kind == "metadata":
            exact = _net(f"{plain}/{plain.max_prefixlen}")
            if exact in self.allowed:
                return None
            return Refusal(
                address, what, f"refused unless --allow-issuer-network names exactly {exact}"
            )
        if self._named(plain):
            return None
        if kind == "loopback":
            if self.allow_loopback:
                return None
            return Refusal(
                address, what, "allow it with --allow-issuer-network (or --dev, in development)"
            )
        return Refusal(address, what, "allow it with --allow-issuer-network")


# -- host names that are IPv4 addresses in disguise -------------------------------------------

_NUMBER = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def _ipv4_number(part: str) -> int | None:
    if not _NUMBER.fullmatch(part):
        return None
    if part[:2] in ("0x", "0X"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part[0] == "0":
        return int(part, 8)
    return int(part)


def _numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """What inet_aton (and WHATWG's URL parser) makes of ``host``: ``2130706433``,
    ``0x7f.1``, ``017700000001`` and ``127.1`` are all 127.0.0.1. None if not numeric."""
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts.pop()  # one trailing dot is allowed
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        return None
    value = last
    for index, n in enumerate(head):
        value += n << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _is_canonical_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_ip_literal(host: str) -> Address | None:
    """The address ``host`` names without any DNS lookup (an IPv4 or IPv6 literal, or an IPv4
    address in a numeric form that resolvers accept), or None if it is a name."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return _numeric_ipv4(text)


def parse_network(text: str, what: str) -> Network:
    """``10.0.0.0/8`` or ``fd00::/8`` (a bare address is one host); ValueError with one line."""
    value = text.strip()
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(
                f"{what}: {text!r} is not a CIDR like 10.0.0.0/8 or fd00::/8"
            ) from None
        raise ValueError(f"{what}: {text!r} has host bits set; did you mean {loose}?") from None
