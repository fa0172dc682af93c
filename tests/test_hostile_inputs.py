"""Hostile inputs at every serving entry point: the URL fetcher against a misbehaving HTTP server on loopback, the
decoder and the processor against crafted files, both pipelines against bad arguments, and the endpoint handler
against requests aimed at the server's network and files.

Every case asserts the exception type and that the message names the input. Cases whose failure mode is exhausting
memory run in a subprocess under `resource.setrlimit(RLIMIT_AS)`, so that a regression fails fast instead of taking
the machine down; every case is bounded to seconds (CPU seconds for work, `Spent`).
"""

import base64
import importlib.util
import io
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import pipeline

from clip2video import pipelines  # noqa: F401  registers the tasks in this process
from clip2video.pipelines import RETRIEVAL_TASK, ZERO_SHOT_TASK
from clip2video.processing.frame_sampling_clip2video import select_source_frames, uniform_positions
from clip2video.processing.url_fetching_clip2video import _fetch, fetch_url, is_public_address
from clip2video.processing.video_decoding_clip2video import DecodeLimits, read_video_frames
from clip2video.modeling_clip2video import CLIP2VideoModel
from tests.helpers.models import tiny_processor
from tests.helpers.processes import run_command
from tests.helpers.servers import misbehaving_handler, start_server, stop_server
from tests.helpers.videos import write_square_video, write_video


FETCHER_FILE = Path(__file__).resolve().parents[1] / "processing" / "url_fetching_clip2video.py"


def SELECT_ALL(table):
    return list(range(len(table.times)))


def sample(table):
    return select_source_frames(table.times, table.durations, table.nominal_fps, sampling_fps=2.5, max_frames=12)


# ----------------------------------------------------------------------------------------------------------------------
# A misbehaving HTTP server on loopback (`helpers.servers.MisbehavingHandler`).


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
    return Path(write_square_video(tmp_path_factory.mktemp("hostile") / "clip.mp4", num_frames=20))


@pytest.fixture(scope="module")
def servers(video_file):
    # `other` is on 127.0.0.2 (also loopback on Linux): the address a redirect must not reach.
    other = start_server(misbehaving_handler(video_file.read_bytes()), "127.0.0.2")
    main = start_server(misbehaving_handler(video_file.read_bytes(), other_url=other.url + "/video.mp4"), "127.0.0.1")
    yield main, main.url, other, other.url
    stop_server(main)
    stop_server(other)


# What a case may cost. Work is bounded in CPU seconds of this process (all its threads, FFmpeg's included), which a
# loaded machine does not stretch as it does wall time (CI's two cores at a load of 20 give a process a tenth of a
# core); waiting (for a server, a pipe, a resolver) in wall seconds, loosely: a regression waits for the 30 s the
# misbehaving server holds out, or forever.
WAIT_BOUND = 15


class Spent:
    """The wall and CPU seconds spent since it was made."""

    def __init__(self):
        self.wall, self.cpu = time.monotonic(), time.process_time()

    def check(self, cpu: float, wait: float = WAIT_BOUND) -> None:
        used, waited = time.process_time() - self.cpu, time.monotonic() - self.wall
        assert used < cpu and waited < wait, f"{used:.2f} CPU s (at most {cpu}) in {waited:.1f} s (at most {wait})"


def trusted(url, max_bytes=10_000_000, timeout=5.0, total_timeout=30.0):
    """The fetcher with loopback allowed (the opt-in for trusted local use)."""
    return fetch_url(url, max_bytes=max_bytes, timeout=timeout, total_timeout=total_timeout, allow_private=True)


def test_fetcher_reads_a_real_video(servers, video_file):
    _, base, _, _ = servers
    assert trusted(base + "/video.mp4") == video_file.read_bytes()


def test_loopback_and_private_addresses_are_refused_by_default(servers):
    main, base, _, _ = servers
    port = main.server_address[1]
    before = len(main.requests)
    for url in (
        base + "/video.mp4",
        f"http://localhost:{port}/video.mp4",
        f"http://2130706433:{port}/video.mp4",  # 127.0.0.1 as one decimal number
        f"http://0x7f.1:{port}/video.mp4",
        f"http://[::ffff:127.0.0.1]:{port}/video.mp4",
        f"http://0.0.0.0:{port}/video.mp4",
    ):
        with pytest.raises(ValueError, match="non-public address") as error:
            fetch_url(url, max_bytes=10**6, timeout=2, total_timeout=5)
        assert url[:60] in str(error.value)
    assert len(main.requests) == before  # the server never saw a request


@pytest.mark.parametrize(
    "address, public",
    [
        ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("10.1.2.3", False),
        ("172.16.0.1", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
        ("224.0.0.1", False), ("239.255.255.250", False), ("0.0.0.0", False), ("255.255.255.255", False),
        ("::1", False), ("fe80::1", False), ("fc00::1", False), ("ff02::1", False), ("::ffff:10.0.0.1", False),
        ("2002:7f00:1::", False), ("64:ff9b::a9fe:a9fe", False), ("2001:db8::1", False),
    ],
)
def test_address_classes(address, public):
    import ipaddress

    assert is_public_address(ipaddress.ip_address(address)) is public


@pytest.mark.slow
def test_a_server_that_never_answers_times_out(servers):
    _, base, _, _ = servers
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"Cannot fetch video http://127\.0\.0\.1:\d+/never: timed out"):
        trusted(base + "/never", timeout=1.0)
    assert time.monotonic() - started < WAIT_BOUND


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/drip", "/drip_headers"])
def test_a_server_dripping_a_byte_every_two_seconds_hits_the_deadline(servers, path):
    _, base, _, _ = servers
    started = time.monotonic()
    # Each byte comes well within the per-read timeout: only the deadline for the whole download stops it.
    with pytest.raises(ValueError, match=rf"{path}: the download took longer than allowed .*max_download_seconds"):
        trusted(base + path, timeout=3.0, total_timeout=3.0)
    assert time.monotonic() - started < WAIT_BOUND


def test_the_connection_goes_to_the_checked_address_not_a_new_dns_answer(servers, video_file):
    from clip2video.processing.url_fetching_clip2video import _CheckedHTTPConnection

    main, _, _, _ = servers
    # The host name cannot resolve: the request reaches the server only through the address given (no second lookup
    # a rebinding DNS server could answer differently).
    connection = _CheckedHTTPConnection("rebinding.invalid", main.server_address[1], "127.0.0.1", timeout=5)
    try:
        connection.request("GET", "/video.mp4")
        assert connection.getresponse().read() == video_file.read_bytes()
    finally:
        connection.close()


def test_a_resolver_that_hangs_is_given_the_timeout(monkeypatch):
    # No slow DNS server can run here: the system resolver is replaced by one that hangs for 5 s.
    def hanging(*args, **kwargs):
        time.sleep(5)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"http://videos\.example/a\.mp4: the host name did not resolve within 0\.5 s"):
        fetch_url("http://videos.example/a.mp4", max_bytes=10**6, timeout=0.5, total_timeout=10)
    assert time.monotonic() - started < 4  # not the 5 s the resolver hangs (a margin for a loaded machine)


def test_http_errors_and_redirects(servers):
    main, base, other, other_base = servers
    with pytest.raises(ValueError, match=r"/missing: HTTP 404"):
        trusted(base + "/missing")
    with pytest.raises(ValueError, match=r"/loop: more than 5 redirects"):
        trusted(base + "/loop")
    with pytest.raises(ValueError, match=r"/ftp \(redirected to ftp://127\.0\.0\.1/video\.mp4\): only http"):
        trusted(base + "/ftp")
    with pytest.raises(ValueError, match=r"/short: the body ended after 100 of 5000 bytes"):
        trusted(base + "/short")
    # A redirect is checked like the first URL: here 127.0.0.1 is trusted but 127.0.0.2 is not.
    before = len(other.requests)
    only_first = lambda address: str(address) == "127.0.0.1"  # noqa: E731
    redirected = r"/elsewhere \(redirected to http://127\.0\.0\.2:\d+/video\.mp4\): .*127\.0\.0\.2"
    with pytest.raises(ValueError, match=redirected):
        _fetch(base + "/elsewhere", 10**6, 5.0, 10.0, only_first)
    assert len(other.requests) == before
    # ... and followed when allowed.
    assert trusted(base + "/elsewhere") == trusted(other_base + "/video.mp4")


def test_bad_urls_are_value_errors_naming_them():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    cases = {
        f"http://127.0.0.1:{port}/video.mp4": "ConnectionRefusedError",
        "http://127.0.0.1:99999/video.mp4": "port",
        "http:///video.mp4": "no host",
        "file:///etc/passwd": "only http",
        "gopher://127.0.0.1/": "only http",
        "http://127.0.0.1/a video.mp4": "whitespace",
        "http://[::1/video.mp4": "Invalid IPv6",
    }
    for url, reason in cases.items():
        with pytest.raises(ValueError, match=re.escape(reason)) as error:
            trusted(url, timeout=2)
        message = str(error.value)
        assert url[:40] in message or reason == "Invalid IPv6", message
        assert reason in message, message


def test_huge_bodies_are_refused_from_the_header_or_while_streaming(servers):
    _, base, _, _ = servers
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"/huge: its Content-Length 1500000000 exceeds the limit of 1000000 bytes"):
        trusted(base + "/huge", max_bytes=1_000_000)
    with pytest.raises(ValueError, match=r"/endless: its body exceeds the limit of 1000000 bytes"):
        trusted(base + "/endless", max_bytes=1_000_000)
    assert time.monotonic() - started < WAIT_BOUND


def run_limited(code: str, memory_mb: int) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter whose address space may grow at most `memory_mb` above what it has after the
    imports `code` does first (everything before the line `LIMIT`).

    One malloc arena: glibc reserves 64 MB of address space (not memory) for each thread that allocates, so FFmpeg's
    decoding threads (as many as the machine has cores, where torch has several threads) took 216 of 300 MB on two
    cores and would exceed it on four. The timeout only stops a hang (the imports alone take minutes of wall time on
    a loaded machine): what a case may spend is bounded by the limit, and its CPU time by the case."""
    prologue = textwrap.dedent(
        f"""
        import resource
        def _limit():
            with open("/proc/self/status") as status:
                size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
            limit = (size_kb * 1024) + {memory_mb} * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        """
    )
    code = textwrap.dedent(code).replace("LIMIT\n", "_limit()\n")
    return subprocess.run(
        [sys.executable, "-c", prologue + code], capture_output=True, text=True, timeout=600,
        cwd=Path(__file__).parent, env={**os.environ, "MALLOC_ARENA_MAX": "1"},
    )


def test_an_endless_body_stays_within_memory(servers):
    _, base, _, _ = servers
    # The fetcher's file alone (standard library): a regression that reads the whole body fails with MemoryError.
    result = run_limited(
        f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("fetcher", {str(FETCHER_FILE)!r})
        fetcher = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fetcher)
        LIMIT
        try:
            fetcher.fetch_url({base + "/endless"!r}, max_bytes=20_000_000, timeout=5, total_timeout=20,
                              allow_private=True)
        except ValueError as error:
            print("refused:", error)
        """,
        memory_mb=200,
    )
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "/endless: its body exceeds the limit of 20000000 bytes" in result.stdout


# ----------------------------------------------------------------------------------------------------------------------
# Crafted video files.


def write_two_frames(path: Path, second_frame_seconds: float) -> Path:
    """An MKV of two 16x16 frames, the second `second_frame_seconds` after the first (754 bytes or so)."""
    frames = [np.full((16, 16, 3), 100 * index, np.uint8) for index in range(2)]
    write_video(path, 2, 1, codec="mpeg4", width=16, height=16, frames=frames, frame_times=(0, second_frame_seconds))
    return path


def write_large_frame(path: Path, width: int, height: int) -> Path:
    """A MOV with one grey PNG frame of `width x height` pixels (a few kB on disk)."""
    write_video(path, 1, 1, codec="png", width=width, height=height, frames=[np.zeros((height, width), np.uint8)],
                pix_fmt="gray")
    return path


def test_frames_a_billion_seconds_apart(tmp_path):
    path = write_two_frames(tmp_path / "gap.mkv", 1e9)
    started = Spent()
    with pytest.raises(ValueError, match=r"gap\.mkv: its duration in seconds .* exceeds .*max_duration_seconds"):
        read_video_frames(path, sample)
    started.check(cpu=2)
    # Raised past the gap, sampling is still arithmetic: the work does not grow with the 5 * 10^9 images ffmpeg
    # would write. Under a memory limit, a regression that lists them fails with MemoryError instead of swapping.
    result = run_limited(
        f"""
        from clip2video.processing.video_decoding_clip2video import DecodeLimits, read_video_frames
        from clip2video.processing.frame_sampling_clip2video import select_source_frames
        import av  # PyAV is imported lazily; its bundled libraries are mapped before the limit, not counted in it
        LIMIT
        import time
        started = time.process_time()
        decoded = read_video_frames(
            {str(path)!r},
            lambda table: select_source_frames(table.times, table.durations, table.nominal_fps, 2.5, 12),
            limits=DecodeLimits(max_duration_seconds=2e9),
        )
        print(decoded.timestamps)
        print(time.process_time() - started)
        """,
        memory_mb=300,
    )
    assert result.returncode == 0, result.stderr
    timestamps, cpu_seconds = result.stdout.split("\n")[:2]
    assert timestamps == "[0.0, 1000000000.0]" and float(cpu_seconds) < 2, result.stdout


def test_sampling_work_does_not_grow_with_the_timestamps():
    started = Spent()
    assert select_source_frames([0.0, 1e15], [None, None], 30.0, 2.5, 12) == [0, 1]
    assert len(uniform_positions(10**15, 5, 12)) == 12
    started.check(cpu=1)


@pytest.mark.parametrize(
    "times, durations, fps, message",
    [
        ([0.0, float("nan")], [None, None], 30.0, "finite"),
        ([0.0, float("inf")], [None, None], 30.0, "finite"),
        ([0.0, 0.1], [None, float("nan")], 30.0, "finite"),
        ([0.0, 0.1], [None, None], float("nan"), "nominal_fps"),
        ([0.0, 0.1], [None, None], -30.0, "nominal_fps"),
        ([0.0, 0.1], [None, None], 0, "nominal_fps"),
        ([0.0, 0.1], [None, None], "30", "nominal_fps"),
        ([0.0, "0.1"], [None, None], 30.0, "finite"),
        ([0.0, 0.1], [None], 30.0, "durations"),
    ],
)
def test_bad_timings_are_value_errors(times, durations, fps, message):
    with pytest.raises(ValueError, match=message):
        select_source_frames(times, durations, fps, 2.5, 12)


def test_bad_sampling_arguments_are_value_errors():
    for arguments, message in (((10, float("nan"), 12), "sampling_fps"), ((10, 2.5, 0), "max_frames"),
                               ((10, 2.5, True), "max_frames"), ((0, 2.5, 12), "num_extracted")):
        with pytest.raises(ValueError, match=message):
            uniform_positions(*arguments)


def test_frames_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    path = write_large_frame(tmp_path / "large.mov", 5000, 4000)  # 20 Mpixels, over the default 16.8 M
    started = Spent()
    with pytest.raises(ValueError, match=r"large\.mov: .*max_frame_pixels") as error:
        read_video_frames(path, SELECT_ALL)
    assert "CLIP2VIDEO_MAX_FRAME_PIXELS" in str(error.value)
    started.check(cpu=1)
    assert len(read_video_frames(path, SELECT_ALL, limits=DecodeLimits(max_frame_pixels=20_000_000)).frames) == 1
    with pytest.raises(ValueError, match=r"clip\.mp4: its frame size 48x48 in pixels 2304 exceeds the limit of 1000"):
        read_video_frames(write_square_video(tmp_path / "clip.mp4"), SELECT_ALL, limits=DecodeLimits(max_frame_pixels=1000))


def test_a_large_frame_is_refused_within_a_memory_limit(tmp_path):
    # 12000 x 12000: FFmpeg's probe alone would decode the frame (~180 MB) without the limit reaching it.
    path = write_large_frame(tmp_path / "huge.mov", 12000, 12000)
    result = run_limited(
        f"""
        from clip2video.processing.video_decoding_clip2video import read_video_frames
        import av  # PyAV is imported lazily; its bundled libraries are mapped before the limit, not counted in it
        LIMIT
        try:
            read_video_frames({str(path)!r}, lambda table: [0])
        except ValueError as error:
            print("refused:", error)
        """,
        memory_mb=100,
    )
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "huge.mov" in result.stdout and "max_frame_pixels" in result.stdout


def test_byte_duration_and_frame_count_limits(tmp_path, video_file):
    data = video_file.read_bytes()
    small = DecodeLimits(max_input_bytes=len(data) - 1)
    for video, name in ((str(video_file), "clip.mp4"), (data, f"<bytes of length {len(data)}>"),
                        (bytearray(data), f"<bytearray of length {len(data)}>"), (open(video_file, "rb"), "clip.mp4")):
        with pytest.raises(ValueError, match="max_input_bytes") as error:
            read_video_frames(video, SELECT_ALL, limits=small)
        assert name in str(error.value) and "CLIP2VIDEO_MAX_INPUT_BYTES" in str(error.value)
    with pytest.raises(ValueError, match=r"clip\.mp4: its duration in seconds 2\.0 exceeds the limit of 1\.5"):
        read_video_frames(video_file, SELECT_ALL, limits=DecodeLimits(max_duration_seconds=1.5))
    with pytest.raises(ValueError, match=r"clip\.mp4: its frame count 20 exceeds the limit of 10 .*max_source_frames"):
        read_video_frames(video_file, SELECT_ALL, limits=DecodeLimits(max_source_frames=10))
    # Within the limits all forms decode the same frames.
    frames = read_video_frames(video_file, sample).frames
    for video in (data, memoryview(data), io.BytesIO(data)):
        assert all(np.array_equal(a, b) for a, b in zip(read_video_frames(video, sample).frames, frames))


def test_decoding_work_is_bounded_for_a_video_with_one_keyframe(tmp_path):
    path = tmp_path / "one_keyframe.mp4"
    frames = [np.full((64, 64, 3), index % 256, np.uint8) for index in range(200)]
    write_video(path, 200, 25, width=64, height=64, frames=frames, g="1000", keyint_min="1000", bf="0")
    last = lambda table: [len(table.times) - 1]  # noqa: E731  reached only by decoding every frame before it
    assert len(read_video_frames(path, last).frames) == 1
    with pytest.raises(ValueError, match=r"one_keyframe\.mp4: the pixels decoded .* exceeds the limit of 409600 "
                                         r"\(`max_decoded_pixels`\).*CLIP2VIDEO_MAX_DECODED_PIXELS"):
        read_video_frames(path, last, limits=DecodeLimits(max_decoded_pixels=100 * 64 * 64))


def test_not_files_and_not_videos(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)  # opening it would block forever
    cases = {
        str(fifo): "pipe.mp4: not a regular file",
        "/dev/zero": "/dev/zero: not a regular file",
        str(tmp_path): "not a regular file",
        "ftp://example.com/video.mp4": "only http:// and https://",
        "with\0nul.mp4": "NUL",
        b"\x1aE\xdf\xa3" + bytes(300): "<bytes of length 304>: not a video file",
        os.urandom(5000): "<bytes of length 5000>: not a video file",
        b"": "<bytes of length 0>: it is empty",
    }
    for video, message in cases.items():
        started = Spent()
        with pytest.raises(ValueError, match=re.escape(message)) as error:
            read_video_frames(video, SELECT_ALL)
        assert message in str(error.value), (message, str(error.value))
        started.check(cpu=2)
    with pytest.raises(ValueError, match="binary mode"):
        read_video_frames(io.StringIO("text"), SELECT_ALL)
    with pytest.raises(ValueError, match="expected a path, an http"):
        read_video_frames(3.5, SELECT_ALL)


def test_decode_limits_validate_their_values(monkeypatch):
    for overrides, message in (({"max_input_bytes": 0}, "max_input_bytes"), ({"max_frame_pixels": 1.5}, "integer"),
                               ({"url_timeout_seconds": float("inf")}, "finite"), ({"allow_private_urls": 1}, "True"),
                               ({"max_duration_seconds": True}, "number"), ({"unknown": 1}, "Unknown")):
        with pytest.raises(ValueError, match=message):
            DecodeLimits.from_env(**overrides)
    monkeypatch.setenv("CLIP2VIDEO_MAX_INPUT_BYTES", "1e9")
    with pytest.raises(ValueError, match="CLIP2VIDEO_MAX_INPUT_BYTES='1e9' must be a positive integer"):
        DecodeLimits.from_env()
    monkeypatch.setenv("CLIP2VIDEO_MAX_INPUT_BYTES", "1000")
    monkeypatch.setenv("CLIP2VIDEO_ALLOW_PRIVATE_URLS", "yes")
    limits = DecodeLimits.from_env(max_frame_pixels=64)
    assert (limits.max_input_bytes, limits.allow_private_urls, limits.max_frame_pixels) == (1000, True, 64)
    assert DecodeLimits.from_env(max_input_bytes=5).max_input_bytes == 5  # an argument beats the environment


@pytest.mark.parametrize(
    "video", [np.zeros((2, 0, 8, 3), np.uint8), np.zeros((2, 8, 0, 3), np.uint8), [np.zeros((0, 5, 3), np.uint8)]]
)
def test_frames_without_pixels_are_value_errors(video):
    with pytest.raises(ValueError, match="Video frames must have a size"):
        tiny_processor()(videos=[video])


@pytest.mark.parametrize("fps", [float("nan"), -5, 0, float("inf"), "30"])
def test_bad_frame_rates_in_video_metadata_are_value_errors(fps):
    with pytest.raises(ValueError, match="fps"):
        tiny_processor()(videos=[np.zeros((10, 8, 8, 3), np.uint8)], video_metadata=[{"fps": fps}])


def test_processor_applies_the_limits_and_the_url_policy(servers, video_file):
    main, base, _, _ = servers
    processor = tiny_processor()
    with pytest.raises(ValueError, match=r"clip\.mp4: .*max_input_bytes"):
        processor(videos=[str(video_file)], max_input_bytes=100)
    before = len(main.requests)
    with pytest.raises(ValueError, match=r"127\.0\.0\.1:\d+/video\.mp4: its host resolves to the non-public"):
        processor(videos=[base + "/video.mp4"])
    assert len(main.requests) == before
    expected = processor(videos=[str(video_file)])["pixel_values_videos"]
    fetched = processor(videos=[base + "/video.mp4"], allow_private_urls=True)["pixel_values_videos"]
    torch.testing.assert_close(fetched, expected)


# ----------------------------------------------------------------------------------------------------------------------
# Pipelines.


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def loaded_pipelines(checkpoint):
    model = CLIP2VideoModel.from_pretrained(checkpoint).eval()
    processor = tiny_processor()
    return (
        pipeline(ZERO_SHOT_TASK, model=model, processor=processor),
        pipeline(RETRIEVAL_TASK, model=model, processor=processor),
    )


LABELS = ["red", "green"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"candidate_labels": LABELS, "hypothesis_template": "{}{}"}, "exactly one '{}'"),
        ({"candidate_labels": LABELS, "hypothesis_template": "{:>2000000000}"}, "exactly one '{}'"),
        ({"candidate_labels": LABELS, "hypothesis_template": "a video of"}, "exactly one '{}'"),
        ({"candidate_labels": LABELS, "hypothesis_template": 3}, "hypothesis_template"),
        ({"candidate_labels": LABELS, "top_k": -1}, "top_k"),
        ({"candidate_labels": LABELS, "top_k": 0}, "top_k"),
        ({"candidate_labels": LABELS, "top_k": 1.5}, "top_k"),
        ({"candidate_labels": LABELS, "top_k": True}, "top_k"),
        ({"candidate_labels": LABELS, "timeout": -1}, "timeout"),
        ({"candidate_labels": LABELS, "timeout": float("nan")}, "timeout"),
        ({"candidate_labels": LABELS, "function_to_apply": "max"}, "function_to_apply"),
        ({"candidate_labels": LABELS, "candidate_label": LABELS}, r"unknown arguments \['candidate_label'\]"),
        ({"candidate_labels": []}, "candidate_labels"),
        ({"candidate_labels": ["red", ""]}, r"candidate_labels\[1\]"),
        ({"candidate_labels": ["red", None]}, r"candidate_labels\[1\]"),
        ({"candidate_labels": ("red" for _ in range(2))}, "candidate_labels"),
        ({"candidate_labels": 5}, "candidate_labels"),
        ({}, "candidate_labels"),
    ],
)
def test_zero_shot_arguments_are_checked_before_any_work(loaded_pipelines, tmp_path, arguments, message):
    classifier, _ = loaded_pipelines
    # The video does not exist: an argument error must come first, before anything is decoded.
    with pytest.raises(ValueError, match=message):
        classifier(str(tmp_path / "not_decoded.mp4"), **arguments)


@pytest.mark.parametrize(
    "videos, message",
    [
        ([], "empty list"),
        # A generator or a dataset is streamed, each video checked when its turn comes (tests/test_pipelines_flows.py);
        # an array of the wrong rank is never taken for a stream of its rows.
        (torch.zeros(8, 8, 3, dtype=torch.uint8), r"Tensor of shape \(8, 8, 3\)"),
        ("", "empty string"),
        (["a.mp4", 3], r"`videos\[1\]` is a int"),
        (np.zeros((8, 8, 3), np.uint8), "ndarray of shape"),
        ({"video": "a.mp4"}, "dict"),
    ],
)
def test_zero_shot_videos_are_checked_before_any_work(loaded_pipelines, videos, message):
    classifier, _ = loaded_pipelines
    with pytest.raises(ValueError, match=message):
        classifier(videos, candidate_labels=LABELS)


def test_labels_with_braces_are_plain_text_and_top_k_over_the_count_keeps_all(loaded_pipelines, video_file):
    classifier, _ = loaded_pipelines
    labels = ["{}", "{0}", "{:>2000000000}", "{label}"]
    answer = classifier(str(video_file), candidate_labels=labels, top_k=10)
    assert sorted(item["label"] for item in answer) == sorted(labels)
    assert sum(item["score"] for item in answer) == pytest.approx(1.0)
    assert len(classifier(str(video_file), candidate_labels=labels, top_k=1)) == 1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r, v: r("a query", videos=[v], top_k=-1), "top_k"),
        (lambda r, v: r("a query", videos=[v], top_k=0), "top_k"),
        (lambda r, v: r("a query", videos=[v], k=3), r"unknown arguments \['k'\]"),
        (lambda r, v: r("a query", videos=[v], timeout="10"), "timeout"),
        (lambda r, v: r("a query", videos=(path for path in [v])), "non-empty list"),
        (lambda r, v: r("a query", videos=[]), "non-empty list"),
        (lambda r, v: r("a query", videos=[v, None]), r"`videos\[1\]` is a NoneType"),
        (lambda r, v: r(["a query", 3], videos=[v]), "non-empty string"),
        (lambda r, v: r([], videos=[v]), "query list is empty"),
        (lambda r, v: r(None, videos=[v]), "non-empty string"),
    ],
)
def test_retrieval_arguments_are_checked_before_any_work(loaded_pipelines, tmp_path, call, message):
    _, retriever = loaded_pipelines
    with pytest.raises(ValueError, match=message):
        call(retriever, str(tmp_path / "not_decoded.mp4"))


def test_pipeline_timeout_bounds_a_url_that_never_answers(loaded_pipelines, servers, monkeypatch):
    classifier, retriever = loaded_pipelines
    _, base, _, _ = servers
    monkeypatch.setenv("CLIP2VIDEO_ALLOW_PRIVATE_URLS", "1")
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"/never: timed out"):
        classifier(base + "/never", candidate_labels=LABELS, timeout=0.5)
    with pytest.raises(ValueError, match=r"/never: timed out"):
        retriever("a query", videos=[base + "/never"], timeout=0.5)
    assert time.monotonic() - started < WAIT_BOUND
    monkeypatch.delenv("CLIP2VIDEO_ALLOW_PRIVATE_URLS")
    before = len(servers[0].requests)
    with pytest.raises(ValueError, match="non-public address"):
        classifier(base + "/video.mp4", candidate_labels=LABELS)
    assert len(servers[0].requests) == before


# ----------------------------------------------------------------------------------------------------------------------
# The endpoint handler: the server's network and files are out of reach.


@pytest.mark.slow
def test_handler_reaches_neither_internal_servers_nor_files_outside_its_root(checkpoint, servers, tmp_path):
    main, base, other, other_base = servers
    root = tmp_path / "served"
    root.mkdir()
    write_square_video(root / "clip.mp4")
    secret = tmp_path / "secret.mp4"
    secret.write_bytes((root / "clip.mp4").read_bytes())
    (root / "escape.mp4").symlink_to(secret)
    (root / "sub").mkdir()
    requests = {
        "loopback_url": base + "/video.mp4",
        "redirecting_url": base + "/elsewhere",
        "other_loopback": other_base + "/video.mp4",
        "localhost": f"http://localhost:{main.server_address[1]}/video.mp4",
        "decimal_ip": f"http://2130706433:{main.server_address[1]}/video.mp4",
        "file_url": "file://" + str(secret),
        "absolute_existing": str(secret),
        "absolute_missing": str(tmp_path / "missing.mp4"),
        "dotdot_existing": "../secret.mp4",
        "dotdot_missing": "../missing.mp4",
        "dotdot_inside": "sub/../../secret.mp4",
        "symlink_escape": "escape.mp4",
        "etc_shadow": "/etc/shadow",
        "etc_nothing": "/etc/no-such-file",
        "proc": "/proc/self/environ",
        "root_itself": ".",
        "directory": "sub",
        "nul": "clip.mp4\0.txt",
    }
    before = (len(main.requests), len(other.requests))
    result = run_command(
        [sys.executable, "-c", textwrap.dedent(
            f"""
            import importlib.util, json, os, sys
            sys.path.insert(0, {str(checkpoint)!r})
            spec = importlib.util.spec_from_file_location("handler.EndpointHandler", {str(checkpoint / "handler.py")!r})
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            handler = module.EndpointHandler({str(checkpoint)!r}, video_root={str(root)!r})
            opened = []
            def audit(event, arguments):
                if event == "open" and isinstance(arguments[0], (str, bytes)):
                    opened.append(os.fsdecode(arguments[0]))
            sys.addaudithook(audit)
            answers = {{}}
            for name, video in json.loads(sys.argv[1]).items():
                try:
                    answers[name] = handler({{"inputs": {{"video": video, "candidate_labels": ["a", "b"]}}}})
                except Exception as error:
                    answers[name] = {{"type": type(error).__name__, "error": str(error)}}
            several = handler({{"inputs": {{"videos": ["clip.mp4", "../secret.mp4"], "candidate_labels": ["a", "b"]}}}})
            print(json.dumps({{"answers": answers, "several": several, "opened": opened}}))
            """
        ), json.dumps(requests)],
        timeout=120, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1])
    answers = output["answers"]
    for name, answer in answers.items():
        assert answer.get("type") == "RequestError", (name, answer)
    for name in ("loopback_url", "redirecting_url", "other_loopback", "localhost", "decimal_ip"):
        assert "non-public address" in answers[name]["error"] and requests[name][:30] in answers[name]["error"]
    assert (len(main.requests), len(other.requests)) == before  # no request reached the internal servers
    # Existing or not, a forbidden path gets the same answer (up to the path itself).
    def shape(name):
        # The path as the handler shows it (cut short past 80 characters, which a longer temporary folder reaches).
        from clip2video.pipelines.publishing.endpoint.handler import _shown

        return answers[name]["error"].replace(_shown(requests[name]), "PATH")

    assert shape("absolute_existing") == shape("absolute_missing") == shape("etc_shadow") == shape("etc_nothing")
    assert shape("dotdot_existing") == shape("dotdot_missing") == shape("symlink_escape") == shape("dotdot_inside")
    assert shape("absolute_existing") == shape("dotdot_existing")
    # No file outside the root was opened while answering (the audit hook saw every open).
    outside = [path for path in output["opened"] if str(tmp_path) in path and not path.startswith(str(root))]
    assert not outside, outside
    assert not any(path.startswith(("/etc/shadow", "/proc/self/environ")) for path in output["opened"])
    several = output["several"]["results"]
    assert "labels" in several[0] and "folder this endpoint serves" in several[1]["error"]


def test_handler_refuses_oversized_payloads_before_decoding(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP2VIDEO_MAX_INPUT_BYTES", "1000")
    spec = importlib.util.spec_from_file_location("hostile_handler", checkpoint / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.EndpointHandler(str(checkpoint))
    big = base64.b64encode(bytes(3000)).decode()
    for video in (big, "data:video/mp4;base64," + big):
        with pytest.raises(module.RequestError, match="more than 1000 bytes") as error:
            handler({"inputs": {"video": video, "candidate_labels": LABELS}})
        assert error.value.status_code == 413
    with pytest.raises(module.RequestError, match="not valid base64|neither base64"):
        handler({"inputs": {"video": "data:video/mp4;base64,@@@@", "candidate_labels": LABELS}})
    with pytest.raises(module.RequestError, match='only base64 data URIs'):
        handler({"inputs": {"video": "data:video/mp4,rawbytes", "candidate_labels": LABELS}})
    with pytest.raises(module.RequestError, match="at most 256"):
        handler({"inputs": {"video": big, "texts": ["t"] * 257}})


# ----------------------------------------------------------------------------------------------------------------------
# The converter of the authors' checkpoints.


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory):
    from tests.helpers.original_clip2video import random_original_checkpoint

    folder = tmp_path_factory.mktemp("original")
    state_dict = random_original_checkpoint()
    torch.save(state_dict, folder / "pytorch_model.bin.2")
    return folder / "pytorch_model.bin.2", state_dict


def run_converter(checkpoint, output_dir):
    return run_command(
        [sys.executable, "-m", "clip2video.modeling_clip2video.convert_original_checkpoint", "--checkpoint",
         checkpoint, "--output_dir", output_dir],
        timeout=120, check=False,
    )


@pytest.mark.slow
def test_converter_refuses_an_output_dir_that_is_a_file(original_checkpoint, tmp_path):
    checkpoint, _ = original_checkpoint
    existing = tmp_path / "existing_file"
    existing.write_text("keep me")
    result = run_converter(checkpoint, existing)
    assert result.returncode != 0 and "Wrote" not in result.stdout
    assert f"--output_dir {existing} is an existing file" in result.stderr
    assert existing.read_text() == "keep me"
    result = run_converter(tmp_path / "no_such_checkpoint.bin", tmp_path / "out")
    assert result.returncode != 0 and "No checkpoint file at" in result.stderr and "Traceback" not in result.stderr


def test_converter_names_the_file_or_tensor_that_is_wrong(original_checkpoint, tmp_path):
    from clip2video.modeling_clip2video.convert_original_checkpoint import ConversionError, convert_original_checkpoint

    checkpoint, state_dict = original_checkpoint
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "text.bin").write_text("not a checkpoint\n" * 100)
    (tmp_path / "garbage.bin").write_bytes(os.urandom(4096))
    torch.save([torch.zeros(2)], tmp_path / "list.bin")
    torch.save({**state_dict, 7: torch.zeros(1)}, tmp_path / "int_key.bin")
    torch.save({**state_dict, "clip.visual.conv1.weight": state_dict["clip.visual.conv1.weight"][0]},
               tmp_path / "conv1_3d.bin")
    torch.save({**state_dict, "clip.text_projection": state_dict["clip.text_projection"][0]},
               tmp_path / "projection_1d.bin")
    cases = {
        "empty.bin": "empty.bin is empty",
        "text.bin": "text.bin is not a PyTorch checkpoint",
        "garbage.bin": "garbage.bin is not a PyTorch checkpoint",
        "list.bin": "list.bin holds a list",
        "int_key.bin": "int_key.bin has a key 7 of type int",
        "conv1_3d.bin": "'clip.visual.conv1.weight' has shape (3, 16, 16); an original checkpoint stores it with 4",
        "projection_1d.bin": "'clip.text_projection' has shape (128,); an original checkpoint stores it with 2",
    }
    for name, message in cases.items():
        with pytest.raises(ConversionError, match=re.escape(message)) as error:
            convert_original_checkpoint(tmp_path / name, tmp_path / f"out_{name}")
        assert message in str(error.value), (name, str(error.value))
        assert not (tmp_path / f"out_{name}").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Settings from the environment: one parser, range-checked, refusing by the variable's name.


@pytest.mark.parametrize(
    "variable, text, message",
    [
        ("CLIP2VIDEO_MAX_FRAME_PIXELS", str(2**31), "must be a positive integer at most 268,435,455"),
        ("CLIP2VIDEO_MAX_INPUT_BYTES", str(2**63), "must be a positive integer at most 1,099,511,627,776"),
        ("CLIP2VIDEO_MAX_INPUT_BYTES", "-5", "must be a positive integer"),
        ("CLIP2VIDEO_MAX_INPUT_BYTES", "0", "must be a positive integer"),
        ("CLIP2VIDEO_MAX_SOURCE_FRAMES", "\u00b2", "must be a positive integer"),  # '²'.isdigit() is True
        ("CLIP2VIDEO_MAX_SOURCE_FRAMES", "\u0661\u0662", "must be a positive integer"),  # int() reads Arabic digits
        ("CLIP2VIDEO_MAX_DECODED_PIXELS", "1_000", "must be a positive integer"),
        ("CLIP2VIDEO_URL_TIMEOUT_SECONDS", "1e10", "must be a finite number at least 0.001 and at most 604800"),
        ("CLIP2VIDEO_URL_TIMEOUT_SECONDS", "nan", "must be a finite number"),
        ("CLIP2VIDEO_MAX_DOWNLOAD_SECONDS", "inf", "must be a finite number"),
        ("CLIP2VIDEO_MAX_DOWNLOAD_SECONDS", "0", "must be a finite number at least 0.001"),
        ("CLIP2VIDEO_MAX_DURATION_SECONDS", "-1", "must be a finite number at least 0.001"),
        ("CLIP2VIDEO_ALLOW_PRIVATE_URLS", "maybe", "must be a boolean"),
        ("CLIP2VIDEO_ALLOW_PRIVATE_URLS", "2", "must be a boolean"),
    ],
)
def test_environment_limits_out_of_range_are_refused_naming_the_variable(monkeypatch, variable, text, message):
    monkeypatch.setenv(variable, text)
    with pytest.raises(ValueError, match=f"Environment variable {variable}={text!r} {message}"):
        DecodeLimits.from_env()


def test_environment_booleans_any_case_and_blank_means_the_default(monkeypatch):
    for text, expected in [("TRUE", True), ("Yes", True), (" on ", True), ("1", True), ("0", False), ("False", False),
                           ("NO", False), ("", False), ("   ", False)]:
        monkeypatch.setenv("CLIP2VIDEO_ALLOW_PRIVATE_URLS", text)
        assert DecodeLimits.from_env().allow_private_urls is expected, text
    monkeypatch.setenv("CLIP2VIDEO_MAX_FRAME_PIXELS", " 268435455 ")
    monkeypatch.setenv("CLIP2VIDEO_URL_TIMEOUT_SECONDS", "+2.5e1")
    limits = DecodeLimits.from_env()
    assert (limits.max_frame_pixels, limits.url_timeout_seconds) == (268435455, 25.0)
    with pytest.raises(ValueError, match="DecodeLimits.max_frame_pixels must lie between 1 and 268,435,455"):
        DecodeLimits(max_frame_pixels=2**31)


def test_fetcher_refuses_limits_it_cannot_honour_before_connecting(servers):
    main, base, _, _ = servers
    before = len(main.requests)
    for arguments, message in [({"timeout": 1e10}, "timeout must be a number of seconds"),
                               ({"total_timeout": math.nan}, "total_timeout must be"),
                               ({"timeout": -1}, "timeout must be"), ({"max_bytes": 2**63}, "max_bytes must be"),
                               ({"max_bytes": 0}, "max_bytes must be"), ({"timeout": True}, "timeout must be")]:
        limits = {"max_bytes": 1000, "timeout": 5.0, "total_timeout": 5.0, **arguments}
        with pytest.raises(ValueError, match=message):
            fetch_url(base + "/video.mp4", allow_private=True, **limits)
    assert len(main.requests) == before


def test_endpoint_settings_use_the_same_parser(checkpoint, monkeypatch):
    spec = importlib.util.spec_from_file_location("settings_handler", checkpoint / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for variable, text, message in [
        ("CLIP2VIDEO_ENDPOINT_MAX_VIDEOS", "\u00b2", "must be a positive integer at most 1,024"),
        ("CLIP2VIDEO_ENDPOINT_MAX_TEXTS", "-3", "must be a positive integer"),
        ("CLIP2VIDEO_ENDPOINT_DEVICE", "nonsense:3", "is not a torch device"),
        ("CLIP2VIDEO_ENDPOINT_DTYPE", "float64", "choose one of"),
        ("CLIP2VIDEO_ENDPOINT_VIDEO_ROOT", "/nonexistent/videos", "is not a folder"),
    ]:
        with monkeypatch.context() as context:
            context.setenv(variable, text)
            with pytest.raises(ValueError, match=f"{variable}={text!r}.*{message}"):
                module.EndpointHandler(str(checkpoint))
    monkeypatch.setenv("CLIP2VIDEO_ENDPOINT_MAX_VIDEOS", " 3 ")
    monkeypatch.setenv("CLIP2VIDEO_ENDPOINT_DTYPE", "Float32")
    handler = module.EndpointHandler(str(checkpoint))
    assert (handler.max_videos, handler.dtype) == (3, torch.float32)


def test_handler_reads_data_uris_in_any_case_and_mime_base64(checkpoint, video_file):
    spec = importlib.util.spec_from_file_location("uri_handler", checkpoint / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.EndpointHandler(str(checkpoint))
    content = video_file.read_bytes()
    plain = base64.b64encode(content).decode()
    expected = handler({"inputs": {"video": plain, "candidate_labels": LABELS}})
    mime = base64.encodebytes(content).decode()  # a line break every 76 characters
    pem = "\r\n".join(plain[i:i + 64] for i in range(0, len(plain), 64)) + "\r\n"
    for video in [mime, pem, "DATA:video/mp4;BASE64," + plain, "Data:Video/MP4;base64," + mime]:
        assert handler({"inputs": {"video": video, "candidate_labels": LABELS}}) == expected
    for video, message in [("data:video/mp4;base64,QUJD\u00e9", "not valid base64"),
                           ("DATA:video/mp4," + plain, "only base64 data URIs")]:
        with pytest.raises(module.RequestError, match=message):
            handler({"inputs": {"video": video, "candidate_labels": LABELS}})


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints whose weights make every score NaN.


@pytest.mark.parametrize(
    "tensor, value, message",
    [
        ("logit_scale", math.nan, "NaN or infinite values in 1 tensor.s.: logit_scale"),
        ("logit_scale", 1000.0, r"has logit_scale \[1000.0\]: exp\(logit_scale\), the scores' scale, overflows"),
        ("text_model.final_layer_norm.weight", math.inf, "in 1 tensor.s.: text_model.final_layer_norm.weight"),
        ("temporal_transformer.layers.0.mlp.fc1.weight", math.nan, "temporal_transformer.layers.0.mlp.fc1.weight"),
    ],
)
def test_non_finite_weights_are_refused_at_load_naming_the_tensor(checkpoint, tmp_path, tensor, value, message):
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    folder = tmp_path / "broken"
    shutil.copytree(checkpoint, folder)
    weights = load_file(folder / "model.safetensors")
    assert tensor in weights, sorted(weights)[:20]
    broken = weights[tensor].clone()
    broken.view(-1)[0] = value
    save_file({**weights, tensor: broken}, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=message):
        CLIP2VideoModel.from_pretrained(folder)
    with pytest.raises(ValueError, match=message):
        AutoModel.from_pretrained(folder, trust_remote_code=True)


def test_a_large_but_finite_logit_scale_loads_and_scores_unchanged(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "sharp"
    shutil.copytree(checkpoint, folder)
    weights = load_file(folder / "model.safetensors")
    save_file({**weights, "logit_scale": torch.tensor(50.0)}, folder / "model.safetensors", metadata={"format": "pt"})
    model = CLIP2VideoModel.from_pretrained(folder)
    assert model.logit_scale.item() == 50.0  # loaded as stored: scores are the weights' scores, never clamped


# ----------------------------------------------------------------------------------------------------------------------
# Frame images: high bit depths scaled, bombs refused from the header, only regular files.


def png_bytes(values: np.ndarray, color_type: int, size: tuple[int, int] | None = None) -> bytes:
    """A 16-bit PNG written by hand (the standard's chunks, zlib and CRC32), independent of Pillow. `color_type` 0 is
    grey, 2 RGB, 4 grey and alpha; `size` overrides the header's (width, height) to make a bomb."""
    height, width = values.shape[:2]
    width, height = size or (width, height)
    raw = b"".join(b"\x00" + values[row].astype(">u2").tobytes() for row in range(values.shape[0]))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + (zlib.crc32(kind + data) & 0xFFFFFFFF).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([16, color_type, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# 16-bit values around every place a rounding or a clip would show: 255 and 256 (the clip), halves of 257.
GREYS_16 = [0, 128, 129, 255, 256, 385, 386, 32767, 32768, 65278, 65407, 65535]


def pixel_values_to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Undoes the processor's normalisation of identity-sized frames (32 x 32): the uint8 value of each pixel."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    mean, std = torch.tensor(OPENAI_CLIP_MEAN)[:, None, None], torch.tensor(OPENAI_CLIP_STD)[:, None, None]
    return ((pixels * std + mean) * 255).round()


def test_16_bit_grey_frames_are_scaled_not_clipped(tmp_path):
    """Frame images, PIL frames and uint16 arrays alike."""
    from PIL import Image

    paths, pil_frames = [], []
    for index, grey in enumerate(GREYS_16):
        values = np.full((32, 32), grey, np.uint16)
        paths.append(tmp_path / f"frame{index:02d}.png")
        paths[-1].write_bytes(png_bytes(values, 0))
        pil_frames.append(Image.fromarray(values))  # mode I;16, as Pillow holds them
    # The nearest 8-bit value of each, computed here: v * 255 / 65535 rounded.
    expected = torch.tensor([math.floor(grey * 255 / 65535 + 0.5) for grey in GREYS_16], dtype=torch.float32)
    processor = tiny_processor()
    arrays = np.stack([np.full((32, 32, 3), grey, np.uint16) for grey in GREYS_16])
    for video in ([str(path) for path in paths], pil_frames, arrays, torch.from_numpy(arrays)):
        out = processor(videos=[video], do_sample_frames=False, num_frames=len(GREYS_16))["pixel_values_videos"][0]
        got = pixel_values_to_uint8(out)
        assert torch.equal(got, expected[:, None, None, None].expand_as(got)), got[:, 0, 0, 0].tolist()
    assert expected[4] == 1 and expected[-1] == 255  # convert("RGB") would give 255 from 256 on


def test_16_bit_colour_and_alpha_pngs_keep_their_colours(tmp_path):
    values = np.zeros((32, 32, 3), np.uint16)
    values[..., 0], values[..., 1], values[..., 2] = 65535, 32768, 256
    (tmp_path / "rgb.png").write_bytes(png_bytes(values, 2))
    grey_alpha = np.stack([np.full((32, 32), 32768, np.uint16), np.full((32, 32), 65535, np.uint16)], -1)
    (tmp_path / "la.png").write_bytes(png_bytes(grey_alpha, 4))
    out = tiny_processor()(videos=[[str(tmp_path / "rgb.png"), str(tmp_path / "la.png")]], do_sample_frames=False)
    got = pixel_values_to_uint8(out["pixel_values_videos"][0, :2])[:, :, 0, 0]
    # Pillow reads 16-bit colour as 8 bits (the high byte): within one level of the nearest value, never clipped.
    assert torch.allclose(got, torch.tensor([[255.0, 128.0, 1.0], [128.0, 128.0, 128.0]]), atol=1), got


def test_a_png_bomb_is_refused_from_its_header_by_our_limit(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(np.zeros((1, 4), np.uint16), 0, size=(100_000, 100_000)))
    large = tmp_path / "large.png"
    large.write_bytes(png_bytes(np.zeros((1, 4), np.uint16), 0, size=(5000, 5000)))
    for path, pixels in [(bomb, "10000000000"), (large, "25000000")]:
        started = Spent()
        with pytest.raises(ValueError, match=f"{path.name}: .*{pixels} exceeds the limit of 16777216 .`max_frame_pix"):
            tiny_processor()(videos=[[str(path)]])
        started.check(cpu=2)


def test_frame_paths_that_are_not_regular_files_are_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "folder.png").mkdir()
    for name in ("pipe.png", "folder.png"):
        started = Spent()
        with pytest.raises(ValueError, match=f"Cannot read frame image .*{name}: not a regular file"):
            tiny_processor()(videos=[[str(tmp_path / name)]])
        started.check(cpu=2)


# ----------------------------------------------------------------------------------------------------------------------
# Video inputs and metadata of the wrong form: named errors, never raw ones or silent results.


FRAMES = np.zeros((10, 8, 8, 3), np.uint8)


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"duration": "10"}, "duration must be a positive number, got '10'"),
        ({"fps": "30"}, "fps must be a positive number"),
        ({"fps": 1e-300}, "fps=1e-300 puts 10 frames 1e\\+301 s apart"),
        ({"fps": 0}, "fps must be a positive number"),
        ({"fps": math.nan}, "fps must be a positive number"),
        ({"fps": True}, "fps must be a positive number"),
        ({"duration": -1.0}, "duration must be a positive number"),
        ({"total_num_frames": "10"}, "total_num_frames must be an integer"),
        ({"total_num_frames": 20, "frames_indices": 5}, "frames_indices must be a list of integers"),
        ({"total_num_frames": 20, "frames_indices": [i * 1.5 for i in range(10)]}, "frames_indices must be a list of"),
        ({"total_num_frames": 20, "frames_indices": np.arange(10) + 0.5}, "frames_indices must be a list of integers"),
        ({"total_num_frames": 20, "frames_indices": ["0"] * 10}, "frames_indices must be a list of integers"),
    ],
)
def test_bad_video_metadata_is_a_value_error_naming_the_field(metadata, message):
    with pytest.raises(ValueError, match=message):
        tiny_processor()(videos=[FRAMES], video_metadata=[{"fps": 5, **metadata} if "fps" not in metadata
                                                          and "duration" not in metadata else metadata])


def test_integer_frames_indices_as_arrays_are_accepted():
    metadata = {"fps": 10.0, "total_num_frames": 40, "frames_indices": np.arange(0, 40, 4)}
    from_array = tiny_processor()(videos=[FRAMES], video_metadata=[metadata])
    from_list = tiny_processor()(videos=[FRAMES], video_metadata=[{**metadata, "frames_indices": list(range(0, 40, 4))}])
    assert torch.equal(from_array["video_mask"], from_list["video_mask"])


@pytest.mark.parametrize(
    "videos, message",
    [
        (np.zeros((0, 4, 8, 8, 3), np.uint8), r"empty batch of videos \(an array of shape \(0, 4, 8, 8, 3\)\)"),
        (torch.zeros((0, 4, 3, 8, 8), dtype=torch.uint8), "empty batch of videos"),
        (np.empty((2, 8, 8, 3), dtype=object), "must be a numeric array .* got dtype object"),
        ([np.array([["a"] * 3] * 8 * 8).reshape(8, 8, 3)], "must be a numeric array .* got dtype <U1"),
        (torch.zeros((4, 3, 8, 8), dtype=torch.uint8, device="meta"), "dense tensor holding data, got one on the meta"),
        ([{"bytes": "/etc/hostname"}], r"'bytes' is a str, not bytes"),
        ({"bytes": None, "path": 7}, r"'path' is a int, not a path"),
    ],
)
def test_inputs_of_the_wrong_form_are_value_errors(videos, message):
    with pytest.raises(ValueError, match=message):
        tiny_processor()(videos=videos)


def test_do_sample_frames_none_means_the_default():
    frames = np.random.default_rng(0).integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    processor = tiny_processor()
    default = processor(videos=[frames], video_metadata=[{"fps": 10.0}])
    for value in (None, True):
        given = processor(videos=[frames], video_metadata=[{"fps": 10.0}], do_sample_frames=value)
        assert torch.equal(given["pixel_values_videos"], default["pixel_values_videos"])
    with pytest.raises(ValueError, match="with `do_sample_frames=False` every frame is used"):
        processor(videos=[frames], do_sample_frames=False)


def test_frame_images_are_turned_upright_by_their_exif_orientation(tmp_path):
    from PIL import Image

    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:16] = (255, 0, 0)  # stored: red on top, blue below
    pixels[16:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the top goes to the right
    image.save(tmp_path / "turned.png", exif=exif)
    out = tiny_processor()(videos=[[str(tmp_path / "turned.png")]], do_sample_frames=False)["pixel_values_videos"]
    got = pixel_values_to_uint8(out[0, 0])
    # Upright (as transformers' load_image shows it): blue on the left, red on the right, whole columns.
    assert got[:, :, 4].tolist() == [[0.0] * 32, [0.0] * 32, [255.0] * 32]
    assert got[:, :, 27].tolist() == [[255.0] * 32, [0.0] * 32, [0.0] * 32]


@pytest.mark.parametrize("fps, message", [(1e-300, "puts 10 frames 1e\\+301 s apart"), (math.nan, "positive number"),
                                          ("5", "positive number, got '5'"), (-5.0, "positive number")])
def test_sample_frames_called_directly_checks_the_frame_rate(fps, message):
    from transformers.video_utils import VideoMetadata

    with pytest.raises(ValueError, match=message):
        tiny_processor().video_processor.sample_frames(VideoMetadata(total_num_frames=10, fps=fps))
