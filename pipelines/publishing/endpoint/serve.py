"""A minimal HTTP server for `handler.py`, for a custom container (the Hugging Face inference toolkit's image cannot
run transformers 5; see docs/serving.md).

    python serve.py /repository --port 80     # in the published folder, next to handler.py
    python -m clip2video.pipelines.publishing.endpoint.serve /repository --port 80       # from this package

It imports the folder's `handler.py` as the toolkit does and speaks the toolkit's protocol (`POST /` or `/predict`
with a JSON body `{"inputs": ..., "parameters": ...}`, `GET /` or `/health` for health; a query string is ignored),
but tells errors apart: the handler's `RequestError` is answered with its `status_code` (400, 413) and
`{"error": message}`, a body that is not JSON (or nested deeper than `MAX_JSON_DEPTH`) with 400, another content type
than `application/json` in UTF-8 with 415, a missing `Content-Length` with 411 and a malformed one with 400, a body over
the size limit with 413 (from its `Content-Length`, before any of it is read), a body that stalls with 408, and any
other exception — a failure of the server, not of the request — with 500 and a generic message (the details go to the
log, not to the client). An answer holding NaN or infinity (a broken checkpoint) is never sent as a 200: it is a 500
that says so, and every body is strict JSON.

Resources are bounded before work starts: connections are served by threads, at most `MAX_CONNECTIONS` at a time (the
next get a 503 at once) with a listen backlog of `LISTEN_BACKLOG`; a body is read in chunks (never allocated from its
declared length), each read waiting at most `READ_TIMEOUT_SECONDS`, the request line and headers at most
`HEAD_SECONDS`, the whole body at most `BODY_SECONDS` plus a second per MiB; the bodies being read at once may declare at most twice the size limit together (the next get 503).
The model runs one request at a time, as in the toolkit. Standard library only.
"""

import argparse
import importlib.util
import json
import os
import re
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


LISTEN_BACKLOG = 128
MAX_CONNECTIONS = 64
READ_TIMEOUT_SECONDS = 30.0
HEAD_SECONDS = 30.0
BODY_SECONDS = 60.0
MAX_JSON_DEPTH = 32
_CHUNK_BYTES = 1 << 20
_CONTENT_LENGTH = re.compile(r"[0-9]{1,20}")  # ASCII digits only (int() would take "+5", " 5", "٥" or "1_0")
_NON_FINITE_ANSWER = (
    "The model's answer holds NaN or infinite numbers, so it was not sent: the checkpoint's weights or logit_scale "
    "are broken (see the server log)."
)


def load_handler(model_dir: str):
    """The folder's `EndpointHandler(model_dir)` and its module, imported as the toolkit imports them."""
    sys.path.insert(0, model_dir)
    spec = importlib.util.spec_from_file_location("handler.EndpointHandler", os.path.join(model_dir, "handler.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler.EndpointHandler"] = module
    spec.loader.exec_module(module)
    return module, module.EndpointHandler(model_dir)


def max_body_bytes(max_input_bytes: int, max_videos: int) -> int:
    """Base64 of the largest accepted videos of one request (line breaks every 64 characters, escaped in JSON as
    `\\r\\n`, included), plus room for the JSON around them. The handler's own limits, parsed once by the processor's
    parser."""
    encoded = 4 * (max_input_bytes // 3 + 1)
    return (encoded + 4 * (encoded // 64 + 1)) * max_videos + 2**20


class BadRequest(Exception):
    """A request refused before it reaches the handler: `status` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class EndpointServer(ThreadingHTTPServer):
    """One thread per connection, at most `MAX_CONNECTIONS`, and a listen backlog of `LISTEN_BACKLOG` (the standard
    library's default of 5 drops clients arriving together)."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, address, handler_class, body_budget: int):
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._budget_lock = threading.Lock()
        self.body_budget = body_budget
        super().__init__(address, handler_class)

    def process_request(self, request, client_address):
        if not self._connections.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connections.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def reserve_body(self, length: int) -> bool:
        """Reserves `length` bytes of the budget of bodies read at once; False when they do not fit now."""
        with self._budget_lock:
            if length > self.body_budget:
                return False
            self.body_budget -= length
            return True

    def release_body(self, length: int) -> None:
        with self._budget_lock:
            self.body_budget += length


def _refuse_busy(connection: socket.socket) -> None:
    body = json.dumps({"error": "The server is busy; retry shortly."}).encode()
    head = f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    try:
        connection.settimeout(1.0)
        connection.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    except OSError:
        pass


def make_server(model_dir: str, host: str, port: int) -> EndpointServer:
    module, endpoint = load_handler(model_dir)
    lock = threading.Lock()
    body_limit = max_body_bytes(endpoint.limits.max_input_bytes, endpoint.max_videos)

    class Handler(BaseHTTPRequestHandler):
        # Applied to the socket: a client that stops sending (headers or body) is dropped after this long.
        timeout = READ_TIMEOUT_SECONDS
        # The whole request line and headers: a client dripping a header byte every few seconds never trips `timeout`.
        head_timeout = HEAD_SECONDS

        def handle(self):
            self._head_timer = threading.Timer(self.head_timeout, self._drop_slow_head)
            self._head_timer.daemon = True
            self._head_timer.start()
            try:
                super().handle()
            finally:
                self._head_timer.cancel()

        def _drop_slow_head(self):
            try:
                self.connection.shutdown(socket.SHUT_RDWR)  # the pending read returns, and the connection closes
            except OSError:
                pass

        def parse_request(self):
            parsed = super().parse_request()
            self._head_timer.cancel()  # the head is in: the body has its own deadline
            return parsed

        def do_GET(self):
            if urllib.parse.urlsplit(self.path).path in ("/", "/health"):
                self._answer(200, "Ok", content_type="text/plain")
            else:
                self._answer(404, {"error": f"No route {_shown(self.path)}."})

        def do_POST(self):
            try:
                length = self._checked_headers()
            except BadRequest as error:
                self.close_connection = True  # the body, if any, is not read
                return self._answer(error.status, {"error": str(error)}, drain=True)
            if not self.server.reserve_body(length):
                self.close_connection = True
                return self._answer(503, {"error": "The server is busy; retry shortly."}, drain=True)
            try:
                body = self._parsed_body(length)
            except BadRequest as error:
                self.close_connection = True
                return self._answer(error.status, {"error": str(error)})
            finally:
                self.server.release_body(length)
            try:
                with lock:
                    answer = endpoint(body)
            except module.RequestError as error:
                return self._answer(error.status_code, {"error": str(error)})
            except getattr(module, "ModelOutputError", ()) as error:  # a broken checkpoint: the message says so
                traceback.print_exc()
                return self._answer(500, {"error": str(error)})
            except Exception:  # the server's failure: logged in full, not shown to the client
                traceback.print_exc()
                return self._answer(500, {"error": "Internal server error."})
            self._answer(200, answer)

        def _checked_headers(self) -> int:
            """The declared body length, once the route, content type and length are acceptable."""
            if urllib.parse.urlsplit(self.path).path not in ("/", "/predict"):
                raise BadRequest(404, f"No route {_shown(self.path)}.")
            if "Content-Type" in self.headers:
                # `get_content_type` lowercases the type, and says text/plain for a malformed one.
                charset = self.headers.get_content_charset()
                if self.headers.get_content_type() != "application/json" or charset not in (None, "utf-8", "utf8"):
                    raise BadRequest(415, "Send the request as application/json (UTF-8).")
            if "Transfer-Encoding" in self.headers:
                raise BadRequest(411, "The request needs a Content-Length (chunked bodies are not accepted).")
            declared = {value.strip() for value in self.headers.get_all("Content-Length", [])}
            if not declared:
                raise BadRequest(411, "The request needs a Content-Length.")
            if len(declared) > 1 or not _CONTENT_LENGTH.fullmatch(next(iter(declared))):
                raise BadRequest(400, f"Content-Length must be one non-negative integer, got {_shown(declared)}.")
            length = int(next(iter(declared)))
            if length > body_limit:
                raise BadRequest(413, f"The request body of {length} bytes is over {body_limit} bytes.")
            return length

        def _parsed_body(self, length: int):
            """The body read in chunks (memory grows with what arrives, not with what is declared), then parsed."""
            deadline = time.monotonic() + BODY_SECONDS + length / 2**20
            body = bytearray()
            try:
                while len(body) < length:
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    chunk = self.rfile.read1(min(_CHUNK_BYTES, length - len(body)))
                    if not chunk:
                        raise BadRequest(400, f"The request body ended after {len(body)} of {length} bytes.")
                    body += chunk
            except TimeoutError:
                raise BadRequest(408, f"The request body did not arrive in time ({len(body)} of {length} bytes).")
            try:
                value = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
            except RecursionError:
                raise BadRequest(400, f"The request body is nested deeper than {MAX_JSON_DEPTH} levels.") from None
            except (ValueError, UnicodeDecodeError) as error:
                raise BadRequest(400, f"The request body is not JSON ({_shown(str(error))}).") from None
            _check_json(value)
            return value

        def _answer(self, status: int, payload, content_type: str = "application/json", drain: bool = False):
            if isinstance(payload, str):
                data = payload.encode()
            else:
                try:
                    data = json.dumps(payload, allow_nan=False).encode()
                except ValueError:  # NaN or infinity: not JSON, and not an answer
                    print(f"{_NON_FINITE_ANSWER} Answer: {_shown(payload, 2000)}", file=sys.stderr, flush=True)
                    status, data = 500, json.dumps({"error": _NON_FINITE_ANSWER}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                if drain:
                    self._drain()
            except OSError:  # the client left
                self.close_connection = True

        def _drain(self):
            """Reads (and drops) a little of an unread body before closing, so that the client's kernel does not
            reset the connection before the client has read the answer."""
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1.0)
            for _ in range(64):
                if not self.rfile.read1(1 << 16):
                    break

    server = EndpointServer((host, port), Handler, body_budget=2 * body_limit)
    server.endpoint = endpoint
    return server


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _check_json(value) -> None:
    """Refuses nesting deeper than `MAX_JSON_DEPTH` and strings with lone surrogates (`"\\ud800"`, not text), walking
    the parsed value without recursion."""
    _check_text(value)
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadRequest(400, f"The request body is nested deeper than {MAX_JSON_DEPTH} levels.")
        for child in [*item.keys(), *item.values()] if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
            else:
                _check_text(child)


def _check_text(value) -> None:
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(400, "The request body holds a string that is not text (a lone surrogate).") from None


def _shown(value, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="the published folder (with handler.py)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args(argv)
    try:
        server = make_server(args.model_dir, args.host, args.port)
    except ValueError as error:  # a setting out of range (a CLIP2VIDEO_* variable) or a refused checkpoint
        parser.exit(2, f"{parser.prog}: {error}\n")
    print(f"serving {args.model_dir} on http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
