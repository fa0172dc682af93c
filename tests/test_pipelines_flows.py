"""The Hugging Face flows around the pipelines, in fresh processes that cannot import this repository (as users of a
published folder run them): fine-tune a loaded folder and re-save it with `model.save_pretrained` +
`processor.save_pretrained`, `Pipeline.save_pretrained`, and `push_to_hub` of the model, the processor and a pipeline
to a fake Hub on 127.0.0.1, each folder then serving all its advertised pipelines; `Pipeline.__call__`'s input
conventions (tuples, generators, `KeyDataset`, `datasets.Video()`) with `batch_size=2, num_workers=2` after a decode
in the parent; `VideoClassificationPipeline`'s arguments on the `video-classification` alias. The carrying rule
itself (`CLIP2VideoConfig.save_pretrained`) is also checked in this process."""

import json
import logging
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import pipeline

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.pipelines import HUB_VIDEO_CLASSIFICATION_TASK, RETRIEVAL_TASK, ZERO_SHOT_TASK
from tests.helpers.fake_hub import FakeHub
from tests.helpers.models import tiny_processor
from tests.helpers.processes import environment, run_command, run_isolated
from tests.helpers.videos import write_square_video


LABELS = ["a red square", "a green square", "a blue square"]
CAPTIONS = ["a red square slides", "a blue square slides"]
QUERY = "a red square slides to the right"
TASKS = [ZERO_SHOT_TASK, RETRIEVAL_TASK, HUB_VIDEO_CLASSIFICATION_TASK]
TOKEN = "hf_fake_write_token"
# What a process that cannot import this repository has (the same blocker as `run_isolated`).
BLOCKER = (
    "import sys\nfor _name in ('clip2video', 'modeling_clip2video', 'processing', 'training', 'pipelines', 'apps'):\n"
    "    sys.modules[_name] = None\n"
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_checkpoint, tiny_videos):
    folder = tmp_path_factory.mktemp("pipelines_flows")
    shutil.copytree(tiny_checkpoint, folder / "published")
    (folder / "videos").mkdir()
    for name in ("red", "blue", "green"):
        shutil.copyfile(tiny_videos[name], folder / "videos" / f"{name}.mp4")
    # 0.3 s: padded when batched with the others.
    write_square_video(folder / "videos" / "short.mp4", (200, 200, 200), num_frames=3)
    return folder, [f"videos/{name}.mp4" for name in ("red", "short", "blue", "green")]


def scores_of(folder: Path, model_dir: Path, captions, videos, **processor_kwargs) -> torch.Tensor:
    """`logits_per_text` (captions, videos) of the model saved in `model_dir`, computed here with the model class."""
    model = CLIP2VideoModel.from_pretrained(model_dir).eval()
    inputs = tiny_processor()(
        text=captions, videos=[str(folder / video) for video in videos], return_tensors="pt", **processor_kwargs
    )
    with torch.no_grad():
        return model(**inputs).logits_per_text


def assert_zero_shot(answer, logits_per_video_row, function=lambda logits: logits.softmax(dim=0)):
    expected = function(logits_per_video_row)
    order = sorted(range(len(LABELS)), key=lambda index: (-expected[index].item(), index))
    assert [item["label"] for item in answer] == [LABELS[index] for index in order]
    torch.testing.assert_close(
        torch.tensor([item["score"] for item in answer]), expected[order], rtol=0, atol=1e-5
    )


@pytest.mark.slow
def test_fine_tune_save_push_and_every_saved_folder_serves_its_pipelines(workdir):
    folder, videos = workdir
    with FakeHub(tokens={TOKEN: "tester"}) as hub:
        code = f"""
        import json, os, torch
        from transformers import AutoModel, AutoProcessor, pipeline

        model = AutoModel.from_pretrained("published", trust_remote_code=True)
        processor = AutoProcessor.from_pretrained("published", trust_remote_code=True)
        # A few optimizer steps, as a fine-tune does, then the model and processor saved the usual way.
        torch.manual_seed(0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        inputs = processor(text={CAPTIONS!r}, videos={videos[:1] + videos[2:3]!r}, return_tensors="pt")
        model.train()
        for _ in range(3):
            model(**inputs, return_loss=True).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        model.save_pretrained("finetuned")
        processor.save_pretrained("finetuned")

        # A pipeline loaded from the published folder, saved.
        pipeline({ZERO_SHOT_TASK!r}, model="published", trust_remote_code=True).save_pretrained("saved_by_pipeline")

        # push_to_hub from each object: the model and its processor into one repository, a pipeline into another.
        model.push_to_hub("tester/finetuned")
        processor.push_to_hub("tester/finetuned")
        retriever = pipeline({RETRIEVAL_TASK!r}, model="finetuned", trust_remote_code=True)
        retriever.push_to_hub("tester/pipeline")
        """
        env = environment(
            HF_HOME=str(folder / "hf_home"), HF_HUB_OFFLINE=None, HF_ENDPOINT=hub.endpoint, HF_TOKEN=TOKEN,
            HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=None, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
        )
        result = run_command([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], cwd=folder, env=env,
                             timeout=300, check=False)
        assert result.returncode == 0, result.stderr
    # The pushed repositories, as a download of them would hold them.
    for repo, target in (("tester/finetuned", "pushed_model"), ("tester/pipeline", "pushed_pipeline")):
        for path, content in hub.repos[repo]["main"].items():
            (folder / target / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / target / path).write_bytes(content)

    published_code = (folder / "published" / "pipeline_clip2video.py").read_bytes()
    published_tasks = json.loads((folder / "published" / "config.json").read_text())["custom_pipelines"]
    # The model's own saves keep every task; a saved pipeline lists its own task (transformers' rule), so that
    # `pipeline(model=folder)` infers it.
    expected_tasks = {"finetuned": published_tasks, "pushed_model": published_tasks,
                      "saved_by_pipeline": {ZERO_SHOT_TASK: published_tasks[ZERO_SHOT_TASK]},
                      "pushed_pipeline": {RETRIEVAL_TASK: published_tasks[RETRIEVAL_TASK]}}
    for saved, tasks in expected_tasks.items():
        assert (folder / saved / "pipeline_clip2video.py").read_bytes() == published_code, saved
        assert json.loads((folder / saved / "config.json").read_text())["custom_pipelines"] == tasks, saved

    run_isolated(
        f"""
        import json
        from transformers import pipeline
        results = {{}}
        for folder in ("finetuned", "pushed_model"):
            classify = pipeline({ZERO_SHOT_TASK!r}, model=folder, trust_remote_code=True)
            hub_task = pipeline({HUB_VIDEO_CLASSIFICATION_TASK!r}, model=folder, trust_remote_code=True)
            retrieve = pipeline({RETRIEVAL_TASK!r}, model=folder, trust_remote_code=True)
            assert type(retrieve).__module__.startswith("transformers_modules"), type(retrieve).__module__
            results[folder] = {{
                "zero_shot": classify({videos!r}, candidate_labels={LABELS!r}),
                "video_classification": hub_task({videos!r}, candidate_labels={LABELS!r}),
                "retrieval": retrieve({QUERY!r}, videos={videos!r}),
            }}
        # Saved pipelines reload with their task inferred, or named.
        classify = pipeline(model="saved_by_pipeline", trust_remote_code=True)
        assert classify.task == {ZERO_SHOT_TASK!r}, classify.task
        named = pipeline({ZERO_SHOT_TASK!r}, model="saved_by_pipeline", trust_remote_code=True)
        retrieve = pipeline(model="pushed_pipeline", trust_remote_code=True)
        results["saved_by_pipeline"] = {{
            "zero_shot": classify({videos!r}, candidate_labels={LABELS!r}),
            "video_classification": named({videos!r}, candidate_labels={LABELS!r}),
        }}
        results["pushed_pipeline"] = {{"retrieval": retrieve({QUERY!r}, videos={videos!r})}}
        with open("results.json", "w") as file:
            json.dump(results, file)
        """ + stream_code(videos),  # the input conventions too: one interpreter instead of two
        cwd=folder, timeout=480,
    )
    results = json.loads((folder / "results.json").read_text())
    captions = [f"a video of {label}." for label in LABELS]
    finetuned_logits = scores_of(folder, folder / "finetuned", captions, videos)
    published_logits = scores_of(folder, folder / "published", captions, videos)
    assert (finetuned_logits - published_logits).abs().max() > 1e-3  # the fine-tune changed the scores
    expected_logits = {"finetuned": finetuned_logits, "pushed_model": finetuned_logits,
                       "pushed_pipeline": finetuned_logits, "saved_by_pipeline": published_logits}
    for saved, logits in expected_logits.items():
        for task in ("zero_shot", "video_classification"):
            for video_index, answer in enumerate(results[saved].get(task, [])):
                assert_zero_shot(answer, logits[:, video_index])
        if "retrieval" not in results[saved]:
            continue
        query_logits = scores_of(folder, folder / saved, [QUERY], videos)[0]
        order = sorted(range(len(videos)), key=lambda index: (-query_logits[index].item(), index))
        assert [item["index"] for item in results[saved]["retrieval"]] == order
        torch.testing.assert_close(torch.tensor([item["score"] for item in results[saved]["retrieval"]]),
                                   query_logits[order], rtol=0, atol=1e-4)
    check_stream_results(folder, videos)


def test_save_leaves_out_the_pipelines_whose_code_it_cannot_find(workdir, tmp_path, caplog):
    folder, _ = workdir
    source = tmp_path / "source"
    shutil.copytree(folder / "published", source)
    model = CLIP2VideoModel.from_pretrained(source)
    advertised = dict(model.config.custom_pipelines)

    # Found where the model was loaded from: carried.
    model.save_pretrained(tmp_path / "carried")
    assert json.loads((tmp_path / "carried" / "config.json").read_text())["custom_pipelines"] == advertised
    assert (tmp_path / "carried" / "pipeline_clip2video.py").read_bytes() == (source / "pipeline_clip2video.py").read_bytes()

    # The source folder lost the file: the saved config.json advertises nothing, and says so.
    os.remove(source / "pipeline_clip2video.py")
    with caplog.at_level(logging.WARNING):
        model.save_pretrained(tmp_path / "without")
    assert "custom_pipelines" not in json.loads((tmp_path / "without" / "config.json").read_text())
    assert not (tmp_path / "without" / "pipeline_clip2video.py").exists()
    assert "are not saved in" in caplog.text and ZERO_SHOT_TASK in caplog.text
    assert model.config.custom_pipelines == advertised  # the model's own configuration is left as it was

    # A hostile module name in config.json is never looked up as a path.
    model.config.custom_pipelines = {"x": {"impl": "../../etc/passwd.Class", "pt": ["AutoModel"], "type": "multimodal"}}
    model.save_pretrained(tmp_path / "hostile")
    assert "custom_pipelines" not in json.loads((tmp_path / "hostile" / "config.json").read_text())


def stream_code(videos) -> str:
    """`Pipeline.__call__`'s input conventions, run in the serving interpreter after its decodes (forked DataLoader
    workers after a decode in the parent must not hang: `run_isolated`'s timeout bounds the run)."""
    return f"""
        import json
        import datasets
        from transformers import pipeline
        from transformers.pipelines.pt_utils import KeyDataset

        classify = pipeline({HUB_VIDEO_CLASSIFICATION_TASK!r}, model="published", trust_remote_code=True)
        labels = {LABELS!r}
        results = {{"one": classify({videos[0]!r}, candidate_labels=labels)}}  # a decode in this process first
        results["list"] = classify({videos!r}, candidate_labels=labels)
        results["tuple"] = classify(tuple({videos!r}), candidate_labels=labels)
        dataset = datasets.Dataset.from_dict({{"video": {videos!r}}})
        stream = classify(KeyDataset(dataset, "video"), candidate_labels=labels, batch_size=2, num_workers=2)
        assert not isinstance(stream, list)  # streamed lazily, as transformers streams datasets
        results["key_dataset"] = list(stream)
        generator = (video for video in {videos!r})
        results["generator"] = list(classify(generator, candidate_labels=labels, batch_size=2, num_workers=2))
        decoded = dataset.cast_column("video", datasets.Video())
        results["video_feature"] = list(classify(KeyDataset(decoded, "video"), candidate_labels=labels, batch_size=2))
        # VideoClassificationPipeline's call.
        results["vc_call"] = classify(inputs={videos[0]!r}, candidate_labels=labels, num_frames=2, top_k=2,
                                      function_to_apply="none")
        try:
            classify({videos[0]!r}, candidate_labels=labels, frame_sampling_rate=2)
        except ValueError as error:
            results["frame_sampling_rate"] = str(error)
        retrieve = pipeline({RETRIEVAL_TASK!r}, model="published", trust_remote_code=True)
        results["queries"] = list(retrieve((q for q in [{QUERY!r}, "a blue square"]), videos=tuple({videos!r}),
                                           batch_size=2, num_workers=2))
        with open("stream_results.json", "w") as file:
            json.dump(results, file)
        """


def check_stream_results(folder: Path, videos):
    results = json.loads((folder / "stream_results.json").read_text())
    captions = [f"a video of {label}." for label in LABELS]
    logits = scores_of(folder, folder / "published", captions, videos)
    for key in ("list", "tuple", "key_dataset", "generator", "video_feature"):
        assert len(results[key]) == len(videos), key
        for video_index, answer in enumerate(results[key]):
            assert_zero_shot(answer, logits[:, video_index])
    assert results["one"] == results["list"][0]

    two_frames = scores_of(folder, folder / "published", captions, videos[:1], num_frames=2)[:, 0]
    assert len(results["vc_call"]) == 2
    full = sorted(range(len(LABELS)), key=lambda index: -two_frames[index].item())
    assert [item["label"] for item in results["vc_call"]] == [LABELS[index] for index in full[:2]]
    torch.testing.assert_close(torch.tensor([item["score"] for item in results["vc_call"]]),
                               two_frames[full[:2]], rtol=0, atol=1e-4)
    assert "`frame_sampling_rate`=2 is not supported" in results["frame_sampling_rate"]

    for query, ranked in zip([QUERY, "a blue square"], results["queries"]):
        query_logits = scores_of(folder, folder / "published", [query], videos)[0]
        assert [item["index"] for item in ranked] == sorted(range(len(videos)), key=lambda i: -query_logits[i].item())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c, v: c(v, candidate_labels=LABELS, frame_sampling_rate=1), "`frame_sampling_rate`=1 is not supported"),
        (lambda c, v: c(v, candidate_labels=LABELS, num_frames=0), "`num_frames` must be a positive integer"),
        (lambda c, v: c(v, candidate_labels=LABELS, num_frames=78), r"exceeds the model's frame-position table \(77"),
        (lambda c, v: c(v, candidate_labels=LABELS, function_to_apply="max"), "`function_to_apply` must be one of"),
        (lambda c, v: c(inputs=v, videos=v, candidate_labels=LABELS), "Give the videos once"),
        (lambda c, v: c(candidate_labels=LABELS), "Pass the video"),
        (lambda c, v: c((), candidate_labels=LABELS), "`videos` is an empty list"),
        (lambda c, v: list(c((x for x in [v, 3]), candidate_labels=LABELS)), "`videos` is a int"),
    ],
)
def test_bad_video_classification_arguments_are_named_before_decoding(workdir, call, message):
    folder, videos = workdir
    classifier = pipeline(ZERO_SHOT_TASK, model=CLIP2VideoModel.from_pretrained(folder / "published").eval(),
                          processor=tiny_processor())
    with pytest.raises(ValueError, match=message):
        call(classifier, str(folder / videos[0]))
