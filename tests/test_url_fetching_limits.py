"""`processing/url_fetching_clip2video.py` at its limits, from its contract: a body of exactly `max_bytes` is returned
and one byte more is refused (with and without `Content-Length`, and with a `Content-Length` that lies), exactly
`MAX_REDIRECTS` redirects are followed and one more is refused, URL schemes are case-insensitive (RFC 3986 3.1), and
the address check refuses every non-public address of the standard's tables, also embedded in IPv6. A real HTTP
server on 127.0.0.1 answers."""

import http.server
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clip2video.processing.url_fetching_clip2video import MAX_REDIRECTS, fetch_url, is_public_address
from tests.helpers.servers import start_server, stop_server


class SizedHandler(http.server.BaseHTTPRequestHandler):
    """/bytes/N: N bytes with their Content-Length; /stream/N: N bytes, no Content-Length (the connection closes);
    /lie/N/M: N bytes sent under `Content-Length: M`; /hops/K: a chain of K redirects ending at /bytes/10."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        kind, numbers = parts[0], [int(part) for part in parts[1:]]
        if kind == "hops":
            left = numbers[0]
            self.send_response(302)
            self.send_header("Location", f"/hops/{left - 1}" if left > 1 else "/bytes/10")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = bytes(range(256)) * (numbers[0] // 256) + bytes(numbers[0] % 256)
        self.send_response(200)
        if kind == "bytes":
            self.send_header("Content-Length", str(len(body)))
        elif kind == "lie":
            self.send_header("Content-Length", str(numbers[1]))
            self.send_header("Connection", "close")
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True


@pytest.fixture(scope="module")
def base():
    server = start_server(SizedHandler)
    yield server.url
    stop_server(server)


def fetch(url, max_bytes=1_000_000):
    return fetch_url(url, max_bytes=max_bytes, timeout=5.0, total_timeout=30.0, allow_private=True)


@pytest.mark.parametrize("kind", ["bytes", "stream"])
@pytest.mark.parametrize("size", [2, 1000, 65536, 65537, 200_000])
def test_a_body_of_exactly_max_bytes_is_returned_and_one_more_is_refused(base, kind, size):
    body = fetch(f"{base}/{kind}/{size}", max_bytes=size)
    assert body == bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert len(fetch(f"{base}/{kind}/{size}", max_bytes=size + 1)) == size
    refused = rf"/{kind}/{size}: its (Content-Length {size}|body) exceeds the limit of {size - 1} bytes"
    with pytest.raises(ValueError, match=refused):
        fetch(f"{base}/{kind}/{size}", max_bytes=size - 1)


def test_a_lying_content_length_does_not_move_the_limit(base):
    # Declares the limit exactly and sends one byte more: HTTP's body ends at the declared length, never beyond it.
    assert len(fetch(f"{base}/lie/1001/1000", max_bytes=1000)) == 1000
    # Declares more than it sends: a truncated body is an error, never returned as the video.
    with pytest.raises(ValueError, match=r"/lie/999/1000: the body ended after 999 of 1000 bytes"):
        fetch(f"{base}/lie/999/1000", max_bytes=1000)
    # Declares one byte over the limit: refused before reading.
    with pytest.raises(ValueError, match=r"/lie/10/1001: its Content-Length 1001 exceeds the limit of 1000 bytes"):
        fetch(f"{base}/lie/10/1001", max_bytes=1000)


def test_exactly_max_redirects_are_followed_and_one_more_is_refused(base):
    assert MAX_REDIRECTS == 5  # the documented number (docs/processing.md)
    for hops in range(MAX_REDIRECTS + 1):
        assert fetch(f"{base}/hops/{hops}") == bytes(10), hops
    with pytest.raises(ValueError, match=rf"/hops/{MAX_REDIRECTS + 1}: more than {MAX_REDIRECTS} redirects"):
        fetch(f"{base}/hops/{MAX_REDIRECTS + 1}")


@pytest.mark.parametrize("scheme", ["HTTP", "Http", "hTtP"])
def test_url_schemes_are_case_insensitive(base, scheme):
    url = base.replace("http", scheme, 1) + "/bytes/300"
    assert fetch(url) == bytes(range(256)) + bytes(44)


@pytest.mark.parametrize("scheme", ["FILE", "ftp", "Ftp", "gopher", "httpx", "HTTPS2"])
def test_other_schemes_are_refused_in_any_case(base, scheme):
    url = scheme + base[len("http"):] + "/bytes/10"
    with pytest.raises(ValueError, match=r"only http:// and https:// URLs are fetched"):
        fetch(url)


NON_PUBLIC_V4 = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
    "240.0.0.0/4",
]


@settings(max_examples=300, deadline=None)
@given(network=st.sampled_from(NON_PUBLIC_V4), offset=st.integers(min_value=0, max_value=2**32 - 1))
def test_every_non_public_ipv4_address_is_refused_also_inside_ipv6(network, offset):
    network = ipaddress.ip_network(network)
    address = network[offset % network.num_addresses]
    assert not is_public_address(address)
    embedded = int(address)
    for wrapped in (
        ipaddress.IPv6Address(0xFFFF << 32 | embedded),  # IPv4-mapped
        ipaddress.IPv6Address(0x2002 << 112 | embedded << 80),  # 6to4
        ipaddress.IPv6Address(0x2001 << 112 | (embedded ^ 0xFFFFFFFF)),  # Teredo (client address inverted)
        ipaddress.IPv6Address(0x0064FF9B << 96 | embedded),  # NAT64
    ):
        assert not is_public_address(wrapped), (address, wrapped)


@settings(max_examples=200, deadline=None)
@given(address=st.ip_addresses(v=4))
def test_the_ipv4_check_agrees_with_the_registry_tables(address):
    expected = address.is_global and not any(address in ipaddress.ip_network(net) for net in NON_PUBLIC_V4)
    assert is_public_address(address) == expected, address


def test_public_addresses_at_the_edges_of_private_ranges_are_accepted():
    for text in ("9.255.255.255", "11.0.0.0", "172.15.255.255", "172.32.0.0", "100.63.255.255", "100.128.0.0",
                 "1.1.1.1", "2606:4700:4700::1111"):
        assert is_public_address(ipaddress.ip_address(text)), text
    for text in ("10.0.0.0", "10.255.255.255", "172.16.0.0", "172.31.255.255", "::1", "fe80::1", "fc00::1", "ff02::1"):
        assert not is_public_address(ipaddress.ip_address(text)), text
