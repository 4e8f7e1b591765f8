import pytest
from django.test import RequestFactory

from trellis.core.network import client_address

PROXIES = ["10.0.0.0/8", "192.0.2.7"]


def request_from(remote: str, forwarded: str | None = None):
    headers = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/help/", **headers)


@pytest.fixture
def behind_proxies(settings):
    settings.TRELLIS = {**settings.TRELLIS, "TRUSTED_PROXIES": PROXIES}


@pytest.mark.parametrize(
    ("remote", "forwarded", "client"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        # Straight from the client: whatever it writes in the header is ignored.
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),
        # Through our proxy: the address it saw.
        ("10.1.2.3", "198.51.100.1", "198.51.100.1"),
        # A client that forges a first entry is still seen at the address our proxy saw.
        ("10.1.2.3", "1.2.3.4, 198.51.100.1", "198.51.100.1"),
        # Two of our proxies in a row.
        ("10.1.2.3", "198.51.100.1, 192.0.2.7", "198.51.100.1"),
        # A proxy that gives no client, or garbage: the nearest address we can believe.
        ("10.1.2.3", "", "10.1.2.3"),
        ("10.1.2.3", "not-an-address", "10.1.2.3"),
        ("10.1.2.3", "198.51.100.1, junk", "10.1.2.3"),
        ("10.1.2.3", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_the_client_is_the_first_address_our_proxies_did_not_add(
    behind_proxies, remote, forwarded, client
):
    assert client_address(request_from(remote, forwarded)) == client


def test_without_trusted_proxies_the_header_is_never_believed(settings):
    settings.TRELLIS = {**settings.TRELLIS, "TRUSTED_PROXIES": []}
    assert client_address(request_from("10.1.2.3", "198.51.100.1")) == "10.1.2.3"
