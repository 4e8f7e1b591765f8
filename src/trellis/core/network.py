"""Who is on the other end of a request, behind the reverse proxies we were told to trust.

Behind a proxy, REMOTE_ADDR is the proxy's address, and a rate limit keyed on it would count
every customer as one. X-Forwarded-For is written by the client, though: only the entries added
by proxies in TRELLIS["TRUSTED_PROXIES"] are believed, read from the right (the nearest hop)
until the first address that is not such a proxy.
"""

import ipaddress
from functools import cache

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _trusted(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in proxies if p.strip())


def _is_trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _trusted(tuple(settings.TRELLIS["TRUSTED_PROXIES"])))


def client_address(request: HttpRequest) -> str:
    """The client's IP address (as text), or the proxy's when it gives none we can believe."""
    address = request.META.get("REMOTE_ADDR", "")
    if not _is_trusted(address):
        return address
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # garbled: believe nothing further out
        if not _is_trusted(hop):
            return hop
        address = hop
    return address
