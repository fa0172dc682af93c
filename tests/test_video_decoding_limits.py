"""`processing/video_decoding_clip2video.py`'s `DecodeLimits` at each limit, from their contract ("checked before the
work they bound starts", "one out of range is refused, naming it"): a real video exactly at a limit decodes, the same
video with the limit one unit lower is refused with a message naming the limit, for every input form (path, bytes,
file object) and for containers with and without a frame count in their header. Boolean `CLIP2VIDEO_*` values are
read in any case, as documented (1/0, true/false, yes/no, on/off)."""

import io

import av
import pytest

from clip2video.processing.video_decoding_clip2video import DecodeLimits, read_video_frames
from tests.helpers.videos import write_video


WIDTH, HEIGHT, FRAMES, FPS = 64, 48, 20, 10


def select_all(table):
    return list(range(len(table.times)))


@pytest.fixture(scope="module", params=["mp4", "mkv"])
def video(request, tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("limits") / f"clip.{request.param}", FRAMES, FPS, width=WIDTH,
                       height=HEIGHT)


def read(video, **limits):
    return read_video_frames(video, select_all, limits=DecodeLimits(**limits))


def refused(field):
    return rf"exceeds the limit of [0-9.]+ \(`{field}`\).*CLIP2VIDEO_{field.upper()}"


@pytest.mark.parametrize("form", ["path", "bytes", "bytearray", "file"])
def test_input_bytes_at_the_limit_are_read_and_one_byte_more_is_refused(video, form):
    content = open(video, "rb").read()
    size = len(content)

    def given():
        return {"path": video, "bytes": content, "bytearray": bytearray(content), "file": io.BytesIO(content)}[form]

    assert len(read(given(), max_input_bytes=size).frames) == FRAMES
    over = rf"its size in bytes( \(at least\))? {size} exceeds the limit of {size - 1} \(`max_input_bytes`\)"
    with pytest.raises(ValueError, match=over + ".*CLIP2VIDEO_MAX_INPUT_BYTES"):
        read(given(), max_input_bytes=size - 1)


def test_frame_pixels_at_the_limit_are_read_and_one_pixel_less_is_refused(video):
    assert read(video, max_frame_pixels=WIDTH * HEIGHT).frames[0].shape == (HEIGHT, WIDTH, 3)
    with pytest.raises(ValueError, match=rf"frame size {WIDTH}x{HEIGHT} in pixels {WIDTH * HEIGHT} " + refused(
            "max_frame_pixels")):
        read(video, max_frame_pixels=WIDTH * HEIGHT - 1)


def test_exactly_max_source_frames_are_read_and_one_frame_less_is_refused(video):
    # MP4 counts frames in its header (refused before demuxing); Matroska does not (refused while indexing packets).
    assert len(read(video, max_source_frames=FRAMES).frames) == FRAMES
    with pytest.raises(ValueError, match=r"its frame count.* " + refused("max_source_frames")):
        read(video, max_source_frames=FRAMES - 1)


def test_a_duration_at_the_limit_is_read_and_a_millisecond_less_is_refused(video):
    with av.open(video) as container:
        stream = container.streams.video[0]
        seconds = [container.duration / 1_000_000 if container.duration else 0.0]
        if stream.duration:
            seconds.append(float(stream.duration * stream.time_base))
    longest = max(seconds + [(FRAMES - 1) / FPS])
    assert 1.9 <= longest <= 2.1
    assert len(read(video, max_duration_seconds=longest).frames) == FRAMES
    with pytest.raises(ValueError, match=r"(duration|span of its frame timestamps) in seconds .*" + refused(
            "max_duration_seconds")):
        read(video, max_duration_seconds=longest - 0.001)


def test_decoded_pixels_at_the_limit_are_read_and_one_pixel_less_is_refused(video):
    # Every frame decoded once (one pass over the stream): the budget is exactly frames * width * height.
    budget = FRAMES * WIDTH * HEIGHT
    assert len(read(video, max_decoded_pixels=budget).frames) == FRAMES
    with pytest.raises(ValueError, match=r"pixels decoded to reach its sampled frames.* " + refused(
            "max_decoded_pixels")):
        read(video, max_decoded_pixels=budget - 1)


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "True", "yes", "YES", "On", "on", " true "])
def test_boolean_variables_read_true_in_any_case(monkeypatch, text):
    monkeypatch.setenv("CLIP2VIDEO_ALLOW_PRIVATE_URLS", text)
    assert DecodeLimits.from_env().allow_private_urls is True


@pytest.mark.parametrize("text", ["0", "false", "FALSE", "False", "no", "NO", "Off", "off"])
def test_boolean_variables_read_false_in_any_case(monkeypatch, text):
    monkeypatch.setenv("CLIP2VIDEO_ALLOW_PRIVATE_URLS", text)
    assert DecodeLimits.from_env(allow_private_urls=None).allow_private_urls is False


@pytest.mark.parametrize("text", ["2", "truth", "enable", "y", "-1"])
def test_other_boolean_texts_are_refused_by_name(monkeypatch, text):
    monkeypatch.setenv("CLIP2VIDEO_ALLOW_PRIVATE_URLS", text)
    with pytest.raises(ValueError, match=rf"CLIP2VIDEO_ALLOW_PRIVATE_URLS={text!r} must be a boolean"):
        DecodeLimits.from_env()


def test_integer_variables_at_their_smallest_value_are_accepted_and_zero_refused(monkeypatch):
    monkeypatch.setenv("CLIP2VIDEO_MAX_INPUT_BYTES", "1")
    assert DecodeLimits.from_env().max_input_bytes == 1
    monkeypatch.setenv("CLIP2VIDEO_MAX_INPUT_BYTES", "0")
    with pytest.raises(ValueError, match=r"CLIP2VIDEO_MAX_INPUT_BYTES='0' must be a positive integer"):
        DecodeLimits.from_env()
    with pytest.raises(ValueError, match=r"DecodeLimits.max_source_frames must be a positive integer, got 0"):
        DecodeLimits(max_source_frames=0)
    assert DecodeLimits(max_source_frames=1).max_source_frames == 1
