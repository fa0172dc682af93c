"""`processing/url_fetching_clip2video.py` against the rest of its contract (docs/processing.md and the module's
docstring), each case fast: error messages name the URL, at most 200 characters of it; `https` means TLS and each
scheme's default port; the deadline for the whole download is checked before connecting and cuts a body that drips
within the per-read timeout; a host name that does not resolve, and a resolver answer holding any non-public address
(a zone-scoped IPv6 address included), are refused naming the reason and how to allow private addresses.

Real servers on loopback answer. Where no real component can produce the case here (a resolver answer with a public
IPv6 address carrying a zone id), the system resolver is replaced by one returning that answer, as in
`test_hostile_inputs.py::test_a_resolver_that_hangs_is_given_the_timeout`."""

import gzip
import http.server
import math
import re
import socket
import threading
import time

import pytest

from clip2video.processing.url_fetching_clip2video import MAX_BYTES, MAX_TIMEOUT_SECONDS, fetch_url
from tests.helpers.servers import start_server, stop_server


class DripHandler(http.server.BaseHTTPRequestHandler):
    """/ok (and /): ten bytes at once; /drip: `Content-Length: 1000`, then a byte every 0.1 s for 4 s, within any
    per-read timeout of the tests, then the connection is left open; /drip_headers: the status line a byte every 0.1 s;
    /never: no answer for 5 s; /reason/N: a 404 with an N-character reason phrase; /no_location: a 302 without a
    Location; /coded: a body gzip-compressed unless the request asks for the identity coding."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        self.server.headers.append(self.headers)
        if self.path.startswith("/reason/"):
            # /reason/N: a 404 whose reason phrase is N characters long.
            self.send_response(404, "r" * (int(self.path.split("/")[2]) - 5) + "-tail")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/no_location":
            self.send_response(302)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/never":
            self.server.stop.wait(5)
            return
        if self.path == "/drip_headers":
            try:
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 40:
                    if self.server.stop.wait(0.1):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            except OSError:
                pass
            return
        if self.path == "/coded":
            # RFC 9110 12.5.3: without Accept-Encoding any coding is acceptable, and this server then compresses.
            codings = self.headers.get("Accept-Encoding")
            body = bytes(range(256)) * 4
            compress = codings is None or any(
                coding.split(";")[0].strip().lower() in ("gzip", "*") for coding in codings.split(",")
            )
            self.send_response(200)
            if compress:
                body = gzip.compress(body)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path in ("/ok", "/"):
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(bytes(10))
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.flush()
        try:
            for _ in range(40):
                if self.server.stop.wait(0.1):
                    return
                self.wfile.write(b"x")
                self.wfile.flush()
        except OSError:
            pass


@pytest.fixture(scope="module")
def server():
    server = start_server(DripHandler)
    server.headers = []
    yield server
    stop_server(server)


def trusted(url, timeout=2.0, total_timeout=10.0, max_bytes=10_000):
    return fetch_url(url, max_bytes=max_bytes, timeout=timeout, total_timeout=total_timeout, allow_private=True)


def test_error_messages_show_a_url_of_up_to_200_characters_whole_and_cut_longer_ones_to_200():
    for length in (199, 200):
        url = "ftp://videos.example/" + "a" * (length - len("ftp://videos.example/"))
        with pytest.raises(ValueError, match="only http:// and https://") as error:
            trusted(url)
        assert f"Cannot fetch video {url}: only http:// and https://" in str(error.value)
    url = "ftp://videos.example/" + "b" * 179 + "cdefg"  # 205 characters
    with pytest.raises(ValueError, match="only http:// and https://") as error:
        trusted(url)
    shown = str(error.value).split("Cannot fetch video ", 1)[1].split(": only http", 1)[0]
    assert shown == url[:197] + "..." and len(shown) == 200


def test_a_url_that_is_not_a_string_is_refused_naming_its_type():
    with pytest.raises(ValueError, match=r"^A URL must be a string, got bytes\.$"):
        trusted(b"http://127.0.0.1/video.mp4")


@pytest.mark.parametrize("scheme", ["https", "HTTPS", "Https"])
def test_https_means_tls_in_any_case(server, scheme):
    # A plain-HTTP server behind an https URL: the TLS handshake fails, the plain answer is never read as the video.
    url = server.url.replace("http", scheme, 1) + "/ok"
    with pytest.raises(ValueError, match=rf"^Cannot fetch video {url}: SSLError: "):
        trusted(url)


@pytest.fixture(scope="module")
def default_ports():
    """A plain server on 127.0.0.3:80 and a listening socket on 127.0.0.3:443 that never answers (127.0.0.0/8 is all
    loopback on Linux). Binding ports under 1024 needs root: skipped elsewhere."""
    try:
        tls = socket.create_server(("127.0.0.3", 443))
    except OSError as error:
        pytest.skip(f"cannot listen on 127.0.0.3:443 ({error})")
    try:
        plain = http.server.ThreadingHTTPServer(("127.0.0.3", 80), DripHandler)
    except OSError as error:
        tls.close()
        pytest.skip(f"cannot listen on 127.0.0.3:80 ({error})")
    plain.requests, plain.headers, plain.stop = [], [], threading.Event()
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    yield plain, tls
    plain.shutdown()
    plain.server_close()
    tls.close()


def test_urls_without_a_port_go_to_80_for_http_and_443_for_https(default_ports):
    plain, tls = default_ports
    assert trusted("http://127.0.0.3/ok") == bytes(10)
    assert plain.requests == ["/ok"]
    with pytest.raises(ValueError, match=r"^Cannot fetch video https://127\.0\.0\.3/ok: timed out\.$"):
        trusted("https://127.0.0.3/ok", timeout=0.5)
    tls.setblocking(False)
    connection, _ = tls.accept()  # BlockingIOError if the handshake went anywhere else
    connection.close()
    assert plain.requests == ["/ok"]


def test_a_download_within_a_deadline_under_a_second_succeeds(server):
    assert trusted(server.url + "/ok", timeout=0.5, total_timeout=0.5) == bytes(10)


def test_a_body_dripping_within_the_read_timeout_is_cut_at_the_deadline(server):
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"/drip: the download took longer than allowed \(`max_download_seconds`\)"):
        trusted(server.url + "/drip", timeout=3.0, total_timeout=0.6)
    assert time.monotonic() - started < 2.5


def test_a_deadline_already_passed_refuses_before_connecting():
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/video.mp4"
    try:
        with pytest.raises(ValueError, match=rf"^Cannot fetch video {url}: the download took longer than allowed"):
            trusted(url, total_timeout=1e-9)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError, match="Resource temporarily unavailable"):
            listener.accept()  # nothing connected
    finally:
        listener.close()


def test_a_host_name_that_does_not_resolve_is_named():
    # `.invalid` never resolves (RFC 6761): the system resolver answers that it does not exist.
    with pytest.raises(ValueError, match=r"^Cannot fetch video http://no-such-host\.invalid/a\.mp4: the host name "
                                         r"does not resolve \(.+\)\.$"):
        fetch_url("http://no-such-host.invalid/a.mp4", max_bytes=10, timeout=5.0, total_timeout=10.0)


def answering(monkeypatch, *socket_addresses):
    """The system resolver replaced by one answering `socket_addresses` (as `getaddrinfo` formats them)."""

    def resolve(host, port, *args, **kwargs):
        family = {2: socket.AF_INET, 4: socket.AF_INET6}
        return [(family[len(address)], socket.SOCK_STREAM, 6, "", address) for address in socket_addresses]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@pytest.mark.parametrize(
    "answer, refused",
    [
        # A public address with a zone id is an interface-local route, not the public internet.
        ([("2606:4700::1%eth0", 80, 0, 2)], "2606:4700::1%2"),
        # Any non-public address in the answer refuses the URL, wherever it comes.
        ([("1.1.1.1", 80), ("10.0.0.1", 80)], "10.0.0.1"),
        ([("2606:4700::1111", 80, 0, 0), ("fe80::1%lo", 80, 0, 1)], "fe80::1%1"),
    ],
)
def test_a_resolver_answer_with_any_non_public_address_is_refused_naming_it_and_the_opt_in(
    monkeypatch, answer, refused
):
    answering(monkeypatch, *answer)
    with pytest.raises(
        ValueError,
        match=rf"^Cannot fetch video http://videos\.example/a\.mp4: its host resolves to the non-public address "
        rf"{refused}, which is refused \(set `allow_private_urls=True` or CLIP2VIDEO_ALLOW_PRIVATE_URLS=1 for trusted "
        r"local use\)\.$",
    ):
        fetch_url("http://videos.example/a.mp4", max_bytes=10, timeout=1.0, total_timeout=5.0)


def test_limits_at_their_maximum_are_accepted_and_past_it_refused_by_name(server):
    ok = server.url + "/ok"
    assert fetch_url(ok, max_bytes=MAX_BYTES, timeout=MAX_TIMEOUT_SECONDS, total_timeout=MAX_TIMEOUT_SECONDS,
                     allow_private=True) == bytes(10)
    # One byte is a limit too: the ten-byte body is then refused by the body check, not by the argument check.
    with pytest.raises(ValueError, match=r"/ok: its Content-Length 10 exceeds the limit of 1 bytes"):
        trusted(ok, max_bytes=1)
    before = len(server.requests)
    for max_bytes in (MAX_BYTES + 1, 0, True, "1000", 10.0):
        with pytest.raises(ValueError, match=rf"^max_bytes must be an integer between 1 and 1,099,511,627,776, got "
                                             rf"{re.escape(repr(max_bytes))}\.$"):
            trusted(ok, max_bytes=max_bytes)
    for name in ("timeout", "total_timeout"):
        for value in (MAX_TIMEOUT_SECONDS * (1 + 1e-15), 0, 0.0, -1.0, True, "5", math.nan, math.inf):
            with pytest.raises(ValueError, match=rf"^{name} must be a number of seconds in \(0, 604800\], got "
                                                 rf"{re.escape(repr(value))}\.$"):
                trusted(ok, **{name: value})
    assert len(server.requests) == before  # refused before connecting


def test_a_url_without_a_path_asks_for_the_root(server):
    before = len(server.requests)
    assert trusted(server.url) == bytes(10)
    assert server.requests[before:] == ["/"]


def test_the_body_is_asked_for_and_returned_without_content_coding(server):
    assert trusted(server.url + "/coded") == bytes(range(256)) * 4
    assert server.headers[-1]["Accept-Encoding"].lower() == "identity"


def test_http_errors_name_the_status_and_up_to_100_characters_of_the_reason(server):
    for length in (99, 100):
        with pytest.raises(ValueError, match=rf"/reason/{length}: HTTP 404 r{{{length - 5}}}-tail\.$"):
            trusted(f"{server.url}/reason/{length}")
    with pytest.raises(ValueError, match=r"/reason/101: HTTP 404 r{96}-\.\.\.\.$"):
        trusted(f"{server.url}/reason/101")


def test_a_redirect_without_a_location_is_refused_by_name(server):
    with pytest.raises(ValueError, match=r"/no_location: HTTP 302 redirect without a Location\.$"):
        trusted(server.url + "/no_location")


def test_a_server_that_never_answers_is_cut_by_the_read_timeout(server):
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"/never: timed out\.$"):
        trusted(server.url + "/never", timeout=0.3, total_timeout=20.0)
    assert time.monotonic() - started < 2.5


def test_a_status_line_dripping_within_the_read_timeout_is_cut_at_the_deadline(server):
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"/drip_headers: the download took longer than allowed \(`max_download"):
        trusted(server.url + "/drip_headers", timeout=3.0, total_timeout=0.6)
    assert time.monotonic() - started < 2.5
