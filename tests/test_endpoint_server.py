"""The endpoint's `serve.py`, the custom container's HTTP server, spoken to over raw sockets on 127.0.0.1: the server
copied into a published tiny checkpoint serves it in this process (its real handler, model and processor). Every case
is a class of request a hostile or careless client sends: bodies declared larger than they are, that stall or end
early, malformed or repeated `Content-Length`, content types in any case, paths with queries, JSON nested without
end, and a model whose answer is NaN (500, strict JSON, never a 200)."""

import base64
import importlib.util
import json
import math
import re
import shutil
import socket
import sys
import threading
import time

import pytest
import torch

from tests.helpers.videos import write_square_video


LABELS = ["a red square", "a dog"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("served") / "checkpoint"
    shutil.copytree(tiny_checkpoint, folder)
    spec = importlib.util.spec_from_file_location("published_serve", folder / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    path_before = list(sys.path)
    server = serve.make_server(str(folder), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.serve_module = serve
    write_square_video(folder.parent / "clip.mp4", (230, 20, 20), num_frames=10)
    server.video = base64.b64encode((folder.parent / "clip.mp4").read_bytes()).decode()
    yield server
    server.shutdown()
    server.server_close()
    sys.path[:] = path_before


def exchange(server, head: bytes, body: bytes = b"", timeout: float = 30.0, close_after_send: bool = False):
    """Sends `head` (the request line and headers, without the blank line) and `body` on a new connection; returns
    (status, headers, parsed JSON or text) of the answer, read to the end."""
    with socket.create_connection(server.server_address, timeout=timeout) as sock:
        sock.sendall(head + b"\r\n\r\n" + body)
        if close_after_send:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return parse_answer(data)


def parse_answer(data: bytes):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in lines[1:]}
    if headers.get("content-type") == "application/json":
        # Strict JSON: NaN or Infinity in an answer is refused here.
        return status, headers, json.loads(body, parse_constant=lambda name: pytest.fail(f"{name} in {body!r}"))
    return status, headers, body.decode()


def post(server, body: bytes, path: str = "/", content_type: str | None = "application/json", length=None,
         extra: str = ""):
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines += [line for line in extra.split("\n") if line]
    return exchange(server, "\r\n".join(lines).encode(), body)


def request_body(server, **inputs) -> bytes:
    return json.dumps({"inputs": {"video": server.video, "candidate_labels": LABELS, **inputs}}).encode()


def test_a_valid_request_with_any_case_content_type_and_a_query(server):
    body = request_body(server)
    for path, content_type in [("/", "application/json"), ("/predict?x=1&y", "Application/JSON; charset=UTF-8"),
                               ("/?", "APPLICATION/json;charset=\"utf-8\""), ("/", None)]:
        status, _, answer = post(server, body, path=path, content_type=content_type)
        assert status == 200, (path, content_type, answer)
        assert sorted(item["label"] for item in answer["labels"]) == sorted(LABELS)
    for path in ("/health?probe=1", "/"):
        assert exchange(server, f"GET {path} HTTP/1.1\r\nHost: x".encode())[::2] == (200, "Ok")
    assert post(server, body, path="/other?x=1")[0] == 404


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json; charset=latin-1", "application/jsonx", "garbage", ""]
)
def test_other_content_types_are_415(server, content_type):
    status, _, answer = post(server, request_body(server), content_type=content_type)
    assert (status, answer) == (415, {"error": "Send the request as application/json (UTF-8)."})


@pytest.mark.parametrize("length", ["-5", "abc", "+5", "1_0", "\u0665", "5 5", "0x10", "99999999999999999999999"])
def test_malformed_content_length_is_400(server, length):
    status, _, answer = post(server, b"{}", length=length)
    assert status == 400, (length, answer)
    assert answer["error"].startswith("Content-Length must be one non-negative integer")


def test_missing_repeated_and_chunked_lengths(server):
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
    assert exchange(server, head, close_after_send=True)[0] == 411
    status, _, answer = exchange(server, head + b"\r\nTransfer-Encoding: chunked", b"2\r\n{}\r\n0\r\n\r\n")
    assert status == 411 and "chunked" in answer["error"]
    status, _, answer = exchange(server, head + b"\r\nContent-Length: 2\r\nContent-Length: 3", b"{}")
    assert status == 400 and "one non-negative integer" in answer["error"]


def test_a_declared_length_over_the_limit_is_413_before_any_body_is_read(server):
    limit = server.serve_module.max_body_bytes(server.endpoint.limits.max_input_bytes, server.endpoint.max_videos)
    started = time.monotonic()
    # Only the headers are sent: the answer comes without waiting for a body.
    status, headers, answer = exchange(
        server, f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {limit + 1}".encode(), timeout=10
    )
    assert status == 413 and f"over {limit} bytes" in answer["error"]
    assert headers["connection"] == "close" and time.monotonic() - started < 5


def read_vm(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M).group(1)) * 1024


def test_idle_clients_declaring_huge_bodies_take_no_memory_and_the_budget_refuses_more(server):
    limit = server.serve_module.max_body_bytes(server.endpoint.limits.max_input_bytes, server.endpoint.max_videos)
    assert limit > 2**30  # the default limits: eight 256 MiB videos in base64
    head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {limit}\r\n\r\n"
    before = read_vm("VmSize"), read_vm("VmRSS")
    idle = []
    try:
        for _ in range(2):  # together they take the whole budget of bodies in flight (twice the limit)
            sock = socket.create_connection(server.server_address, timeout=10)
            sock.sendall(head.encode() + b'{"inputs": ')
            idle.append(sock)
        time.sleep(0.5)
        grown = read_vm("VmSize") - before[0], read_vm("VmRSS") - before[1]
        assert max(grown) < 256 * 2**20, grown  # not the 2 x 2.7 GB they declared
        status, _, answer = exchange(server, head.encode()[:-4], timeout=10)
        assert status == 503 and "busy" in answer["error"]
    finally:
        for sock in idle:
            sock.close()
    # Their reservations are returned once they are gone: a normal request goes through.
    deadline = time.monotonic() + 10
    while post(server, request_body(server))[0] != 200:
        assert time.monotonic() < deadline, "the budget of the closed connections was not released"
        time.sleep(0.2)


def test_a_body_that_stalls_or_ends_early_is_answered_and_the_server_goes_on(server):
    handler = server.RequestHandlerClass
    handler.timeout = 1.0  # the per-read timeout of this server instance (30 s by default)
    try:
        started = time.monotonic()
        with socket.create_connection(server.server_address, timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inputs\"")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        status, _, answer = parse_answer(data)
        assert status == 408 and "9 of 1000 bytes" in answer["error"]
        assert time.monotonic() - started < 8
    finally:
        handler.timeout = server.serve_module.READ_TIMEOUT_SECONDS
    status, _, answer = exchange(
        server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000", b'{"inputs"', close_after_send=True
    )
    assert status == 400 and "ended after 9 of 1000 bytes" in answer["error"]
    assert post(server, request_body(server))[0] == 200


def test_headers_dripped_a_byte_at_a_time_meet_the_head_deadline(server):
    handler = server.RequestHandlerClass
    handler.head_timeout = 1.0  # this server instance's deadline for the request line and headers (30 s by default)
    try:
        started = time.monotonic()
        with socket.create_connection(server.server_address, timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
            try:
                for byte in b"X-Slow: " + b"a" * 100:  # each byte well within the per-read timeout
                    sock.sendall(bytes([byte]))
                    time.sleep(0.1)
                    if time.monotonic() - started > 5:
                        break
            except OSError:
                pass  # dropped: what is expected
            dropped = time.monotonic() - started
        assert dropped < 4, f"the server still read the head after {dropped:.1f} s"
    finally:
        handler.head_timeout = server.serve_module.HEAD_SECONDS
    assert post(server, request_body(server))[0] == 200


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
     b'{"inputs": ' + b"[" * 40 + b"]" * 40 + b"}", b'{"inputs": {"video": ' + b"[" * 500 + b"]" * 500 + b"}}"],
)
def test_deeply_nested_json_is_400_not_a_dropped_connection(server, body):
    status, _, answer = post(server, body)
    assert (status, answer) == (400, {"error": "The request body is nested deeper than 32 levels."})


@pytest.mark.parametrize(
    "body, message",
    [(b'{"inputs": NaN}', "NaN is not a JSON number"), (b'{"inputs": -Infinity}', "Infinity is not a JSON number"),
     (b'{"inputs": "\\ud800"}', "not text"), (b"\xff\xfe{", "not JSON"), (b'{"inputs": 1', "not JSON"),
     ('{"inputs": "x"}'.encode("utf-16"), "not JSON")],
)
def test_bodies_that_are_not_strict_json_text_are_400(server, body, message):
    status, _, answer = post(server, body)
    assert status == 400 and message in answer["error"], answer


def test_a_nan_answer_is_a_500_that_says_why_never_a_200(server):
    scale = server.endpoint.model.logit_scale
    saved = scale.detach().clone()
    try:
        for broken in (math.nan, math.inf):
            with torch.no_grad():
                scale.fill_(broken)
            for question in ({"candidate_labels": LABELS}, {"texts": ["a red square"]}):
                status, _, answer = post(server, json.dumps({"inputs": {"video": server.video, **question}}).encode())
                assert status == 500, answer
                assert "NaN or infinite" in answer["error"] and "logit_scale" in answer["error"]
                # The handler itself refuses (what the inference toolkit, which has no 5xx path, would show).
                with pytest.raises(RuntimeError, match="scores or embeddings are NaN or infinite") as error:
                    server.endpoint({"inputs": {"video": server.video, **question}})
                assert type(error.value).__name__ == "ModelOutputError" and error.value.status_code == 500
    finally:
        with torch.no_grad():
            scale.copy_(saved)
    assert post(server, request_body(server))[0] == 200


def test_clients_arriving_together_are_all_accepted(server):
    """48 clients connect at once: the listen backlog holds them (the standard library's 5 dropped most for 1 s)."""
    assert server.request_queue_size >= 48
    connected = []

    def connect():
        started = time.monotonic()
        with socket.create_connection(server.server_address, timeout=5) as sock:
            connected.append(time.monotonic() - started)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            while sock.recv(65536):
                pass

    threads = [threading.Thread(target=connect) for _ in range(48)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(connected) == 48 and max(connected) < 0.9, sorted(connected)[-5:]
