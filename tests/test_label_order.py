"""Ranked answers whose request order is the reverse of the right order, so that returning them as given (or sorted
the wrong way) cannot pass by chance: zero-shot labels from the pipeline and from the endpoint handler (best first),
the handler's per-text scores (in the order given), and text-to-video retrieval (best video first). The folder is
loaded as users load it, with remote code in a fresh process; the order is computed here from the model's logits."""

import base64
import json
import shutil

import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from tests.helpers.models import tiny_processor
from tests.helpers.processes import run_isolated
from tests.helpers.videos import write_square_videos

LABELS = ["cooking", "a red square", "playing guitar", "a green field", "snow", "traffic at night"]
QUERY = "a red square slides to the right"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_checkpoints):
    folder = tmp_path_factory.mktemp("label_order")
    shutil.copytree(tiny_checkpoints(seed=1), folder / "checkpoint")
    videos = write_square_videos(folder, num_frames=12)
    return folder, videos


def strictly_ordered(scores: list[float]) -> list[int]:
    """Indices by decreasing score; the scores must be well apart so the order is not a matter of rounding."""
    order = sorted(range(len(scores)), key=lambda index: -scores[index])
    gaps = [scores[a] - scores[b] for a, b in zip(order, order[1:])]
    assert min(gaps) > 1e-4, scores
    return order


@pytest.mark.slow
def test_rankings_are_sorted_whatever_the_request_order(workdir):
    folder, videos = workdir
    video = videos["red"]
    model = CLIP2VideoModel.from_pretrained(folder / "checkpoint").eval()
    processor = tiny_processor()
    with torch.no_grad():
        label_inputs = processor(text=[f"a video of {label}." for label in LABELS], videos=[video], return_tensors="pt")
        label_outputs = model(**label_inputs)
        probabilities = label_outputs.logits_per_video[0].softmax(dim=0).tolist()
        names = list(videos)
        query_inputs = processor(text=[QUERY], videos=[videos[name] for name in names], return_tensors="pt")
        video_scores = model(**query_inputs).logits_per_text[0].tolist()
    # Requests list the labels and the videos worst first.
    label_order = strictly_ordered(probabilities)
    labels = [LABELS[index] for index in reversed(label_order)]
    expected_labels = [LABELS[index] for index in label_order]
    video_order = strictly_ordered(video_scores)
    request_videos = [videos[names[index]] for index in reversed(video_order)]
    expected_videos = [videos[names[index]] for index in video_order]
    texts = [f"a video of {label}." for label in labels]  # handler texts: answered in the order given
    expected_text_scores = {
        f"a video of {LABELS[index]}.": score
        for index, score in enumerate(label_outputs.logits_per_text[:, 0].tolist())
    }

    encoded = base64.b64encode(open(video, "rb").read()).decode()
    request = {"labels": labels, "texts": texts, "videos": request_videos, "query": QUERY, "video": video,
               "encoded": encoded}
    (folder / "request.json").write_text(json.dumps(request))
    run_isolated(
        """
        import importlib.util, json, os, sys
        from transformers import pipeline

        request = json.load(open("request.json"))
        classifier = pipeline("zero-shot-video-classification", model="checkpoint", trust_remote_code=True)
        retriever = pipeline("text-to-video-retrieval", model="checkpoint", trust_remote_code=True)
        sys.path.insert(0, "checkpoint")
        spec = importlib.util.spec_from_file_location("handler", os.path.join("checkpoint", "handler.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        handler = module.EndpointHandler("checkpoint")
        answers = {
            "pipeline": classifier(request["video"], candidate_labels=request["labels"]),
            "retrieval": retriever(request["query"], videos=request["videos"]),
            "handler_labels": handler({"inputs": {"video": request["encoded"], "candidate_labels": request["labels"]}}),
            "handler_texts": handler({"inputs": {"video": request["encoded"], "texts": request["texts"]}}),
        }
        json.dump(answers, open("answers.json", "w"))
        """,
        cwd=folder,
    )
    answers = json.loads((folder / "answers.json").read_text())
    assert labels != expected_labels
    assert [item["label"] for item in answers["pipeline"]] == expected_labels
    assert [item["score"] for item in answers["pipeline"]] == pytest.approx(sorted(probabilities, reverse=True), abs=1e-5)
    assert [item["label"] for item in answers["handler_labels"]["labels"]] == expected_labels
    assert [item["score"] for item in answers["handler_labels"]["labels"]] == pytest.approx(
        sorted(probabilities, reverse=True), abs=1e-5
    )
    assert [item["text"] for item in answers["handler_texts"]["scores"]] == texts
    assert [item["score"] for item in answers["handler_texts"]["scores"]] == pytest.approx(
        [expected_text_scores[text] for text in texts], abs=1e-4
    )
    assert request_videos != expected_videos
    assert [hit["video"] for hit in answers["retrieval"]] == expected_videos
    assert [hit["score"] for hit in answers["retrieval"]] == pytest.approx(sorted(video_scores, reverse=True), abs=1e-4)
