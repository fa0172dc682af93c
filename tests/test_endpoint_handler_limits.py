"""The endpoint handler's request checks at their limits, from docs/serving.md: local paths only inside the video
root (a sibling folder whose name extends the root's, `/srv/videos2` for `/srv/videos`, is outside; so is any
symbolic link resolving there), every refusal with the same message; a local file, base64 payload or data URI of
exactly `CLIP2VIDEO_MAX_INPUT_BYTES` bytes is decoded and one byte more is refused with 413 (never read truncated and
reported as corrupt); exactly `CLIP2VIDEO_ENDPOINT_MAX_VIDEOS` videos and `CLIP2VIDEO_ENDPOINT_MAX_TEXTS` texts are
answered and one more is refused. The handler is the published `handler.py` of a tiny checkpoint, imported as the
inference toolkit imports it, and answers real videos."""

import base64
import importlib.util
import os
import shutil
import sys

import pytest

from tests.helpers.videos import write_square_video


REFUSED_PATH = "folder this endpoint serves"


def load_handler_module(checkpoint):
    """`handler.py` of a folder, imported as the toolkit imports it."""
    sys.path.insert(0, str(checkpoint))
    try:
        spec = importlib.util.spec_from_file_location("handler.EndpointHandler", checkpoint / "handler.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(checkpoint))
    return module


@pytest.fixture(scope="module")
def place(tmp_path_factory, tiny_checkpoint):
    """srv/videos (the root) with clip.mp4, sub/clip.mp4 and links; srv/videos2 (a sibling whose name starts with
    the root's) and srv/secret.mp4 outside it."""
    folder = tmp_path_factory.mktemp("endpoint_limits")
    shutil.copytree(tiny_checkpoint, folder / "checkpoint")
    root, sibling = folder / "srv" / "videos", folder / "srv" / "videos2"
    (root / "sub").mkdir(parents=True)
    sibling.mkdir()
    write_square_video(root / "clip.mp4", (230, 20, 20), num_frames=10)
    shutil.copy(root / "clip.mp4", root / "sub" / "clip.mp4")
    shutil.copy(root / "clip.mp4", sibling / "clip.mp4")
    shutil.copy(root / "clip.mp4", folder / "srv" / "secret.mp4")
    (root / "to_sibling.mp4").symlink_to(sibling / "clip.mp4")
    (root / "to_sibling_folder").symlink_to(sibling)
    (root / "to_secret.mp4").symlink_to(folder / "srv" / "secret.mp4")
    (root / "inside_link.mp4").symlink_to(root / "sub" / "clip.mp4")
    (root / "relative_link.mp4").symlink_to("sub/clip.mp4")
    return folder


@pytest.fixture(scope="module")
def module(place):
    return load_handler_module(place / "checkpoint")


def make_handler(module, place, monkeypatch, root=None, **variables):
    for name in ("CLIP2VIDEO_MAX_INPUT_BYTES", "CLIP2VIDEO_ENDPOINT_MAX_VIDEOS", "CLIP2VIDEO_ENDPOINT_MAX_TEXTS",
                 "CLIP2VIDEO_ENDPOINT_VIDEO_ROOT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, str(value))
    root = str(place / "srv" / "videos") if root is None else root
    return module.EndpointHandler(str(place / "checkpoint"), device="cpu", dtype="float32", video_root=root)


def embeddings_of(handler, videos):
    return handler({"inputs": {"videos": videos}, "parameters": {"return_embeddings": True}})["results"]


def test_paths_inside_the_root_are_read_and_every_way_out_is_refused_alike(module, place, monkeypatch):
    handler = make_handler(module, place, monkeypatch)
    inside = ["clip.mp4", "sub/clip.mp4", "inside_link.mp4", "relative_link.mp4", "./clip.mp4", "sub//clip.mp4"]
    outside = [
        "../videos2/clip.mp4",  # the sibling whose name extends the root's, named directly
        "to_sibling.mp4",  # a link into the sibling: a string-prefix check on the resolved path would pass it
        "to_sibling_folder/clip.mp4",  # a link to the sibling folder, then a file in it
        "to_secret.mp4",  # a link to a file next to the root
        str(place / "srv" / "videos2" / "clip.mp4"),  # absolute paths, even where they resolve inside
        str(place / "srv" / "videos" / "clip.mp4"),
        "sub/../../secret.mp4",
        "missing.mp4",
        "sub",  # a folder
    ]
    results = embeddings_of(handler, inside[:4]) + embeddings_of(handler, inside[4:])
    for video, result in zip(inside, results):
        assert set(result) == {"video_embedding"}, (video, result)
    for result in results:
        assert result["video_embedding"] == pytest.approx(results[0]["video_embedding"], abs=1e-5)
    for start in range(0, len(outside), 4):
        chunk = outside[start : start + 4]
        for index, (video, result) in enumerate(zip(chunk, embeddings_of(handler, chunk))):
            assert set(result) == {"error"}, (video, result)
            # Shown as the handler shows values: cut short past 80 characters, which a temporary folder's path reaches.
            expected = f'"videos[{index}]" {module._shown(video)} is neither base64, a data URI, an http(s) URL, nor a video'
            assert result["error"].startswith(expected) and REFUSED_PATH in result["error"], (video, result)


def test_a_root_given_with_a_trailing_slash_or_through_a_link_is_the_same_root(module, place, monkeypatch):
    link = place / "srv_link"
    if not link.exists():
        link.symlink_to(place / "srv")
    for root in (str(place / "srv" / "videos") + os.sep, str(link / "videos")):
        handler = make_handler(module, place, monkeypatch, root=root)
        results = embeddings_of(handler, ["clip.mp4", "to_sibling.mp4", "../videos2/clip.mp4"])
        assert [set(result) for result in results] == [{"video_embedding"}, {"error"}, {"error"}], root


def test_a_local_file_at_the_byte_limit_is_read_and_one_byte_more_is_refused_with_413(module, place, monkeypatch):
    size = (place / "srv" / "videos" / "clip.mp4").stat().st_size
    request = {"inputs": {"video": "clip.mp4"}, "parameters": {"return_embeddings": True}}
    at_limit = make_handler(module, place, monkeypatch, CLIP2VIDEO_MAX_INPUT_BYTES=size)
    assert len(at_limit(request)["video_embedding"]) > 0
    under = make_handler(module, place, monkeypatch, CLIP2VIDEO_MAX_INPUT_BYTES=size - 1)
    with pytest.raises(module.RequestError, match=rf'"video" has {size} bytes, over the limit of {size - 1}') as error:
        under(request)
    assert error.value.status_code == 413 and "corrupt" not in str(error.value)


@pytest.mark.parametrize("form", [pytest.param("base64", marks=pytest.mark.slow), "data_uri"])
def test_a_payload_at_the_byte_limit_is_read_and_one_byte_more_is_refused_with_413(module, place, monkeypatch, form):
    content = (place / "srv" / "videos" / "clip.mp4").read_bytes()
    # Every base64 padding length at the limit (the data URI shares the decoding: one length).
    for size in (len(content), len(content) + 1, len(content) + 2)[: 3 if form == "base64" else 1]:
        padded = content + bytes(size - len(content))  # trailing zeros: MP4 readers ignore them
        encoded = base64.b64encode(padded).decode()
        video = encoded if form == "base64" else "data:video/mp4;base64," + encoded
        request = {"inputs": {"video": video}, "parameters": {"return_embeddings": True}}
        handler = make_handler(module, place, monkeypatch, CLIP2VIDEO_MAX_INPUT_BYTES=size)
        assert len(handler(request)["video_embedding"]) > 0, size
        handler = make_handler(module, place, monkeypatch, CLIP2VIDEO_MAX_INPUT_BYTES=size - 1)
        with pytest.raises(module.RequestError, match=rf"(over the limit of|more than) {size - 1}") as error:
            handler(request)
        assert error.value.status_code == 413, size


def test_exactly_the_maximum_number_of_videos_and_texts_is_answered(module, place, monkeypatch):
    handler = make_handler(
        module, place, monkeypatch, CLIP2VIDEO_ENDPOINT_MAX_VIDEOS=3, CLIP2VIDEO_ENDPOINT_MAX_TEXTS=2
    )
    texts = ["a red square", "a dog"]
    answer = handler({"inputs": {"videos": ["clip.mp4"] * 3, "texts": texts}})
    assert [[item["text"] for item in result["scores"]] for result in answer["results"]] == [texts] * 3
    with pytest.raises(module.RequestError, match=r'"videos" has 4 videos; at most 3 per request') as error:
        handler({"inputs": {"videos": ["clip.mp4"] * 4, "texts": texts}})
    assert error.value.status_code == 413
    with pytest.raises(module.RequestError, match=r'"texts" has 3 entries; at most 2'):
        handler({"inputs": {"videos": ["clip.mp4"], "texts": texts + ["a cat"]}})
    with pytest.raises(module.RequestError, match=r'"candidate_labels" has 3 entries; at most 2'):
        handler({"inputs": {"video": "clip.mp4", "candidate_labels": texts + ["a cat"]}})
    labels = handler({"inputs": {"video": "clip.mp4", "candidate_labels": texts}})["labels"]
    assert sorted(item["label"] for item in labels) == sorted(texts)


def test_the_default_limits_are_the_documented_ones(module, place, monkeypatch):
    handler = make_handler(module, place, monkeypatch)
    assert (handler.max_videos, handler.max_texts) == (8, 256)
    answer = handler({"inputs": {"videos": ["clip.mp4"] * 8}, "parameters": {"return_embeddings": True}})
    assert len(answer["results"]) == 8 and all(set(result) == {"video_embedding"} for result in answer["results"])
    with pytest.raises(module.RequestError, match=r'"videos" has 9 videos; at most 8 per request'):
        handler({"inputs": {"videos": ["clip.mp4"] * 9}, "parameters": {"return_embeddings": True}})


def test_a_text_of_exactly_the_maximum_length_is_scored_and_one_character_more_is_refused(module, place, monkeypatch):
    handler = make_handler(module, place, monkeypatch)
    longest = "a" * module.MAX_TEXT_CHARACTERS
    assert handler({"inputs": {"video": "clip.mp4", "texts": [longest]}})["scores"][0]["text"] == longest
    with pytest.raises(module.RequestError, match=rf'"texts\[0\]" has {module.MAX_TEXT_CHARACTERS + 1} characters'):
        handler({"inputs": {"video": "clip.mp4", "texts": [longest + "a"]}})


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_a_maximum_that_is_not_a_positive_integer_is_refused_by_name(module, place, monkeypatch, text):
    with pytest.raises(ValueError, match=rf"CLIP2VIDEO_ENDPOINT_MAX_VIDEOS={text!r} must be a positive integer"):
        make_handler(module, place, monkeypatch, CLIP2VIDEO_ENDPOINT_MAX_VIDEOS=text)
