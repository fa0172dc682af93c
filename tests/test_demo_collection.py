"""The demo's collection without a browser: the example folder is indexed once with the project's video search and
loaded on the next start (nothing embedded again), rebuilt for another model; search, uploads and labels give the
model's own numbers; file names reach the page escaped."""

import shutil
from pathlib import Path

import pytest
import torch

from clip2video.apps.demo.app import gallery_html, hits_html, parse_args, progress_html, status_html
from clip2video.apps.demo.collection import CollectionVideo, FolderState, Hit, VideoCollection
from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.pipelines.pipeline_clip2video import DEFAULT_HYPOTHESIS_TEMPLATE
from tests.helpers.models import tiny_processor
from tests.helpers.videos import write_square_video


QUERY = "a red square slides to the right"


def open_collection(checkpoint: Path, videos: Path, index_root: Path) -> VideoCollection:
    model = CLIP2VideoModel.from_pretrained(checkpoint).eval()
    collection = VideoCollection(model, tiny_processor(), {"examples": str(videos)}, index_root, batch_size=2)
    collection.index_all()  # what start() runs in its thread
    return collection


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_checkpoints, tiny_videos):
    folder = tmp_path_factory.mktemp("collection")
    shutil.copytree(Path(tiny_videos["red"]).parent, folder / "videos")  # a folder of its own: a file is added
    videos = {name: str(folder / "videos" / Path(path).name) for name, path in tiny_videos.items()}
    (folder / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really")
    checkpoint = tiny_checkpoints(with_apps=False)
    collection = open_collection(checkpoint, folder / "videos", folder / "indexes")
    return {"folder": folder, "videos": videos, "checkpoint": checkpoint, "collection": collection}


def test_indexed_once_then_loaded_and_rebuilt_for_another_model(setup, tiny_checkpoints):
    [state] = setup["collection"].folders
    assert state.state == "ready" and (state.done, state.total) == (4, 5)
    assert "broken.mp4" in state.message  # the unreadable file is named on the page, the rest is searchable
    keys = [video.key for video in setup["collection"].videos()]
    assert keys == [f"examples/{name}.mp4" for name in sorted(setup["videos"])]

    # A second start loads the index: only the unreadable file is tried again, no video is embedded again.
    again = open_collection(setup["checkpoint"], setup["folder"] / "videos", setup["folder"] / "indexes")
    [state] = again.folders
    assert state.state == "ready" and (state.done, state.total) == (0, 1) and len(again) == 4

    # Another model: the index is this demo's cache, so it is built again (and its fingerprint checked).
    other = tiny_checkpoints(seed=1, with_apps=False)
    rebuilt = open_collection(other, setup["folder"] / "videos", setup["folder"] / "indexes")
    [state] = rebuilt.folders
    assert state.state == "ready" and (state.done, state.total) == (4, 5)
    rebuilt.folders[0].index.check_model(rebuilt.model)


def test_search_uploads_and_labels_give_the_models_numbers(setup, tmp_path):
    collection = setup["collection"]
    names = sorted(setup["videos"])
    paths = [setup["videos"][name] for name in names]
    model, processor = collection.model, tiny_processor()
    with torch.no_grad():
        inputs = processor(text=[QUERY], videos=paths, return_tensors="pt", return_timestamps=True)
        times = inputs.pop("video_timestamps")
        output = model(**inputs)
        text = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        moment = text.global_embeds[0]
        best = (torch.nn.functional.normalize(output.frame_embeds, dim=-1) @ moment).masked_fill(
            inputs["video_mask"] == 0, -float("inf")
        ).argmax(dim=1)
    scores = output.logits_per_text[0]
    order = torch.argsort(scores, descending=True, stable=True).tolist()

    hits = collection.search(QUERY, [], top_k=3)
    assert [hit.video.name for hit in hits] == [f"{names[i]}.mp4" for i in order[:3]]
    assert [hit.score for hit in hits] == pytest.approx(scores[order[:3]].tolist(), abs=1e-4)
    assert [hit.moment_seconds for hit in hits] == pytest.approx(times[order[:3], best[order[:3]]].tolist(), abs=1e-6)

    # An upload (a copy of one example) is scored exactly like the indexed file and ranked among them.
    copy = tmp_path / "upload.mp4"
    shutil.copy(paths[order[-1]], copy)
    upload = collection.embed_upload(str(copy), "upload/0/upload.mp4", "upload.mp4")
    hits = collection.search(QUERY, [upload], top_k=10)
    assert len(hits) == 5
    by_name = {hit.video.name: hit for hit in hits}
    assert by_name["upload.mp4"].score == pytest.approx(by_name[f"{names[order[-1]]}.mp4"].score, abs=1e-5)
    assert by_name["upload.mp4"].moment_seconds == by_name[f"{names[order[-1]]}.mp4"].moment_seconds

    # Labels: the zero-shot pipeline's captions and softmax over the labels of logits_per_video.
    labels = ["red", "blue", "a green thing"]
    keys = ["examples/green.mp4", "upload/0/upload.mp4", "examples/red.mp4"]
    results = collection.classify(keys, [upload], labels)
    videos = [setup["videos"]["green"], str(copy), setup["videos"]["red"]]
    with torch.no_grad():
        captions = [DEFAULT_HYPOTHESIS_TEMPLATE.replace("{}", label) for label in labels]
        labelled = processor(text=captions, videos=videos, return_tensors="pt")
        probabilities = model(**labelled).logits_per_video.softmax(-1)
    assert [result.video.key for result in results] == keys
    for result, row in zip(results, probabilities.tolist()):
        assert [p for _, p in result.labels] == sorted((p for _, p in result.labels), reverse=True)
        assert dict(result.labels) == pytest.approx(dict(zip(labels, row)), abs=1e-5)
    with pytest.raises(ValueError, match="Unknown video"):
        collection.classify(["examples/nothing.mp4"], [], labels)


def test_names_reach_the_page_escaped(tmp_path):
    hostile = tmp_path / '<img src=x onerror="alert(1)">.mp4'
    write_square_video(hostile)
    video = CollectionVideo("upload/0/" + hostile.name, hostile.name, str(hostile))
    for page in (gallery_html([video], [video.key]), hits_html([Hit(video, 1.5, 0.4)])):
        assert "<img src=x" not in page and 'onerror="' not in page
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.mp4" in page
        assert "data:image/jpeg;base64," in page  # the file's own picture
    empty = VideoCollection.__new__(VideoCollection)
    empty.folders = []
    status = status_html(empty, [], message="<b onclick=x>", error="<i>")
    assert "<b onclick" not in status and "&lt;b onclick=x&gt;" in status and "&lt;i&gt;" in status
    assert 'class="tile selected"' in gallery_html([video], [video.key])
    assert 'class="tile selected"' not in gallery_html([video], [])


def test_progress_and_arguments(tmp_path, capsys):
    collection = VideoCollection.__new__(VideoCollection)
    collection.folders = [FolderState("examples", tmp_path, tmp_path, state="indexing", done=3, total=8)]
    assert 'aria-valuenow="3"' in progress_html(collection) and "3 of 8 videos" in progress_html(collection)
    collection.folders[0].state, collection.folders[0].message = "failed", "no <space> left"
    assert "Could not index examples: no &lt;space&gt; left" in progress_html(collection)
    with pytest.raises(SystemExit, match="^2$"):  # argparse's usage error; the message goes to stderr
        parse_args(["--examples_dir", str(tmp_path / "missing")])
    assert f"--examples_dir {tmp_path / 'missing'} is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="^2$"):
        parse_args(["--top_k", "0"])
    assert "--top_k must be between 1 and 1000" in capsys.readouterr().err


def test_two_folders_are_one_collection(setup, tmp_path):
    # --examples_dir and --videos_dir: two indexes, one ranking by the model's scores.
    first, second = tmp_path / "examples", tmp_path / "videos"
    for folder, names in ((first, ["red", "green"]), (second, ["blue", "yellow"])):
        folder.mkdir()
        for name in names:
            shutil.copy(setup["videos"][name], folder / f"{name}.mp4")
    model = CLIP2VideoModel.from_pretrained(setup["checkpoint"]).eval()
    collection = VideoCollection(
        model, tiny_processor(), {"examples": str(first), "videos": str(second)}, tmp_path / "indexes"
    )
    collection.index_all()
    assert [folder.state for folder in collection.folders] == ["ready", "ready"] and len(collection) == 4
    hits = collection.search(QUERY, [], top_k=4)
    alone = {hit.video.name: hit.score for hit in setup["collection"].search(QUERY, [], top_k=4)}
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    folder_of = {"red.mp4": "examples", "green.mp4": "examples", "blue.mp4": "videos", "yellow.mp4": "videos"}
    assert {hit.video.key: hit.score for hit in hits} == pytest.approx(
        {f"{folder_of[name]}/{name}": score for name, score in alone.items()}, abs=1e-6
    )
