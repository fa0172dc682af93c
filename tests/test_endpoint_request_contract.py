"""The endpoint handler's request checks, from its contract (docs/serving.md, the handler's docstrings), fast: each
check is called on a real `EndpointHandler` of a tiny checkpoint without running the model, so a mutation campaign
(mutmut, which traces the package module `clip2video.pipelines.publishing.endpoint.handler`, not the copy a
checkpoint carries) reaches every one of them. `test_endpoint_handler_limits.py` checks the same rules end to end,
through the published `handler.py` answering real videos.

The rules: local paths are read only inside the video root, a path check and not a string prefix (a sibling
`/srv/videos2` of the root `/srv/videos` is outside; so is every link resolving out of it), with one message for
every refusal; a local file, bytes, base64 payload or data URI of exactly `CLIP2VIDEO_MAX_INPUT_BYTES` bytes is taken
whole and one byte more is refused with 413 before it is read or decoded (never read truncated); exactly
`CLIP2VIDEO_ENDPOINT_MAX_VIDEOS` videos, `CLIP2VIDEO_ENDPOINT_MAX_TEXTS` texts and `MAX_TEXT_CHARACTERS` characters
are accepted and one more refused, naming the limit; URL and data-URI schemes and `;base64` are case-insensitive
(RFC 3986, RFC 2397)."""

import base64
import copy
import dataclasses
import os
import string
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip2video.pipelines.publishing.endpoint import handler as endpoint
from tests.helpers.servers import misbehaving_handler, start_server, stop_server
from tests.helpers.videos import write_square_video


SETTINGS = (
    "CLIP2VIDEO_MAX_INPUT_BYTES", "CLIP2VIDEO_ENDPOINT_MAX_VIDEOS", "CLIP2VIDEO_ENDPOINT_MAX_TEXTS",
    "CLIP2VIDEO_ENDPOINT_VIDEO_ROOT", "CLIP2VIDEO_ALLOW_PRIVATE_URLS",
)


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """srv/videos (the root) holding clip.mp4, sub/clip.mp4, links in and out, a folder and a FIFO; srv/videos2 (a
    sibling whose name extends the root's) and srv/secret.mp4 next to it."""
    folder = tmp_path_factory.mktemp("endpoint_request")
    root, sibling = folder / "srv" / "videos", folder / "srv" / "videos2"
    (root / "sub").mkdir(parents=True)
    sibling.mkdir()
    write_square_video(root / "clip.mp4", (230, 20, 20), num_frames=4)
    content = (root / "clip.mp4").read_bytes()
    for path in (root / "sub" / "clip.mp4", sibling / "clip.mp4", folder / "srv" / "secret.mp4"):
        path.write_bytes(content)
    (root / "to_sibling.mp4").symlink_to(sibling / "clip.mp4")
    (root / "to_sibling_folder").symlink_to(sibling)
    (root / "to_secret.mp4").symlink_to(folder / "srv" / "secret.mp4")
    (root / "inside_link.mp4").symlink_to(root / "sub" / "clip.mp4")
    (root / "relative_link.mp4").symlink_to("sub/clip.mp4")
    os.mkfifo(root / "pipe.mp4")
    # A file whose name holds Windows separators around "..": a path naming it is refused as a ".." path.
    (root / "x\\..\\clip.mp4").write_bytes(content)
    return folder


def build(checkpoint, root=None, **variables):
    """A real handler of the checkpoint, built with only the given deployment variables set."""
    with pytest.MonkeyPatch.context() as patch:
        for name in SETTINGS:
            patch.delenv(name, raising=False)
        for name, value in variables.items():
            patch.setenv(name, str(value))
        return endpoint.EndpointHandler(str(checkpoint), device="cpu", dtype="float32", video_root=root)


@pytest.fixture(scope="module")
def handler(tiny_checkpoint, place):
    return build(tiny_checkpoint, root=str(place / "srv" / "videos"))


def limited(handler, max_videos=None, max_texts=None, **limits):
    """The same handler deployed with other limits (what `EndpointHandler.__init__` reads from the variables):
    building one per limit would load the model again each time."""
    other = copy.copy(handler)
    other.limits = dataclasses.replace(handler.limits, **limits)
    other.max_videos = handler.max_videos if max_videos is None else max_videos
    other.max_texts = handler.max_texts if max_texts is None else max_texts
    return other


def refusal(video):
    # The handler shows a value cut short past 80 characters (`_shown`), which a temporary folder's path can reach.
    return f"{endpoint._shown(video)} is neither base64, a data URI, an http(s) URL, nor a video file in the folder this endpoint serves."


# -- deployment settings --------------------------------------------------------------------------------------------


def test_the_default_limits_and_the_root_are_the_documented_ones(handler, place, tmp_path):
    # The first test of the module's handler (mutmut reaches `__init__` only here): what it wired up is used too, the
    # pipeline's own request checks, the processor's limits and its safe fetcher.
    assert (handler.max_videos, handler.max_texts) == (8, 256)
    assert handler.video_root == os.path.realpath(place / "srv" / "videos")
    assert handler.limits.max_input_bytes == 256 * 2**20
    assert handler._parse({"inputs": "a.mp4", "parameters": {"candidate_labels": ["x"]}})["template"] == "a video of {}."
    with pytest.raises(endpoint.RequestError, match=r'^"video": .*http://127\.0\.0\.1:9/clip\.mp4'):
        handler._video_file("http://127.0.0.1:9/clip.mp4", "video", str(tmp_path), 0)
    assert not handler.model.training and handler.processor.video_processor.num_frames >= 1


@pytest.mark.parametrize("videos, texts", [(1, 1), (1024, 65536)])
def test_the_smallest_and_largest_counts_a_deployment_may_set_are_accepted(tiny_checkpoint, videos, texts):
    handler = build(tiny_checkpoint, CLIP2VIDEO_ENDPOINT_MAX_VIDEOS=videos, CLIP2VIDEO_ENDPOINT_MAX_TEXTS=texts,
                    CLIP2VIDEO_MAX_INPUT_BYTES=12345)
    assert (handler.max_videos, handler.max_texts, handler.video_root) == (videos, texts, None)
    assert handler.limits.max_input_bytes == 12345  # the processor's limits, read from the environment


@pytest.mark.parametrize(
    "variable, text, maximum",
    [("CLIP2VIDEO_ENDPOINT_MAX_VIDEOS", "1025", "1,024"), ("CLIP2VIDEO_ENDPOINT_MAX_VIDEOS", "0", "1,024"),
     ("CLIP2VIDEO_ENDPOINT_MAX_TEXTS", "65537", "65,536"), ("CLIP2VIDEO_ENDPOINT_MAX_TEXTS", "0", "65,536")],
)
def test_a_count_past_its_range_is_refused_naming_the_variable(tiny_checkpoint, variable, text, maximum):
    with pytest.raises(ValueError, match=rf"^Environment variable {variable}='{text}' must be a positive integer at "
                                         rf"most {maximum}\.$"):
        build(tiny_checkpoint, **{variable: text})


def test_the_device_and_dtype_arguments_win_over_the_environment_and_reach_the_model(tiny_checkpoint):
    # The meta device: the arguments, not the environment (which names a device this test never uses), decide where
    # the model is put and in which dtype its vision tower's linear layers run.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIP2VIDEO_ENDPOINT_DEVICE", "cpu")
        patch.setenv("CLIP2VIDEO_ENDPOINT_DTYPE", "float16")
        handler = endpoint.EndpointHandler(str(tiny_checkpoint), device="meta", dtype="bfloat16")
    assert (handler.device, handler.dtype) == (torch.device("meta"), torch.bfloat16)
    dtypes = {parameter.dtype for parameter in handler.model.parameters()}
    assert {parameter.device.type for parameter in handler.model.parameters()} == {"meta"}
    assert torch.bfloat16 in dtypes, dtypes


def test_a_video_root_that_is_not_a_folder_is_refused_and_a_linked_root_is_resolved(tiny_checkpoint, place):
    with pytest.raises(ValueError, match=r"CLIP2VIDEO_ENDPOINT_VIDEO_ROOT='.*secret\.mp4' is not a folder"):
        build(tiny_checkpoint, root=str(place / "srv" / "secret.mp4"))
    link = place / "srv_link"
    if not link.exists():
        link.symlink_to(place / "srv")
    handler = build(tiny_checkpoint, CLIP2VIDEO_ENDPOINT_VIDEO_ROOT=f"  {link / 'videos'}{os.sep} ")
    assert handler.video_root == os.path.realpath(place / "srv" / "videos")
    assert handler._local_file("clip.mp4", "video") == (place / "srv" / "videos" / "clip.mp4").read_bytes()
    # Built here with only the root set (a mutation run that keeps the module's handler built by the original code
    # reaches `__init__` only in tests that build one): the documented default counts, and the pipeline's checks and
    # the safe fetcher wired up as the first test checks them on the module's handler.
    assert (handler.max_videos, handler.max_texts) == (8, 256)
    assert handler._parse({"inputs": "a.mp4", "parameters": {"candidate_labels": ["x"]}})["template"] == "a video of {}."
    with pytest.raises(endpoint.RequestError, match=r'^"video": .*http://127\.0\.0\.1:9/clip\.mp4'):
        handler._video_file("http://127.0.0.1:9/clip.mp4", "video", str(place), 0)


# -- local paths ----------------------------------------------------------------------------------------------------


def test_paths_inside_the_root_are_read_whole(handler, place):
    content = (place / "srv" / "videos" / "clip.mp4").read_bytes()
    for video in ("clip.mp4", "sub/clip.mp4", "./clip.mp4", "sub//clip.mp4", "inside_link.mp4", "relative_link.mp4"):
        assert handler._local_file(video, "video") == content, video


@pytest.mark.parametrize(
    "video",
    [
        "../videos2/clip.mp4",  # the sibling whose name extends the root's
        "to_sibling.mp4",  # a link into the sibling: its resolved path starts with the root's text
        "to_sibling_folder/clip.mp4",
        "to_secret.mp4",
        "sub/../../secret.mp4",
        "sub\\..\\..\\secret.mp4",
        "sub/../clip.mp4",  # no ".." even where it stays inside (docs/serving.md)
        "x\\..\\clip.mp4",
        "..",
        "missing.mp4",
        "sub",  # a folder
        "pipe.mp4",  # a FIFO: refused without blocking on it
        "clip.mp4\0.txt",
    ],
)
def test_every_way_out_of_the_root_is_refused_with_one_message(handler, video):
    with pytest.raises(endpoint.RequestError, match=f'^"videos\\[2\\]" {_escaped(refusal(video))}$') as error:
        handler._local_file(video, "videos[2]")
    assert error.value.status_code == 400


FLIPPER = """
import os, sys
root, outside = sys.argv[1], sys.argv[2]
target, link, regular = (os.path.join(root, name) for name in ("race.mp4", ".link", ".regular"))
open(os.path.join(root, ".started"), "w").close()
while True:
    os.symlink(outside, link)
    os.replace(link, target)
    with open(regular, "wb") as file:
        file.write(b"inside")
    os.replace(regular, target)
"""


def test_a_file_swapped_for_a_link_out_of_the_root_while_it_is_checked_is_never_read(handler, tmp_path):
    # docs/serving.md: resolved with links followed, then opened with O_NOFOLLOW. Another process swaps the file for a
    # link out of the root, over and over: whenever the swap falls between the check and the open, only O_NOFOLLOW
    # keeps the outside file from being read.
    import subprocess
    import sys

    root, outside = tmp_path / "root", tmp_path / "outside.mp4"
    root.mkdir()
    outside.write_bytes(b"outside")
    (root / "race.mp4").write_bytes(b"inside")
    served = copy.copy(handler)
    served.video_root = os.path.realpath(root)
    flipper = subprocess.Popen([sys.executable, "-c", FLIPPER, str(root), str(outside)])
    try:
        deadline = time.monotonic() + 30
        while not (root / ".started").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        outcomes = []
        for _ in range(3000):
            try:
                outcomes.append(served._local_file("race.mp4", "video"))
            except endpoint.RequestError as error:  # the one refusal, even when the swap lands inside realpath
                assert str(error) == f'"video" {refusal("race.mp4")}', error
                outcomes.append(None)
    finally:
        flipper.kill()
        flipper.wait()
    assert b"outside" not in outcomes
    assert b"inside" in outcomes and None in outcomes  # both states were seen: the swap ran while the file was read


def test_absolute_paths_are_refused_even_inside_the_root(handler, place):
    for video in (str(place / "srv" / "videos" / "clip.mp4"), str(place / "srv" / "videos2" / "clip.mp4")):
        with pytest.raises(endpoint.RequestError, match=_escaped(refusal(video))):
            handler._local_file(video, "video")


def test_without_a_root_no_local_path_is_read_and_the_message_says_so(tiny_checkpoint, handler):
    without = copy.copy(handler)
    without.video_root = None
    message = refusal("clip.mp4")[:-1] + " (local paths are disabled: CLIP2VIDEO_ENDPOINT_VIDEO_ROOT)."
    with pytest.raises(endpoint.RequestError, match=f'^"video" {_escaped(message)}$'):
        without._video_file("clip.mp4", "video", "unused", 0)


def test_a_local_file_at_the_byte_limit_is_taken_whole_and_one_byte_more_is_refused_with_413(handler, place, tmp_path):
    content = (place / "srv" / "videos" / "clip.mp4").read_bytes()
    size = len(content)
    written = limited(handler, max_input_bytes=size)._video_file("clip.mp4", "video", str(tmp_path), 3)
    assert written == str(tmp_path / "video-3") and (tmp_path / "video-3").read_bytes() == content
    with pytest.raises(endpoint.RequestError, match=rf'^"video" has {size} bytes, over the limit of {size - 1} '
                                                    r"\(CLIP2VIDEO_MAX_INPUT_BYTES\)\.$") as error:
        limited(handler, max_input_bytes=size - 1)._video_file("clip.mp4", "video", str(tmp_path), 4)
    assert error.value.status_code == 413 and not (tmp_path / "video-4").exists()


def test_of_a_local_file_far_over_the_byte_limit_at_most_one_byte_past_the_limit_is_read(handler, place, tmp_path):
    # The bound on what is read, not only the refusal: a file of many times the limit is never read whole, so the
    # refusal counts the bytes read, one past the limit (a 256 MiB limit must not read a 10 GB file into memory).
    size = (place / "srv" / "videos" / "clip.mp4").stat().st_size
    for limit in (1, 100, size - 2):
        with pytest.raises(endpoint.RequestError, match=rf'^"video" has {limit + 1} bytes, over the limit of {limit} '
                                                        r"\(CLIP2VIDEO_MAX_INPUT_BYTES\)\.$") as error:
            limited(handler, max_input_bytes=limit)._video_file("clip.mp4", "video", str(tmp_path), 0)
        assert error.value.status_code == 413


# -- bytes, base64 and data URIs ------------------------------------------------------------------------------------


def test_bytes_at_the_byte_limit_are_taken_and_one_more_is_refused_with_413(handler, tmp_path):
    for video in (b"\x00" * 10, bytearray(b"\x01" * 10)):
        path = limited(handler, max_input_bytes=10)._video_file(video, "videos[1]", str(tmp_path), 1)
        assert open(path, "rb").read() == bytes(video)
        with pytest.raises(endpoint.RequestError, match=r'^"videos\[1\]" has 10 bytes, over the limit of 9 '
                                                        r"\(CLIP2VIDEO_MAX_INPUT_BYTES\)\.$") as error:
            limited(handler, max_input_bytes=9)._video_file(video, "videos[1]", str(tmp_path), 1)
        assert error.value.status_code == 413
    with pytest.raises(endpoint.RequestError, match=r'^"video" is empty\.$'):
        handler._video_file(b"", "video", str(tmp_path), 0)


@pytest.mark.parametrize("video", [12, None, 1.5, ["clip.mp4"], {"path": "clip.mp4"}])
def test_a_video_that_is_not_a_string_or_bytes_is_refused_naming_its_type(handler, tmp_path, video):
    message = (f'"video" must be a string (base64, a data URI, an http(s) URL or an allowed path), got '
               f"{type(video).__name__}.")
    with pytest.raises(endpoint.RequestError, match=f"^{_escaped(message)}$"):
        handler._video_file(video, "video", str(tmp_path), 0)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(2, 400), scheme=st.sampled_from(["", "data:video/mp4;base64,", "DATA:Video/MP4;BASE64,"]),
       line_breaks=st.sampled_from([None, b"\n", b"\r\n"]))
def test_base64_of_exactly_the_byte_limit_is_decoded_and_one_byte_more_is_refused_with_413(
    handler, tmp_path_factory, size, scheme, line_breaks
):
    content = bytes(range(256)) * 2
    encoded = base64.b64encode(content[:size])
    if line_breaks:  # MIME wraps at 76 characters, PEM at 64: both allowed
        width = 76 if line_breaks == b"\n" else 64
        encoded = line_breaks.join(encoded[i : i + width] for i in range(0, len(encoded), width)) + line_breaks
    video = scheme + encoded.decode()
    folder = str(tmp_path_factory.mktemp("base64"))
    path = limited(handler, max_input_bytes=size)._video_file(video, "video", folder, 0)
    assert open(path, "rb").read() == content[:size]
    with pytest.raises(endpoint.RequestError, match=rf'^"video" (decodes to more than|has {size} bytes, over the '
                                                    rf"limit of) {size - 1}( bytes)? \(CLIP2VIDEO_MAX_INPUT_BYTES\)\.$") as error:
        limited(handler, max_input_bytes=size - 1)._video_file(video, "video", folder, 1)
    assert error.value.status_code == 413


def test_base64_is_refused_from_its_length_before_decoding_line_breaks_included(handler, tmp_path):
    # 300 bytes take 4 * 101 base64 characters at most, and line breaks 2 more per 64 of them: 418 characters in all.
    small = limited(handler, max_input_bytes=300)
    assert 4 * (300 // 3 + 1) + 2 * (404 // 64 + 1) == 418
    for scheme in ("", "data:video/mp4;base64,"):
        at_bound = scheme + "QUJD" + "\n" * 414
        assert open(small._video_file(at_bound, "video", str(tmp_path), 0), "rb").read() == b"ABC"
        with pytest.raises(endpoint.RequestError, match=r'^"video" decodes to more than 300 bytes '
                                                        r"\(CLIP2VIDEO_MAX_INPUT_BYTES\)\.$") as error:
            small._video_file(at_bound + "\n", "video", str(tmp_path), 0)
        assert error.value.status_code == 413
    # Without line breaks, 404 characters is the most (at most 303 bytes decoded, then refused by their count).
    with pytest.raises(endpoint.RequestError, match=r'^"video" has 303 bytes, over the limit of 300 '
                                                    r"\(CLIP2VIDEO_MAX_INPUT_BYTES\)\.$") as error:
        small._video_file(base64.b64encode(bytes(303)).decode(), "video", str(tmp_path), 0)
    with pytest.raises(endpoint.RequestError, match=r'^"video" decodes to more than 300 bytes') as error:
        small._video_file(base64.b64encode(bytes(306)).decode(), "video", str(tmp_path), 0)


def test_the_length_bound_of_base64_holds_for_every_byte_limit(handler, tmp_path):
    # docs/serving.md: 4 characters per 3 bytes (a partial group padded to 4) and up to 2 line-break characters per
    # 64 of those, checked before the whitespace is removed; then the characters left must fit the 4 per 3.
    for limit in range(2, 200):
        small = limited(handler, max_input_bytes=limit)
        characters = 4 * -(-(limit + 1) // 3)  # room for limit + 1 bytes, rounded to whole groups of 4
        bound = characters + 2 * (characters // 64 + 1)
        padded = "QQ==" + " " * (bound - 4)
        assert open(small._video_file(padded, "video", str(tmp_path), 0), "rb").read() == b"A", limit
        # One character too many either way: a data URI (a bare string that long is not taken for base64).
        for too_long in (padded + " ", "data:video/mp4;base64," + "Q" * (characters + 1)):
            with pytest.raises(endpoint.RequestError, match=rf'^"video" decodes to more than {limit} bytes ') as error:
                small._video_file(too_long, "video", str(tmp_path), 0)
            assert error.value.status_code == 413, limit


@pytest.mark.parametrize(
    "video, message",
    [
        ("data:video/mp4,AAAA", 'is a data URI without ";base64,": only base64 data URIs are accepted.'),
        ("data:video/mp4;base64", 'is a data URI without ";base64,": only base64 data URIs are accepted.'),
        ("data:;base64x,AAAA", 'is a data URI without ";base64,": only base64 data URIs are accepted.'),
        ("data:video/mp4;base64,QUJD!", "is not valid base64."),
        ("data:video/mp4;base64,QUJDé", "is not valid base64."),
        ("data:video/mp4;base64,QUJ", "is not valid base64."),
        ("data:video/mp4;base64,QUJD,QUJD", "is not valid base64."),  # the data starts at the first comma
        ("Data:video/mp4;base64,", "is empty."),
    ],
)
def test_data_uris_other_than_base64_are_refused_by_name(handler, tmp_path, video, message):
    with pytest.raises(endpoint.RequestError, match=f'^"video" {_escaped(message)}$') as error:
        handler._video_file(video, "video", str(tmp_path), 0)
    assert error.value.status_code == 400


@pytest.mark.parametrize("scheme", ["http://", "https://", "HTTP://", "Https://", "hTTpS://"])
def test_urls_in_any_case_go_to_the_safe_fetcher(handler, tmp_path, scheme):
    # The fetcher refuses the loopback address (no private URLs by default): the video was taken as a URL.
    with pytest.raises(endpoint.RequestError, match=rf'^"video": .*{_escaped(scheme)}127\.0\.0\.1:9/clip\.mp4') as error:
        handler._video_file(f"{scheme}127.0.0.1:9/clip.mp4", "video", str(tmp_path), 0)
    assert "loopback" in str(error.value) or "private" in str(error.value) or "public" in str(error.value)


def test_a_url_is_fetched_with_the_deployment_limits(handler, place, serve_folder, tmp_path):
    server = serve_folder(place / "srv" / "videos")
    content = (place / "srv" / "videos" / "clip.mp4").read_bytes()
    url = server.url.replace("http://", "HTTP://") + "/clip.mp4"
    allowed = limited(handler, max_input_bytes=len(content), allow_private_urls=True)
    assert open(allowed._video_file(url, "video", str(tmp_path), 0), "rb").read() == content
    with pytest.raises(endpoint.RequestError, match=rf'^"video": .*{len(content) - 1}'):
        limited(handler, max_input_bytes=len(content) - 1, allow_private_urls=True)._video_file(
            url, "video", str(tmp_path), 0
        )


@pytest.mark.parametrize("path, limits", [("/never", {"url_timeout_seconds": 0.3, "max_download_seconds": 60.0}),
                                           ("/drip", {"url_timeout_seconds": 30.0, "max_download_seconds": 0.5})])
def test_a_url_is_fetched_within_the_deployment_timeouts(handler, tmp_path, path, limits):
    server = start_server(misbehaving_handler(b""))
    try:
        started = time.monotonic()
        with pytest.raises(endpoint.RequestError, match=rf'^"video": .*{_escaped(server.url + path)}'):
            limited(handler, allow_private_urls=True, **limits)._video_file(server.url + path, "video", str(tmp_path), 0)
        assert time.monotonic() - started < 10  # the other timeout (30 s, 60 s) was not the one that ended it
    finally:
        stop_server(server)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + "+/=\n\r\t .:_-é", max_size=14))
def test_what_is_taken_for_base64_is_exactly_the_alphabet_in_groups_of_four(text):
    compact = "".join(character for character in text if character not in " \t\r\n")
    body = compact.rstrip("=")
    expected = (
        text.isascii() and 0 < len(compact) and len(compact) % 4 == 0 and len(compact) - len(body) <= 2
        and all(character in string.ascii_letters + string.digits + "+/" for character in body)
    )
    assert endpoint._looks_like_base64(text) == expected, text


def test_base64_forms_at_the_edges_of_padding():
    for text in ("QUJD", "QUI=", "QQ==", "QXXX", "QU JD", "QUJD\r\nQUJD"):
        assert endpoint._looks_like_base64(text), text
    for text in ("", "====", "Q===", "QUJ", "QUJDQ", "clip.mp4", "QUJ\u00e9", " \n"):
        assert not endpoint._looks_like_base64(text), text


def test_values_are_shown_whole_up_to_80_characters_and_cut_after():
    assert endpoint._shown("a" * 78) == "'" + "a" * 78 + "'"  # 80 characters with the quotes
    assert endpoint._shown("a" * 79) == "'" + "a" * 76 + "..."
    assert len(endpoint._shown(list(range(100)))) == 80


# -- the request's form ---------------------------------------------------------------------------------------------


def test_exactly_the_maximum_number_of_videos_is_accepted_and_one_more_is_refused_with_413(handler):
    three = limited(handler, max_videos=3)
    request = three._parse({"inputs": {"videos": ["a.mp4"] * 3}, "parameters": {"return_embeddings": True}})
    assert request["videos"] == ["a.mp4"] * 3 and request["single"] is False
    assert three._parse({"inputs": ["a.mp4"] * 3, "parameters": {"candidate_labels": ["x"]}})["hub_task"] is True
    for data in ({"inputs": {"videos": ["a.mp4"] * 4}, "parameters": {"return_embeddings": True}},
                 {"inputs": ["a.mp4"] * 4, "parameters": {"candidate_labels": ["x"]}}):
        with pytest.raises(endpoint.RequestError, match=r'^"videos" has 4 videos; at most 3 per request '
                                                        r"\(CLIP2VIDEO_ENDPOINT_MAX_VIDEOS\)\.$") as error:
            three._parse(data)
        assert error.value.status_code == 413


def test_the_default_maximum_of_videos_is_eight(handler):
    assert len(handler._parse({"inputs": {"videos": ["a.mp4"] * 8}, "parameters": {"return_embeddings": True}})["videos"]) == 8
    with pytest.raises(endpoint.RequestError, match=r'"videos" has 9 videos; at most 8 per request'):
        handler._parse({"inputs": {"videos": ["a.mp4"] * 9}, "parameters": {"return_embeddings": True}})


@pytest.mark.parametrize("key", ["candidate_labels", "texts"])
def test_exactly_the_maximum_number_of_texts_and_characters_is_accepted_and_one_more_is_refused(handler, key):
    two = limited(handler, max_texts=2)
    longest = "a" * endpoint.MAX_TEXT_CHARACTERS
    assert two._parse({"inputs": {"video": "a.mp4", key: ["x", longest]}})[key.split("_")[-1]] == ["x", longest]
    with pytest.raises(endpoint.RequestError, match=rf'^"{key}" has 3 entries; at most 2 '
                                                    r"\(CLIP2VIDEO_ENDPOINT_MAX_TEXTS\)\.$"):
        two._parse({"inputs": {"video": "a.mp4", key: ["x", "y", "z"]}})
    with pytest.raises(endpoint.RequestError, match=rf'^"{key}\[1\]" has 1001 characters; at most 1000 \(the model '
                                                    r"reads 32 tokens\)\.$"):
        two._parse({"inputs": {"video": "a.mp4", key: ["x", longest + "a"]}})
    assert endpoint.MAX_TEXT_CHARACTERS == 1000


@pytest.mark.parametrize("value, shown", [([], r"\[\]"), ("cat", "'cat'"), (None, None)])
def test_texts_must_be_a_non_empty_list(handler, value, shown):
    data = {"inputs": {"video": "a.mp4", "texts": value}}
    if value is None:  # null is "not given": embeddings must then be asked for
        with pytest.raises(endpoint.RequestError, match=r'^Give "candidate_labels" or "texts" to score'):
            handler._parse(data)
        return
    with pytest.raises(endpoint.RequestError, match=rf'^"texts" must be a non-empty list of strings, got {shown}\.$'):
        handler._parse(data)


@pytest.mark.parametrize("item", ["", "  \n", 3, None])
def test_every_text_must_be_a_non_empty_string(handler, item):
    with pytest.raises(endpoint.RequestError, match=rf'^"candidate_labels\[1\]" must be a non-empty string, got '
                                                    rf"{_escaped(repr(item))}\.$"):
        handler._parse({"inputs": {"video": "a.mp4"}, "parameters": {"candidate_labels": ["x", item]}})


PARAMETERS = ("['candidate_labels', 'frame_sampling_rate', 'function_to_apply', 'hypothesis_template', 'num_frames', "
              "'return_embeddings', 'texts', 'top_k']")


@pytest.mark.parametrize(
    "data, message",
    [
        ([], 'The request must be a JSON object with "inputs" (and optionally "parameters").'),
        ({"parameters": {}}, 'The request must be a JSON object with "inputs" (and optionally "parameters").'),
        ({"inputs": "a.mp4", "extra": 1, "parameters": {}},
         """Unknown request keys ['extra']; expected "inputs" and "parameters"."""),
        ({"inputs": "a.mp4", "parameters": []}, '"parameters" must be a JSON object.'),
        ({"inputs": "a.mp4", "parameters": {"topk": 1, "texts": ["x"]}},
         f"Unknown parameters ['topk']; expected some of {PARAMETERS}."),
        ({"inputs": {"video": "a.mp4", "text": ["x"]}},
         "Unknown inputs ['text']; expected some of ['candidate_labels', 'texts', 'video', 'videos']."),
        ({"inputs": {"texts": ["x"]}}, '"inputs" must have either "video" or "videos".'),
        ({"inputs": {"video": "a", "videos": ["a"], "texts": ["x"]}}, '"inputs" must have either "video" or "videos".'),
        ({"inputs": {"video": "a", "texts": ["x"]}, "parameters": {"texts": ["y"]}},
         '"texts" is given both in "inputs" and in "parameters".'),
        ({"inputs": {"video": "a", "candidate_labels": ["x"]}, "parameters": {"candidate_labels": ["y"]}},
         '"candidate_labels" is given both in "inputs" and in "parameters".'),
        ({"inputs": {"videos": [], "texts": ["x"]}}, '"videos" must be a non-empty list, got [].'),
        ({"inputs": {"videos": "a.mp4", "texts": ["x"]}}, """"videos" must be a non-empty list, got 'a.mp4'."""),
        ({"inputs": [], "parameters": {"texts": ["x"]}}, '"videos" must be a non-empty list, got [].'),
        ({"inputs": {"video": "a", "texts": ["x"], "candidate_labels": ["y"]}},
         'Give either "candidate_labels" or "texts", not both.'),
        ({"inputs": {"video": "a"}, "parameters": {"return_embeddings": "true"}},
         """"return_embeddings" must be true or false, got 'true'."""),
        ({"inputs": {"video": "a"}, "parameters": {"return_embeddings": 1}},
         '"return_embeddings" must be true or false, got 1.'),
        ({"inputs": {"video": "a"}, "parameters": {"return_embeddings": False}},
         'Give "candidate_labels" or "texts" to score, or set "return_embeddings": true.'),
        ({"inputs": {"video": "a"}}, 'Give "candidate_labels" or "texts" to score, or set "return_embeddings": true.'),
        ({"inputs": {"video": "a", "texts": ["x"]}, "parameters": {"top_k": 1}},
         '"top_k" applies to "candidate_labels" only.'),
        ({"inputs": {"video": "a", "texts": ["x"]}, "parameters": {"hypothesis_template": "{}"}},
         '"hypothesis_template" applies to "candidate_labels" only.'),
        ({"inputs": {"video": "a"}, "parameters": {"return_embeddings": True, "function_to_apply": "softmax"}},
         '"function_to_apply" applies to "candidate_labels" only.'),
        ({"inputs": {"video": "a", "candidate_labels": ["x"]}, "parameters": {"function_to_apply": "tanh"}},
         """"function_to_apply" must be one of ['softmax', 'sigmoid', 'none'], got 'tanh'."""),
        ({"inputs": {"video": "a", "candidate_labels": ["x"]}, "parameters": {"function_to_apply": "Softmax"}},
         """"function_to_apply" must be one of ['softmax', 'sigmoid', 'none'], got 'Softmax'."""),
        ({"inputs": {"video": "a", "candidate_labels": ["x"]}, "parameters": {"frame_sampling_rate": 2}},
         '"frame_sampling_rate"=2 is not supported: CLIP2Video samples the paper\'s frames'),
        ({"inputs": {"video": "a", "candidate_labels": ["x"]}, "parameters": {"num_frames": 0}},
         '"num_frames" must be a positive integer, got 0.'),
        ({"inputs": {"video": "a", "texts": ["x"]}, "parameters": {"num_frames": 0}},
         '"num_frames" must be a positive integer, got 0.'),
        ({"inputs": {"video": "a", "candidate_labels": ["x"]}, "parameters": {"top_k": 0}},
         '"top_k" must be a positive integer (or None for all), got 0.'),
        ({"inputs": {"video": "a", "candidate_labels": ["x"]}, "parameters": {"hypothesis_template": "a {} {}"}},
         """"hypothesis_template" must be a string with exactly one '{}' where the label goes, got 'a {} {}'."""),
        ({"inputs": {"video": "a", "candidate_labels": "x"}}, """"candidate_labels" must be a non-empty list of strings, got 'x'."""),
    ],
)
def test_malformed_requests_are_refused_saying_what_is_wrong(handler, data, message):
    # The whole message, or its start where it goes on to explain (the frame sampling rate).
    pattern = "^" + _escaped(message) + ("" if message.endswith("frames") else "$")
    with pytest.raises(endpoint.RequestError, match=pattern) as error:
        handler._parse(data)
    assert error.value.status_code == 400


def test_a_well_formed_request_is_read_as_given(handler):
    frames = handler.model.config.max_frame_positions
    request = handler._parse({
        "inputs": {"video": "a.mp4", "candidate_labels": ["cooking", "dancing"]},
        "parameters": {"hypothesis_template": "a clip of {}", "top_k": 1, "function_to_apply": "sigmoid",
                       "num_frames": frames, "return_embeddings": True},
    })
    assert request == {
        "single": True, "videos": ["a.mp4"], "labels": ["cooking", "dancing"], "texts": None,
        "template": "a clip of {}", "top_k": 1, "return_embeddings": True, "num_frames": frames,
        "function_to_apply": "sigmoid", "hub_task": False,
    }
    request = handler._parse({"inputs": {"videos": ["a.mp4"], "texts": ["x"]}, "parameters": None})
    assert (request["single"], request["texts"], request["labels"], request["template"], request["top_k"]) == (
        False, ["x"], None, None, None
    )
    assert (request["function_to_apply"], request["num_frames"], request["return_embeddings"]) == ("softmax", None, False)
    request = handler._parse({"inputs": "a.mp4", "parameters": {"candidate_labels": ["x"], "function_to_apply": "none"}})
    assert (request["single"], request["videos"], request["hub_task"], request["template"]) == (
        True, ["a.mp4"], True, "a video of {}."
    )
    request = handler._parse({"inputs": "a.mp4", "parameters": {"texts": ["x"]}})
    assert request["hub_task"] is False
    request = handler._parse({"inputs": ["a.mp4"], "parameters": {"candidate_labels": ["x"], "return_embeddings": True}})
    assert (request["single"], request["hub_task"]) == (False, False)
    with pytest.raises(endpoint.RequestError, match=rf"^\"num_frames\"={frames + 1} exceeds the model's frame-position"):
        handler._parse({"inputs": "a.mp4", "parameters": {"candidate_labels": ["x"], "num_frames": frames + 1}})


def _escaped(text: str) -> str:
    import re

    return re.escape(text)
