"""Fetching a video from an `http(s)` URL a client may have chosen to do harm.

`fetch_url` is the one way this project downloads a URL (the video processor, the pipelines, the Inference Endpoints
handler and the demo all go through it). It refuses what a server fetching URLs for its clients must not do:

- schemes other than `http` and `https` (no `file://`, `ftp://`, ...), and URLs without a host;
- hosts that resolve to loopback, private, link-local, multicast, reserved or otherwise non-public addresses (checked
  on the resolved addresses, so a public-looking name pointing inside is refused too), unless `allow_private=True`
  (trusted local use). The connection goes to the address that was checked, so a second DNS answer cannot swap it;
- redirects are followed by hand, at most `MAX_REDIRECTS`, each target checked again like the first URL;
- a connect and per-read timeout, and a deadline for the whole download (a server dripping a byte every few seconds);
- a body larger than `max_bytes`: refused from `Content-Length` before reading, and while streaming when the header is
  absent or lies, so no more than `max_bytes` are ever held.

Every failure is a `ValueError` naming the URL (and the status or the reason). Standard library only: this file is
remote code copied next to the checkpoint. Proxies from the environment are not used: the addresses checked must be
the addresses connected to.
"""

import http.client
import ipaddress
import socket
import threading
import time
import urllib.parse


MAX_REDIRECTS = 5
# The largest limits accepted: a week fits every platform's `time_t` and `threading.TIMEOUT_MAX`; 1 TiB every read.
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
MAX_BYTES = 2**40
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_CHUNK_BYTES = 1 << 16
_MAX_SHOWN_URL = 200
# IPv6 ranges that carry an IPv4 address `ipaddress` does not unwrap itself: NAT64 (RFC 6052, 8215).
_NAT64_NETWORKS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# IANA's "IETF protocol assignments" block is not globally reachable, but Python before 3.13 calls all of it global
# except 192.0.0.0/29 (its two anycast exceptions, 192.0.0.9 and .10, are no video hosts either).
_NON_GLOBAL_V4 = ipaddress.ip_network("192.0.0.0/24")


def shorten_url(url: str) -> str:
    """The URL as error messages show it: at most 200 characters."""
    return url if len(url) <= _MAX_SHOWN_URL else url[: _MAX_SHOWN_URL - 3] + "..."


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is on the public internet: not loopback, private, link-local, multicast, reserved,
    unspecified, shared (CGNAT) or documentation space, also when an IPv6 address embeds such an IPv4 address
    (IPv4-mapped, 6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        embedded = address.ipv4_mapped or address.sixtofour
        if address.teredo:
            embedded = address.teredo[1]
        if any(address in network for network in _NAT64_NETWORKS):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public_address(embedded):
            return False
    if isinstance(address, ipaddress.IPv4Address) and address in _NON_GLOBAL_V4:
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    total_timeout: float,
    allow_private: bool = False,
) -> bytes:
    """The body of `url`, following redirects, within the limits.

    Args:
        url (`str`): an `http://` or `https://` URL.
        max_bytes (`int`): the largest body accepted.
        timeout (`float`): seconds to connect, and to wait for any next byte.
        total_timeout (`float`): seconds for the whole download, redirects included.
        allow_private (`bool`, *optional*, defaults to `False`): allow non-public addresses (trusted local use only).

    Raises:
        `ValueError`: a bad or refused URL or redirect, a refused address, an HTTP status other than 200, a body over
            `max_bytes`, a timeout, or a network or TLS error; the message names the URL and the reason.
    """
    _check_limits(max_bytes, timeout, total_timeout)
    return _fetch(url, max_bytes, timeout, total_timeout, lambda address: allow_private or is_public_address(address))


def _check_limits(max_bytes: int, timeout: float, total_timeout: float) -> None:
    """Refuses limits the sockets, timers and reads below cannot honour (a 1e10 s timeout overflows `time_t`, a
    `max_bytes` of 2^63 a read size), before any connection is made."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or not 1 <= max_bytes <= MAX_BYTES:
        raise ValueError(f"max_bytes must be an integer between 1 and {MAX_BYTES:,}, got {max_bytes!r}.")
    for name, value in (("timeout", timeout), ("total_timeout", total_timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT_SECONDS:
            raise ValueError(f"{name} must be a number of seconds in (0, {MAX_TIMEOUT_SECONDS:g}], got {value!r}.")


def _fetch(url: str, max_bytes: int, timeout: float, total_timeout: float, address_allowed) -> bytes:
    if not isinstance(url, str):
        raise ValueError(f"A URL must be a string, got {type(url).__name__}.")
    deadline = time.monotonic() + total_timeout
    shown = shorten_url(url)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        where = shown if current == url else f"{shown} (redirected to {shorten_url(current)})"
        try:
            status, location, body = _get_once(current, where, max_bytes, timeout, deadline, address_allowed)
        except (OSError, http.client.HTTPException, UnicodeError) as error:
            # OSError covers refused connections, DNS failures, timeouts (TimeoutError) and TLS errors.
            reason = "timed out" if isinstance(error, TimeoutError) else f"{type(error).__name__}: {error}"
            raise ValueError(f"Cannot fetch video {where}: {reason}.") from None
        if location is None:
            return body
        current = urllib.parse.urljoin(current, location)
    raise ValueError(f"Cannot fetch video {shown}: more than {MAX_REDIRECTS} redirects.")


def _get_once(url: str, where: str, max_bytes: int, timeout: float, deadline: float, address_allowed):
    """One GET: `(status, redirect location or None, body)`; the body only for a 200."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"Cannot fetch video {where}: only http:// and https:// URLs are fetched.")
    host = parts.hostname
    try:
        port = parts.port if parts.port is not None else (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise ValueError(f"Cannot fetch video {where}: the port is not a number from 0 to 65535.") from None
    if not host:
        raise ValueError(f"Cannot fetch video {where}: the URL has no host.")
    if any(character.isspace() or ord(character) < 32 for character in url):
        raise ValueError(f"Cannot fetch video {where}: the URL contains whitespace or control characters.")

    address = _checked_address(host, port, where, address_allowed, _remaining(deadline, timeout, where))
    https = parts.scheme.lower() == "https"
    connection = (_CheckedHTTPSConnection if https else _CheckedHTTPConnection)(
        host, port, address, timeout=_remaining(deadline, timeout, where)
    )
    # Per-read timeouts do not bound a server that sends a byte every few seconds (headers included): at the
    # deadline a watchdog shuts the socket down, which ends any read in progress.
    watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), connection.expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        connection.request(
            "GET", path, headers={"User-Agent": "clip2video", "Accept-Encoding": "identity", "Connection": "close"}
        )
        response = connection.getresponse()
        if response.status in _REDIRECT_STATUSES:
            location = response.getheader("Location")
            if not location:
                raise ValueError(f"Cannot fetch video {where}: HTTP {response.status} redirect without a Location.")
            return response.status, location, b""
        if response.status != 200:
            reason = response.reason if len(response.reason) <= 100 else response.reason[:97] + "..."
            raise ValueError(f"Cannot fetch video {where}: HTTP {response.status} {reason}.")
        return 200, None, _read_body(response, where, max_bytes, connection)
    except (OSError, http.client.HTTPException):
        if connection.expired:
            raise ValueError(f"Cannot fetch video {where}: {_DEADLINE_MESSAGE}") from None
        raise
    finally:
        watchdog.cancel()
        connection.close()


_DEADLINE_MESSAGE = "the download took longer than allowed (`max_download_seconds`)."


class _CheckedConnection:
    """Connects to the address that was checked, not to a second DNS answer (TLS still verifies the certificate
    against the host name), and can be shut down from another thread."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.expired = False
        self.open_socket = None
        self._lock = threading.Lock()
        # `HTTPConnection.__init__` sets this instance attribute to `socket.create_connection`, which would resolve
        # the host name again.
        self._create_connection = self._connect_to_checked_address

    def _connect_to_checked_address(self, _, timeout, source_address=None):
        return socket.create_connection((self.address, self.port), timeout, source_address)

    def connect(self):
        super().connect()
        with self._lock:
            self.open_socket = self.sock
            if self.expired:
                raise TimeoutError

    def expire(self):
        with self._lock:
            self.expired = True
            if self.open_socket is not None:
                try:
                    self.open_socket.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _CheckedHTTPConnection(_CheckedConnection, http.client.HTTPConnection):
    pass


class _CheckedHTTPSConnection(_CheckedConnection, http.client.HTTPSConnection):
    pass


def _checked_address(host: str, port: int, where: str, address_allowed, timeout: float) -> str:
    """The first address `host` resolves to, after checking all of them (any refused one refuses the URL)."""
    infos = _resolve(host, port, where, timeout)
    addresses = []
    for _, _, _, _, socket_address in infos:
        text = socket_address[0]
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and len(socket_address) > 3 and socket_address[3]:
            address = ipaddress.IPv6Address(f"{address}%{socket_address[3]}")
        if not address_allowed(address):
            raise ValueError(
                f"Cannot fetch video {where}: its host resolves to the non-public address {address}, which is "
                "refused (set `allow_private_urls=True` or CLIP2VIDEO_ALLOW_PRIVATE_URLS=1 for trusted local use)."
            )
        addresses.append(text)
    if not addresses:
        raise ValueError(f"Cannot fetch video {where}: the host name does not resolve.")
    return addresses[0]


def _resolve(host: str, port: int, where: str, timeout: float) -> list:
    """`socket.getaddrinfo`, given at most `timeout` seconds (the system resolver has no timeout of its own that a
    caller can set; a lookup that takes longer is abandoned in its thread)."""
    outcome = {}

    def lookup():
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            outcome["error"] = error

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ValueError(f"Cannot fetch video {where}: the host name did not resolve within {timeout:g} s.")
    error = outcome.get("error")
    if isinstance(error, socket.gaierror):
        raise ValueError(f"Cannot fetch video {where}: the host name does not resolve ({error.strerror}).")
    if error is not None:
        raise error
    return outcome["infos"]


def _remaining(deadline: float, timeout: float, where: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ValueError(f"Cannot fetch video {where}: {_DEADLINE_MESSAGE}")
    return min(timeout, left)


def _read_body(response, where: str, max_bytes: int, connection: "_CheckedConnection") -> bytes:
    declared = response.getheader("Content-Length")
    declared = int(declared) if declared is not None and declared.strip().isdigit() else None
    if declared is not None and declared > max_bytes:
        raise ValueError(
            f"Cannot fetch video {where}: its Content-Length {declared} exceeds the limit of {max_bytes} bytes "
            f"({_RAISE_SIZE})."
        )
    chunks, received = [], 0
    while chunk := response.read1(_CHUNK_BYTES):
        received += len(chunk)
        if received > max_bytes:
            message = f"its body exceeds the limit of {max_bytes} bytes ({_RAISE_SIZE})"
            raise ValueError(f"Cannot fetch video {where}: {message}.")
        chunks.append(chunk)
    if connection.expired:
        # The watchdog's shutdown ends the body like a closed connection would.
        raise ValueError(f"Cannot fetch video {where}: {_DEADLINE_MESSAGE}")
    if declared is not None and received < declared:
        raise ValueError(f"Cannot fetch video {where}: the body ended after {received} of {declared} bytes.")
    return b"".join(chunks)


_RAISE_SIZE = "`max_input_bytes`, environment variable CLIP2VIDEO_MAX_INPUT_BYTES"
