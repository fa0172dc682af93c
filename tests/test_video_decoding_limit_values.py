"""The values `processing/video_decoding_clip2video.py`'s `DecodeLimits` accept, from its contract (the class
docstring: "every value is range-checked ...; one out of range is refused, naming it", and `parse_setting`'s: integers
in ASCII digits, finite decimal numbers, booleans in any case): each field exactly at its smallest and largest value
is accepted and one unit past is refused with the message naming the field and its range, as an argument and as a
`CLIP2VIDEO_*` environment variable; over the whole input space with hypothesis. The refusals of a real file name
the file, the value and the limit; frames of one pixel are frames. Only videos of a few frames are decoded: fast."""

import errno
import io
import math
import os
import re
import time

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clip2video.processing.video_decoding_clip2video import (
    DecodeLimits,
    _check_time_span,
    parse_setting,
    read_video_frames,
)
from tests.helpers.servers import misbehaving_handler, start_server, stop_server
from tests.helpers.videos import write_video


TIB, WEEK = 2**40, 604800.0
# field: (smallest, largest, how the message writes the range)
INTEGER_FIELDS = {
    "max_input_bytes": (1, TIB, "1 and 1,099,511,627,776"),
    "max_frame_pixels": (1, (2**31 - 1) // 8, "1 and 268,435,455"),
    "max_source_frames": (1, 2**31 - 1, "1 and 2,147,483,647"),
    "max_decoded_pixels": (1, 2**62, "1 and 4,611,686,018,427,387,904"),
}
FLOAT_FIELDS = {
    "max_duration_seconds": (0.001, math.inf, "0.001 and inf"),
    "url_timeout_seconds": (0.001, WEEK, "0.001 and 604800"),
    "max_download_seconds": (0.001, WEEK, "0.001 and 604800"),
}


def below(value):
    return math.nextafter(value, -math.inf)


def above(value):
    return math.nextafter(value, math.inf)


@pytest.mark.parametrize("field", INTEGER_FIELDS)
def test_integer_fields_at_both_ends_are_accepted_and_one_past_refused_naming_the_range(field):
    smallest, largest, written = INTEGER_FIELDS[field]
    assert getattr(DecodeLimits(**{field: smallest}), field) == smallest
    assert getattr(DecodeLimits(**{field: largest}), field) == largest
    with pytest.raises(ValueError, match=rf"^DecodeLimits\.{field} must lie between {written}, got {largest + 1}\.$"):
        DecodeLimits(**{field: largest + 1})
    for value in (0, -1, True, 5.0, "5", None):
        with pytest.raises(ValueError, match=rf"^DecodeLimits\.{field} must be a positive integer, got "
                                             rf"{re.escape(repr(value))}\.$"):
            DecodeLimits(**{field: value})


@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_number_fields_at_both_ends_are_accepted_and_one_past_refused_naming_the_range(field):
    smallest, largest, written = FLOAT_FIELDS[field]
    assert getattr(DecodeLimits(**{field: smallest}), field) == smallest
    assert getattr(DecodeLimits(**{field: 5}), field) == 5  # an int is a number of seconds too
    with pytest.raises(ValueError, match=rf"^DecodeLimits\.{field} must lie between {written}, got "
                                         rf"{re.escape(repr(below(smallest)))}\.$"):
        DecodeLimits(**{field: below(smallest)})
    if largest < math.inf:
        assert getattr(DecodeLimits(**{field: largest}), field) == largest
        with pytest.raises(ValueError, match=rf"^DecodeLimits\.{field} must lie between {written}, got "
                                             rf"{re.escape(repr(above(largest)))}\.$"):
            DecodeLimits(**{field: above(largest)})
    else:
        assert getattr(DecodeLimits(**{field: 1e300}), field) == 1e300
    for value in (0, 0.0, -1.0, math.inf, math.nan, True, "5", None):
        with pytest.raises(ValueError, match=rf"^DecodeLimits\.{field} must be a positive finite number, got "
                                             rf"{re.escape(repr(value))}\.$"):
            DecodeLimits(**{field: value})


def test_the_boolean_field_takes_only_true_or_false():
    assert DecodeLimits(allow_private_urls=True).allow_private_urls is True
    assert DecodeLimits().allow_private_urls is False
    for value in (1, 0, "true", None):
        with pytest.raises(ValueError, match=rf"^DecodeLimits\.allow_private_urls must be True or False, got "
                                             rf"{re.escape(repr(value))}\.$"):
            DecodeLimits(allow_private_urls=value)


def test_the_documented_defaults():
    assert DecodeLimits() == DecodeLimits(
        max_input_bytes=256 * 2**20, max_frame_pixels=4096 * 4096, max_duration_seconds=4 * 3600.0,
        max_source_frames=1_000_000, url_timeout_seconds=10.0, allow_private_urls=False, max_download_seconds=120.0,
        max_decoded_pixels=5 * 10**10,
    )


@pytest.mark.parametrize("field", INTEGER_FIELDS)
def test_integer_variables_at_both_ends_are_read_and_one_past_refused_naming_the_variable(monkeypatch, field):
    smallest, largest, _ = INTEGER_FIELDS[field]
    variable = "CLIP2VIDEO_" + field.upper()
    for value in (smallest, largest):
        monkeypatch.setenv(variable, f" {value} ")
        assert getattr(DecodeLimits.from_env(), field) == value
    monkeypatch.setenv(variable, str(largest + 1))
    with pytest.raises(ValueError, match=rf"^Environment variable {variable}='{largest + 1}' must be a positive "
                                         rf"integer at most {largest:,}\.$"):
        DecodeLimits.from_env()
    for text in ("0", "-1", "1.0", "1e3", "0x10", "\u0661", "ten"):
        monkeypatch.setenv(variable, text)
        with pytest.raises(ValueError, match=rf"^Environment variable {variable}={re.escape(repr(text))} must be a "
                                             rf"positive integer at most {largest:,}\.$"):
            DecodeLimits.from_env()


@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_number_variables_at_both_ends_are_read_and_one_past_refused_naming_the_variable(monkeypatch, field):
    smallest, largest, _ = FLOAT_FIELDS[field]
    variable = "CLIP2VIDEO_" + field.upper()
    ends = (smallest, largest) if largest < math.inf else (smallest, 1e300)
    for value in ends:
        monkeypatch.setenv(variable, repr(value))
        assert getattr(DecodeLimits.from_env(), field) == value
    range_text = " at least 0.001" + (" and at most 604800" if largest < math.inf else "")
    past = [repr(below(smallest)), "0", "-1", "inf", "nan", "1e400", "5s", "0x10"]
    if largest < math.inf:
        past.append(repr(above(largest)))
    for text in past:
        monkeypatch.setenv(variable, text)
        with pytest.raises(ValueError, match=rf"^Environment variable {variable}={re.escape(repr(text))} must be a "
                                             rf"finite number{range_text}\.$"):
            DecodeLimits.from_env()


def test_arguments_override_variables_and_blank_or_none_means_the_next_source(monkeypatch):
    monkeypatch.setenv("CLIP2VIDEO_MAX_SOURCE_FRAMES", "7")
    monkeypatch.setenv("CLIP2VIDEO_URL_TIMEOUT_SECONDS", "  ")
    limits = DecodeLimits.from_env(max_source_frames=None)
    assert (limits.max_source_frames, limits.url_timeout_seconds) == (7, 10.0)
    assert DecodeLimits.from_env(max_source_frames=9).max_source_frames == 9
    with pytest.raises(ValueError, match=r"^Unknown decode limits \['max_bytes'\]; known: \['allow_private_urls', "):
        DecodeLimits.from_env(max_bytes=10)


@settings(max_examples=200, deadline=None)
@given(value=st.integers(min_value=0, max_value=10**30), plus=st.booleans(), pad=st.sampled_from(["", " ", "\t"]))
def test_integer_settings_are_read_exactly_within_their_range(value, plus, pad):
    text = pad + ("+" if plus else "") + str(value) + pad
    if 1 <= value <= 2**62:
        assert parse_setting("CLIP2VIDEO_X", text, int, None, minimum=1, maximum=2**62) == value
    else:
        with pytest.raises(ValueError, match=r"^Environment variable CLIP2VIDEO_X='.*' must be a positive integer "
                                             r"at most 4,611,686,018,427,387,904\.$"):
            parse_setting("CLIP2VIDEO_X", text, int, None, minimum=1, maximum=2**62)


@settings(max_examples=200, deadline=None)
@given(value=st.floats(min_value=0.0, max_value=1e7, allow_nan=False))
def test_number_settings_are_read_exactly_within_their_range(value):
    for text in (repr(value), f"{value:e}"):
        expected = float(text)
        if 0.001 <= expected <= WEEK:
            assert parse_setting("CLIP2VIDEO_T", text, float, None, minimum=0.001, maximum=WEEK) == expected
        else:
            with pytest.raises(ValueError, match=r"^Environment variable CLIP2VIDEO_T='.*' must be a finite number at "
                                                 r"least 0\.001 and at most 604800\.$"):
                parse_setting("CLIP2VIDEO_T", text, float, None, minimum=0.001, maximum=WEEK)


def test_settings_without_a_bound_or_with_a_lower_bound_other_than_one_say_so():
    assert parse_setting("V", None, int, 3) == 3
    assert parse_setting("V", "12", int, None, minimum=2) == 12
    with pytest.raises(ValueError, match=r"^Environment variable V='1' must be an integer at least 2\.$"):
        parse_setting("V", "1", int, None, minimum=2)
    with pytest.raises(ValueError, match=r"^Environment variable V='x' must be an integer\.$"):
        parse_setting("V", "x", int, None)
    with pytest.raises(ValueError, match=r"^Environment variable V='9' must be a finite number at most 8\.5\.$"):
        parse_setting("V", "9", float, None, maximum=8.5)


class CountingReader(io.BytesIO):
    """A binary file object that records how much each `read` asked for."""

    def __init__(self, content):
        super().__init__(content)
        self.asked = []

    def read(self, size=-1):
        self.asked.append(size)
        return super().read(size)


def test_an_input_over_the_byte_limit_is_refused_having_read_one_byte_past_it():
    content = bytes(5000)
    reader = CountingReader(content)
    with pytest.raises(ValueError, match=r"^Cannot read video .*: its size in bytes \(at least\) 1001 exceeds the "
                                         r"limit of 1000 \(`max_input_bytes`\); if the input is trusted, raise it with "
                                         r"the processor argument `max_input_bytes=\.\.\.` or the environment variable "
                                         r"CLIP2VIDEO_MAX_INPUT_BYTES\.$"):
        read_video_frames(reader, list, limits=DecodeLimits(max_input_bytes=1000))
    assert reader.asked == [1001]
    # Bytes are all there: their size is exact.
    with pytest.raises(ValueError, match=r"^Cannot read video <bytes of length 5000>: its size in bytes 5000 exceeds "
                                         r"the limit of 1000 \(`max_input_bytes`\)"):
        read_video_frames(content, list, limits=DecodeLimits(max_input_bytes=1000))
    with pytest.raises(ValueError, match=r": its size in bytes 1002 exceeds the limit of 1000 \(`max_input_bytes`\)"):
        read_video_frames(content[:1002], list, limits=DecodeLimits(max_input_bytes=1000))


def test_empty_inputs_are_refused_by_name(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"^Cannot read video .*empty\.mp4: the file is empty\.$"):
        read_video_frames(empty, list)
    for video in (b"", io.BytesIO(b"")):
        with pytest.raises(ValueError, match=r"^Cannot read video .*: it is empty\.$"):
            read_video_frames(video, list)


def select_all(table):
    return list(range(len(table.times)))


@pytest.mark.parametrize("width, height", [(1, 1), (1, 2), (2, 1)])
def test_frames_of_one_pixel_are_frames(tmp_path, width, height):
    path = write_video(tmp_path / "tiny.mov", 2, 5, codec="png", width=width, height=height, pix_fmt="rgb24")
    frames = read_video_frames(path, select_all, limits=DecodeLimits(max_frame_pixels=width * height)).frames
    assert [frame.shape for frame in frames] == [(height, width, 3)] * 2


@pytest.mark.parametrize("width, height", [(2, 40_000), (1, 60_000), (3, 21_845), (40_000, 2), (65, 1_000)])
def test_narrow_and_wide_frames_at_exactly_the_pixel_limit_decode_and_one_pixel_less_is_refused(tmp_path, width, height):
    # FFmpeg measures a frame by its stride-aligned width: a 2-pixel-wide frame counts as 64 wide there.
    pixels = np.arange(width * height * 3, dtype=np.uint8).reshape(height, width, 3)
    path = write_video(tmp_path / "narrow.mov", 1, 1, codec="png", width=width, height=height, frames=[pixels],
                       pix_fmt="rgb24")
    frames = read_video_frames(path, select_all, limits=DecodeLimits(max_frame_pixels=width * height)).frames
    assert len(frames) == 1 and np.array_equal(frames[0], pixels)
    with pytest.raises(ValueError, match=rf"its frame size {width}x{height} in pixels {width * height} exceeds the "
                                         rf"limit of {width * height - 1} \(`max_frame_pixels`\)"):
        read_video_frames(path, select_all, limits=DecodeLimits(max_frame_pixels=width * height - 1))


def test_frame_limits_are_refused_from_the_header_naming_the_file_the_size_and_the_limit(tmp_path):
    path = write_video(tmp_path / "large.mov", 1, 1, codec="png", width=400, height=300,
                       frames=[np.zeros((300, 400), np.uint8)], pix_fmt="gray")
    assert read_video_frames(path, select_all, limits=DecodeLimits(max_frame_pixels=120_000)).frames[0].shape == (
        300, 400, 3)
    with pytest.raises(ValueError, match=rf"^Cannot read video {re.escape(str(path))}: its frame size 400x300 in pixels "
                                         r"120000 exceeds the limit of 119999 \(`max_frame_pixels`\)"):
        read_video_frames(path, select_all, limits=DecodeLimits(max_frame_pixels=119_999))
    # Far over the limit, FFmpeg's own `max_pixels` (the limit with a margin) stops the probe: the size stays unknown.
    with pytest.raises(ValueError, match=rf"^Cannot read video {re.escape(str(path))}: its frames have no size \(0x0\), "
                                         r"or are larger than the limit of 1000 pixels \(`max_frame_pixels`, "
                                         r"environment variable CLIP2VIDEO_MAX_FRAME_PIXELS\)\.$"):
        read_video_frames(path, select_all, limits=DecodeLimits(max_frame_pixels=1000))


def test_a_frame_count_in_the_header_over_the_limit_is_refused_naming_the_file_and_the_count(tmp_path):
    path = write_video(tmp_path / "clip.mp4", 12, 10, width=32, height=32)
    assert len(read_video_frames(path, select_all, limits=DecodeLimits(max_source_frames=12)).frames) == 12
    with pytest.raises(ValueError, match=rf"^Cannot read video {re.escape(str(path))}: its frame count 12 exceeds the "
                                         r"limit of 11 \(`max_source_frames`\)"):
        read_video_frames(path, select_all, limits=DecodeLimits(max_source_frames=11))


def test_a_duration_in_the_header_over_the_limit_is_refused_naming_the_file_and_the_seconds(tmp_path):
    path = write_video(tmp_path / "clip.mp4", 7, 3, width=32, height=32)
    with av.open(str(path)) as container:
        seconds = container.duration / 1_000_000  # the container's duration comes first
    shown = round(seconds, 3)
    assert shown != round(seconds, 2) and 2 < shown < 3  # milliseconds are shown, and only those
    with pytest.raises(ValueError, match=rf"^Cannot read video {re.escape(str(path))}: its duration in seconds "
                                         rf"{shown} exceeds the limit of 1\.5 \(`max_duration_seconds`\)"):
        read_video_frames(path, select_all, limits=DecodeLimits(max_duration_seconds=1.5))


def header_seconds(path):
    """The longest duration a file's headers state: the container's (in microseconds, FFmpeg's `AV_TIME_BASE`) and the
    video stream's (in its time base)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        seconds = [container.duration / 1_000_000]
        if stream.duration:
            seconds.append(float(stream.duration * stream.time_base))
    return max(seconds)


def over_the_limit(path, what, value, field, limit):
    return (rf"^Cannot read video {re.escape(str(path))}: {re.escape(what)} {re.escape(str(value))} exceeds the limit of "
            rf"{re.escape(str(limit))} \(`{field}`\); if the input is trusted, raise it with the processor argument "
            rf"`{field}=\.\.\.` or the environment variable CLIP2VIDEO_{field.upper()}\.$")


@pytest.mark.parametrize("container", ["mkv", "mp4"])  # mkv states only the container's duration, mp4 both
def test_a_video_exactly_as_long_as_the_duration_limit_is_read_and_a_hair_longer_is_refused(tmp_path, container):
    path = write_video(tmp_path / f"clip.{container}", 7, 3, width=32, height=32)
    seconds = header_seconds(path)
    assert 2.3 < seconds < 2.4
    assert len(read_video_frames(path, select_all, limits=DecodeLimits(max_duration_seconds=seconds)).frames) == 7
    with pytest.raises(ValueError, match=over_the_limit(path, "its duration in seconds", round(seconds, 3),
                                                        "max_duration_seconds", below(seconds))):
        read_video_frames(path, select_all, limits=DecodeLimits(max_duration_seconds=below(seconds)))


def test_a_stream_without_a_stated_duration_is_limited_by_the_span_of_its_timestamps(tmp_path):
    # A raw H.264 stream has no container, no duration and no timestamps: its frames are numbered at the stream's
    # rate (10 fps), so 20 frames span 19 / 10 s.
    path = write_video(tmp_path / "clip.h264", 20, 10, width=32, height=32)
    with av.open(path) as container:
        assert container.duration is None and container.streams.video[0].duration is None
    span = 19 / 10
    decoded = read_video_frames(path, select_all, limits=DecodeLimits(max_duration_seconds=span))
    assert len(decoded.frames) == 20 and decoded.timestamps[0] == 0 and decoded.timestamps[-1] == span
    with pytest.raises(ValueError, match=over_the_limit(path, "the span of its frame timestamps in seconds", span,
                                                        "max_duration_seconds", below(span))):
        read_video_frames(path, select_all, limits=DecodeLimits(max_duration_seconds=below(span)))


def test_the_decoding_work_at_exactly_its_limit_is_done_and_one_pixel_less_is_refused(tmp_path):
    # One keyframe and no B-frames: reaching the last frame decodes every frame once, 30 frames of 32x32 pixels.
    path = write_video(tmp_path / "one_keyframe.mp4", 30, 10, width=32, height=32, g="1000", keyint_min="1000",
                       bf="0")
    last = lambda table: [len(table.times) - 1]  # noqa: E731
    work = 30 * 32 * 32
    frames = read_video_frames(path, last, limits=DecodeLimits(max_decoded_pixels=work)).frames
    assert len(frames) == 1 and frames[0].shape == (32, 32, 3)
    what = "the pixels decoded to reach its sampled frames (at least)"
    with pytest.raises(ValueError, match=over_the_limit(path, what, work, "max_decoded_pixels", work - 1)):
        read_video_frames(path, last, limits=DecodeLimits(max_decoded_pixels=work - 1))
    # The first frame costs its own pixels only.
    first = lambda table: [0]  # noqa: E731
    assert len(read_video_frames(path, first, limits=DecodeLimits(max_decoded_pixels=32 * 32)).frames) == 1


def test_a_url_is_fetched_within_the_limits_of_the_call(tmp_path):
    # A URL is read under the same `DecodeLimits` as a file: its bytes, the wait for each byte, the whole download
    # and whether a loopback address may be reached (allow_private_urls).
    video = open(write_video(tmp_path / "clip.mp4", 5, 5, width=32, height=32), "rb").read()
    server = start_server(misbehaving_handler(video))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        url = base + "/video.mp4"
        trusted = dict(allow_private_urls=True)
        assert len(read_video_frames(url, select_all, limits=DecodeLimits(max_input_bytes=len(video), **trusted))
                   .frames) == 5
        with pytest.raises(ValueError, match=rf"^Cannot fetch video {re.escape(url)}: its Content-Length {len(video)} "
                                             rf"exceeds the limit of {len(video) - 1} bytes \(`max_input_bytes`, "
                                             r"environment variable CLIP2VIDEO_MAX_INPUT_BYTES\)\.$"):
            read_video_frames(url, select_all, limits=DecodeLimits(max_input_bytes=len(video) - 1, **trusted))
        with pytest.raises(ValueError, match=rf"^Cannot fetch video {re.escape(url)}: its host resolves to the "
                                             r"non-public address 127\.0\.0\.1"):
            read_video_frames(url, select_all, limits=DecodeLimits())
        started = time.monotonic()
        with pytest.raises(ValueError, match=rf"^Cannot fetch video {re.escape(base)}/never: timed out\.$"):
            read_video_frames(base + "/never", select_all, limits=DecodeLimits(url_timeout_seconds=0.2, **trusted))
        # The body drips a byte every 2 s, within the byte timeout: the download's deadline stops it (a wait for a
        # byte is never longer than the time left, so the socket's timeout may be what notices it first).
        with pytest.raises(ValueError, match=rf"^Cannot fetch video {re.escape(base)}/drip: (timed out|the download "
                                             r"took longer than allowed \(`max_download_seconds`\))\.$"):
            read_video_frames(base + "/drip", select_all,
                              limits=DecodeLimits(url_timeout_seconds=5, max_download_seconds=0.3, **trusted))
        assert time.monotonic() - started < 8  # not the default 10 s per byte and 120 s per download
    finally:
        stop_server(server)
    empty = start_server(misbehaving_handler(b""))
    try:
        url = f"http://127.0.0.1:{empty.server_address[1]}/video.mp4"
        with pytest.raises(ValueError, match=rf"^Cannot read video {re.escape(url)}: it is empty\.$"):
            read_video_frames(url, select_all, limits=DecodeLimits(allow_private_urls=True))
    finally:
        stop_server(empty)


def test_every_refusal_of_something_that_is_not_a_video_file_names_it_and_why(tmp_path):
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    long_name = str(tmp_path / ("v" * 300 + ".mp4"))  # over the file system's 255 bytes a name
    loop = tmp_path / "loop.mp4"
    os.symlink(loop, loop)
    write_only = open(tmp_path / "write_only.mp4", "wb")
    closed = open(tmp_path / "write_only.mp4", "rb")
    closed.close()
    cases = [
        (str(tmp_path / "missing.mp4"), FileNotFoundError, f"Video file not found: {tmp_path / 'missing.mp4'}"),
        ("ftp://example.com/v.mp4", ValueError,
         "Cannot read video ftp://example.com/v.mp4: only http:// and https:// URLs can be fetched."),
        ("FILE:///etc/passwd", ValueError,
         "Cannot read video FILE:///etc/passwd: only http:// and https:// URLs can be fetched."),
        ("clip\0.mp4", ValueError, "Cannot read video clip\0.mp4: a path cannot contain a NUL character."),
        (folder, ValueError, f"Cannot read video {folder}: not a regular file."),
        (long_name, ValueError, f"Cannot read video {long_name[:197]}...: {os.strerror(errno.ENAMETOOLONG)}."),
        (loop, ValueError, f"Cannot read video {loop}: {os.strerror(errno.ELOOP)}."),
        (write_only, ValueError, f"Cannot read video {write_only.name}: read."),
        (closed, ValueError, f"Cannot read video {closed.name}: read of closed file."),
        (io.StringIO("text"), ValueError,
         "Cannot read video <StringIO object>: the file object must be opened in binary mode."),
        (3.5, ValueError,
         "Cannot read video <float object>: expected a path, an http(s) URL, bytes or a binary file object, got float."),
    ]
    try:
        for video, error, message in cases:
            with pytest.raises(error, match=f"^{re.escape(message)}$"):
                read_video_frames(video, select_all)
    finally:
        write_only.close()


def test_the_span_of_timestamps_is_the_last_minus_the_first_and_they_must_be_finite():
    # `_check_time_span` is what every backend calls on the timestamps it reads (decord's are floats of its own); its
    # docstring: "Timestamps must be finite and span at most max_duration_seconds", shown to the millisecond.
    limits = DecodeLimits(max_duration_seconds=2.5)
    assert _check_time_span([1.0, 3.5, 2.0], "v.mp4", limits) is None  # exactly at the limit, in any order
    for times, span in (([5.0, 7.50049, 6.0], 2.5), ([7.6, -1.0], 8.6), ([3.0, 0.0, 2.5004], 3.0)):
        with pytest.raises(ValueError, match=over_the_limit("v.mp4", "the span of its frame timestamps in seconds", span,
                                                            "max_duration_seconds", 2.5)):
            _check_time_span(times, "v.mp4", limits)
    for times in ([0.0, math.nan], [math.nan, 0.0], [math.inf, 0.0], [0.0, 1.0, -math.inf], [math.inf]):
        with pytest.raises(ValueError, match=r"^Cannot read video v\.mp4: its frame timestamps are not finite\.$"):
            _check_time_span(times, "v.mp4", limits)


def test_a_memoryview_is_measured_and_read_in_bytes_whatever_its_item_size(tmp_path):
    content = open(write_video(tmp_path / "clip.mkv", 4, 5, width=32, height=32), "rb").read()
    content += bytes(-len(content) % 8)  # Matroska ignores what follows its last cluster
    expected = read_video_frames(content, select_all).frames
    for items in (np.frombuffer(content, np.uint32), np.frombuffer(content, np.float64)):
        view = memoryview(items)
        assert view.nbytes == len(content) and len(view) < len(content)
        frames = read_video_frames(view, select_all, limits=DecodeLimits(max_input_bytes=len(content))).frames
        assert len(frames) == 4 and all(np.array_equal(a, b) for a, b in zip(frames, expected))
        with pytest.raises(ValueError, match=over_the_limit(f"<memoryview of length {len(content)}>",
                                                            "its size in bytes", len(content), "max_input_bytes",
                                                            len(content) - 2)):
            read_video_frames(view, select_all, limits=DecodeLimits(max_input_bytes=len(content) - 2))
