"""The two custom pipelines: loaded from a saved folder in a fresh process (as anyone would, via `custom_pipelines`
and remote code), their scores against the model's own logits, batching, and bad input."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from transformers import pipeline

from clip2video import pipelines  # noqa: F401  registers the tasks in this process
from clip2video.pipelines import RETRIEVAL_TASK, ZERO_SHOT_TASK
from tests.helpers.models import tiny_processor
from tests.helpers.processes import run_isolated
from tests.helpers.videos import write_square_video

from clip2video.modeling_clip2video import CLIP2VideoModel


LABELS = ["a red square", "a green square", "a blue square"]
TEMPLATE = "a video of {}."
QUERY = "a red square slides to the right"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_checkpoint, tiny_videos):
    folder = tmp_path_factory.mktemp("pipelines")
    shutil.copytree(tiny_checkpoint, folder / "checkpoint")
    shutil.copytree(Path(tiny_videos["red"]).parent, folder / "videos")
    videos = dict(tiny_videos)
    # 0.3 s: fewer frames than the others, so it is padded when batched with them.
    videos["short"] = write_square_video(folder / "videos" / "short.mp4", (200, 200, 200), num_frames=3)
    return folder, {name: f"videos/{name}.mp4" for name in videos}


@pytest.fixture(scope="module")
def model_and_processor(workdir):
    folder, _ = workdir
    return CLIP2VideoModel.from_pretrained(folder / "checkpoint").eval(), tiny_processor()


def model_logits(model, processor, folder, captions, videos):
    inputs = processor(text=captions, videos=[str(folder / video) for video in videos], return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits_per_text


def test_checkpoint_lists_both_pipelines(workdir):
    folder, _ = workdir
    config = json.loads((folder / "checkpoint" / "config.json").read_text())
    assert config["custom_pipelines"] == {
        ZERO_SHOT_TASK: {
            "impl": "pipeline_clip2video.CLIP2VideoZeroShotVideoClassificationPipeline", "pt": ["AutoModel"],
            "type": "multimodal",
        },
        RETRIEVAL_TASK: {
            "impl": "pipeline_clip2video.CLIP2VideoTextToVideoRetrievalPipeline", "pt": ["AutoModel"],
            "type": "multimodal",
        },
        # The task name of the Hub's snippet for `pipeline_tag: video-classification`.
        "video-classification": {
            "impl": "pipeline_clip2video.CLIP2VideoZeroShotVideoClassificationPipeline", "pt": ["AutoModel"],
            "type": "multimodal",
        },
    }
    assert (folder / "checkpoint" / "pipeline_clip2video.py").is_file()


@pytest.mark.slow
def test_pipelines_from_a_saved_folder_in_a_fresh_process(workdir, model_and_processor):
    folder, videos = workdir
    order = ["red", "short", "green", "blue"]
    paths = [videos[name] for name in order]
    # A folder written by the pipeline itself holds its task only, and the processor.
    model, processor = model_and_processor
    pipeline(RETRIEVAL_TASK, model=model, processor=processor).save_pretrained(folder / "saved_by_pipeline")
    saved = json.loads((folder / "saved_by_pipeline" / "config.json").read_text())["custom_pipelines"]
    assert list(saved) == [RETRIEVAL_TASK]
    run_isolated(
        f"""
        import json
        from transformers import pipeline
        classifier = pipeline({ZERO_SHOT_TASK!r}, model="checkpoint", trust_remote_code=True)
        retriever = pipeline({RETRIEVAL_TASK!r}, model="checkpoint", trust_remote_code=True)
        assert type(classifier).__module__.startswith("transformers_modules"), type(classifier).__module__
        assert type(classifier.processor).__module__.startswith("transformers_modules")
        results = {{
            "one": classifier({paths[0]!r}, candidate_labels={LABELS!r}),
            "batched": classifier({paths!r}, candidate_labels={LABELS!r}, batch_size=3),
            "unbatched": classifier({paths!r}, candidate_labels={LABELS!r}),
            "top_k": classifier({paths[0]!r}, candidate_labels=", ".join({LABELS!r}), top_k=2),
            "ranked": retriever({QUERY!r}, videos={paths!r}),
            "ranked_batched": retriever({QUERY!r}, videos={paths!r}, batch_size=3, top_k=3),
            "ranked_by_saved_pipeline": pipeline(model="saved_by_pipeline", trust_remote_code=True)(
                {QUERY!r}, videos={paths!r}
            ),
            # The Hub's snippet for the cards' `pipeline_tag: video-classification`.
            "hub_snippet": pipeline("video-classification", model="checkpoint", trust_remote_code=True)(
                {paths[0]!r}, candidate_labels={LABELS!r}
            ),
        }}
        with open("results.json", "w") as file:
            json.dump(results, file)
        """,
        cwd=folder,
    )
    results = json.loads((folder / "results.json").read_text())
    model, processor = model_and_processor
    logits = model_logits(model, processor, folder, [TEMPLATE.format(label) for label in LABELS], paths)

    # Zero-shot: softmax over the labels of logits_per_video, sorted; batching changes nothing (padded video too).
    for key in ("batched", "unbatched"):
        assert len(results[key]) == len(paths)
        for video_index, answer in enumerate(results[key]):
            probabilities = logits[:, video_index].softmax(dim=0)
            expected = sorted(zip(LABELS, probabilities.tolist()), key=lambda pair: -pair[1])
            assert [item["label"] for item in answer] == [label for label, _ in expected]
            torch.testing.assert_close(
                torch.tensor([item["score"] for item in answer]), torch.tensor([p for _, p in expected]),
                rtol=0, atol=1e-5,
            )
    assert results["one"] == results["unbatched"][0] == results["hub_snippet"]
    assert [item["label"] for item in results["top_k"]] == [item["label"] for item in results["one"][:2]]

    # Retrieval: logits_per_text of the query, highest first, with the sampled timestamps.
    query_logits = model_logits(model, processor, folder, [QUERY], paths)[0]
    expected_order = sorted(range(len(paths)), key=lambda index: -query_logits[index].item())
    assert [item["index"] for item in results["ranked"]] == expected_order
    assert [item["video"] for item in results["ranked"]] == [paths[index] for index in expected_order]
    torch.testing.assert_close(
        torch.tensor([item["score"] for item in results["ranked"]]), query_logits[expected_order], rtol=0, atol=1e-4
    )
    assert results["ranked_by_saved_pipeline"] == results["ranked"]
    assert [item["index"] for item in results["ranked_batched"]] == expected_order[:3]
    torch.testing.assert_close(
        torch.tensor([item["score"] for item in results["ranked_batched"]]), query_logits[expected_order[:3]],
        rtol=0, atol=1e-4,
    )
    timestamps = processor(videos=[str(folder / path) for path in paths], return_timestamps=True)["video_timestamps"]
    for item in results["ranked"]:
        row = timestamps[item["index"]]
        assert item["timestamps"] == pytest.approx(row[~row.isnan()].tolist())
    # The short video was padded in the batches: its scores above equal the unpadded computation.
    assert len(next(item for item in results["ranked"] if item["video"] == videos["short"])["timestamps"]) == 1


@pytest.fixture(scope="module")
def loaded_pipelines(model_and_processor):
    model, processor = model_and_processor
    classifier = pipeline(ZERO_SHOT_TASK, model=model, processor=processor)
    retriever = pipeline(RETRIEVAL_TASK, model=model, processor=processor)
    return classifier, retriever


def test_frames_as_input(loaded_pipelines, model_and_processor):
    classifier, retriever = loaded_pipelines
    model, processor = model_and_processor
    frames = torch.zeros(6, 40, 40, 3, dtype=torch.uint8)
    frames[:, 10:30, 5:25, 0] = 255
    answer = classifier(frames, candidate_labels=LABELS)
    inputs = processor(text=[TEMPLATE.format(label) for label in LABELS], videos=[frames], return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits_per_video[0].softmax(dim=0)
    assert {item["label"]: item["score"] for item in answer} == pytest.approx(dict(zip(LABELS, expected.tolist())))
    ranked = retriever(QUERY, videos=[frames])
    assert ranked[0]["video"] is None and ranked[0]["index"] == 0 and ranked[0]["timestamps"] == []


def test_processor_errors_reach_the_caller_unchanged(loaded_pipelines, tmp_path):
    classifier, retriever = loaded_pipelines
    processor = tiny_processor()
    missing = str(tmp_path / "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    shutil.copyfile(write_square_video(tmp_path / "good.mp4"), corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:300])
    for video, error_type in ((missing, FileNotFoundError), (str(corrupt), ValueError)):
        with pytest.raises(error_type, match=re.escape(video)) as from_processor:
            processor(videos=[video])
        with pytest.raises(error_type, match=re.escape(video)) as from_classifier:
            classifier(video, candidate_labels=LABELS)
        with pytest.raises(error_type, match=re.escape(video)) as from_retriever:
            retriever(QUERY, videos=[write_square_video(tmp_path / "fine.mp4"), video], batch_size=2)
        assert str(from_classifier.value) == str(from_retriever.value) == str(from_processor.value)
        assert video in str(from_processor.value)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c, r, v: c(v, candidate_labels=[]), "candidate_labels"),
        (lambda c, r, v: c(v), "candidate_labels"),
        (lambda c, r, v: c(v, candidate_labels=LABELS, hypothesis_template="a video of"), "hypothesis_template"),
        (lambda c, r, v: r(QUERY), "videos=[...]"),
        (lambda c, r, v: r(QUERY, videos=v), "videos=[...]"),
        (lambda c, r, v: r("", videos=[v]), "non-empty string"),
        (lambda c, r, v: r(QUERY, videos=torch.zeros(4, 8, 8, 3, dtype=torch.uint8)), "videos=[...]"),
    ],
)
def test_bad_arguments_are_named(loaded_pipelines, tmp_path, call, message):
    classifier, retriever = loaded_pipelines
    video = write_square_video(tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")):
        call(classifier, retriever, video)
