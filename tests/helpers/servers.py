"""HTTP servers on loopback for the tests: a quiet static server for a folder, a misbehaving server (never answers,
drips, redirects elsewhere, oversized bodies), a free port, and waiting for a server process to answer."""

import functools
import http.server
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path


class LocalServer(http.server.ThreadingHTTPServer):
    """A `ThreadingHTTPServer` that records the paths it was asked for (`requests`) and whose handlers stop their slow
    answers when `stop` is set."""

    daemon_threads = True

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.requests: list[str] = []
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        """`http://host:port`, without a trailing slash."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def start_server(handler, host: str = "127.0.0.1") -> LocalServer:
    """Serves `handler` (a request handler class or factory) on a free port of `host` in a daemon thread."""
    server = LocalServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop_server(server: LocalServer) -> None:
    server.stop.set()
    server.shutdown()
    server.server_close()


class QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    """The standard library's static file handler, recording each path and logging nothing."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


def file_server(folder: Path, host: str = "127.0.0.1") -> LocalServer:
    """A static HTTP server for the files of `folder`; `server.url + "/name.mp4"` fetches `folder/name.mp4`."""
    return start_server(functools.partial(QuietFileHandler, directory=str(folder)), host)


class MisbehavingHandler(http.server.BaseHTTPRequestHandler):
    """Paths: /video.mp4 (a real video), /never (never answers), /drip (headers, then a byte every 2 s),
    /drip_headers (the status line a byte every 2 s), /missing (404), /loop (redirects to itself),
    /elsewhere (redirects to `other_url`), /ftp (redirects to ftp://), /huge (claims 1.5 GB, streams zeros),
    /endless (no Content-Length, streams zeros), /short (Content-Length larger than the body).

    Subclass it with the class attributes `video` (bytes) and `other_url` set: `misbehaving_handler(...)`."""

    protocol_version = "HTTP/1.1"
    video = b""
    other_url = ""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        stop = self.server.stop
        if self.path == "/video.mp4":
            self._send(200, self.video)
        elif self.path == "/never":
            stop.wait(30)
        elif self.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.flush()
            for _ in range(15):
                if stop.wait(2):
                    return
                self.wfile.write(b"x")
                self.wfile.flush()
        elif self.path == "/drip_headers":
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 20:
                if stop.wait(2):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        elif self.path == "/missing":
            self._send(404, b"no such video")
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/elsewhere":
            self._redirect(self.other_url)
        elif self.path == "/ftp":
            self._redirect("ftp://127.0.0.1/video.mp4")
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(1_500_000_000))
            self.end_headers()
            self._stream_zeros()
        elif self.path == "/endless":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self._stream_zeros()
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(self.video[:100])
        else:
            self._send(500, b"unexpected path")

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _stream_zeros(self):
        chunk = bytes(1 << 16)
        try:
            for _ in range(30_000):  # up to ~2 GB, stopped by the client closing the connection
                if self.server.stop.is_set():
                    return
                self.wfile.write(chunk)
        except OSError:
            pass


def misbehaving_handler(video: bytes, other_url: str = "") -> type[MisbehavingHandler]:
    return type("Handler", (MisbehavingHandler,), {"video": video, "other_url": other_url})


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listened on a moment ago (for a server process to bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(process: subprocess.Popen, url: str, timeout: float, log=lambda: "") -> None:
    """Polls `url` until it answers; raises AssertionError with the end of `log()` if `process` exits first or
    `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"the server exited with code {process.returncode}:\n{log()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            assert time.monotonic() < deadline, f"the server did not answer within {timeout:.0f} s:\n{log()[-3000:]}"
            time.sleep(0.5)
