"""The Inference Endpoints handler, called as the service calls it: `EndpointHandler(path)` imported from a saved
folder in a fresh process, then requests with real encoded video bytes (base64, data URI, raw bytes), a path and a
URL, and malformed requests, which must get a clear error payload while the handler keeps serving."""

import base64
import functools
import http.server
import json
import threading

import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from tiny_checkpoint import run_without_repo, save_tiny_checkpoint, tiny_processor, write_video


LABELS = ["cooking", "a red square", "playing guitar"]
TEXTS = ["a red square moves right", "a dog runs on the beach"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("endpoint")
    save_tiny_checkpoint(folder / "checkpoint")
    write_video(folder / "clip.mp4", (230, 20, 20), num_frames=30)
    (folder / "corrupt.mp4").write_bytes((folder / "clip.mp4").read_bytes()[:400])
    (folder / "notes.txt").write_text("not a video")
    return folder


@pytest.fixture(scope="module")
def video_url(workdir):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(workdir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
    server.shutdown()


def test_handler_answers_and_errors_as_the_service_sees_them(workdir, video_url):
    video_bytes = (workdir / "clip.mp4").read_bytes()
    encoded = base64.b64encode(video_bytes).decode()
    good = {
        "labels_base64": {"inputs": {"video": encoded, "candidate_labels": LABELS}},
        "labels_in_parameters": {"inputs": encoded, "parameters": {"candidate_labels": LABELS}},
        "labels_data_uri": {"inputs": {"video": "data:video/mp4;base64," + encoded, "candidate_labels": LABELS}},
        "texts_path": {"inputs": {"video": "clip.mp4", "texts": TEXTS}, "parameters": {"return_embeddings": True}},
        "texts_url": {"inputs": {"video": video_url, "texts": TEXTS}},
        "embedding_only": {"inputs": {"video": encoded}, "parameters": {"return_embeddings": True}},
    }
    bad = {
        "no_inputs": {"video": encoded},
        "not_an_object": ["clip.mp4"],
        "no_video": {"inputs": {"texts": TEXTS}},
        "nothing_to_do": {"inputs": {"video": encoded}},
        "labels_and_texts": {"inputs": {"video": encoded, "texts": TEXTS, "candidate_labels": LABELS}},
        "empty_labels": {"inputs": {"video": encoded, "candidate_labels": []}},
        "labels_not_strings": {"inputs": {"video": encoded, "candidate_labels": [1, 2]}},
        "unknown_parameter": {"inputs": encoded, "parameters": {"candidate_labels": LABELS, "top": 3}},
        "bad_template": {"inputs": encoded, "parameters": {"candidate_labels": LABELS, "hypothesis_template": "x"}},
        "not_base64": {"inputs": {"video": "missing.mp4", "texts": TEXTS}},
        "corrupt_bytes": {"inputs": {"video": base64.b64encode(video_bytes[:400]).decode(), "texts": TEXTS}},
        "corrupt_path": {"inputs": {"video": "corrupt.mp4", "texts": TEXTS}},
        "text_file": {"inputs": {"video": "notes.txt", "texts": TEXTS}},
        "video_not_string": {"inputs": {"video": 3, "texts": TEXTS}},
    }
    (workdir / "requests.json").write_text(json.dumps({**good, **bad}))
    run_without_repo(
        f"""
        import base64, json, sys
        sys.path.insert(0, "checkpoint")
        from handler import EndpointHandler

        handler = EndpointHandler(path="checkpoint")
        requests = json.load(open("requests.json"))
        answers = {{name: handler(request) for name, request in requests.items()}}
        # Raw bytes, as the service passes a request sent with a video content type.
        raw = open("clip.mp4", "rb").read()
        answers["raw_bytes"] = handler({{"inputs": raw, "parameters": {{"texts": {TEXTS!r}}}}})
        answers["empty_bytes"] = handler({{"inputs": b"", "parameters": {{"texts": {TEXTS!r}}}}})
        json.dump(answers, open("answers.json", "w"))
        """,
        cwd=workdir,
    )
    answers = json.loads((workdir / "answers.json").read_text())

    # Independent computation with the model and processor of the folder.
    model = CLIP2VideoModel.from_pretrained(workdir / "checkpoint").eval()
    processor = tiny_processor()
    video = str(workdir / "clip.mp4")
    with torch.no_grad():
        label_inputs = processor(text=[f"a video of {label}." for label in LABELS], videos=[video], return_tensors="pt")
        label_probabilities = model(**label_inputs).logits_per_video[0].softmax(dim=0)
        text_inputs = processor(text=TEXTS, videos=[video], return_tensors="pt", return_timestamps=True)
        output = model(**{key: value for key, value in text_inputs.items() if key != "video_timestamps"})
    timestamps = text_inputs["video_timestamps"][0].tolist()

    expected_labels = sorted(zip(LABELS, label_probabilities.tolist()), key=lambda pair: -pair[1])
    for name in ("labels_base64", "labels_in_parameters", "labels_data_uri"):
        answer = answers[name]
        assert [item["label"] for item in answer["labels"]] == [label for label, _ in expected_labels], name
        assert [item["score"] for item in answer["labels"]] == pytest.approx([p for _, p in expected_labels], abs=1e-5)
        assert answer["timestamps"] == pytest.approx(timestamps)
    for name in ("texts_path", "texts_url", "raw_bytes"):
        answer = answers[name]
        assert [item["text"] for item in answer["scores"]] == TEXTS, name
        expected_scores = output.logits_per_text[:, 0].tolist()
        assert [item["score"] for item in answer["scores"]] == pytest.approx(expected_scores, abs=1e-4)
    embeddings = answers["texts_path"]
    assert embeddings["video_embedding"] == pytest.approx(output.video_embeds[0].tolist(), abs=1e-5)
    assert torch.tensor(embeddings["text_embeddings"]).shape == output.text_embeds.shape
    assert answers["embedding_only"]["video_embedding"] == pytest.approx(embeddings["video_embedding"], abs=1e-5)
    assert set(answers["embedding_only"]) == {"video_embedding", "timestamps"}

    expected_errors = {
        "no_inputs": '"inputs"',
        "not_an_object": "JSON object",
        "no_video": 'no "video"',
        "nothing_to_do": "return_embeddings",
        "labels_and_texts": "not both",
        "empty_labels": "candidate_labels",
        "labels_not_strings": "candidate_labels",
        "unknown_parameter": "Unknown parameters ['top']",
        "bad_template": "hypothesis_template",
        "not_base64": "'missing.mp4' is neither an http(s) URL, an existing file on the endpoint, nor base64",
        "corrupt_bytes": "Cannot read video the video sent in the request",
        "corrupt_path": "Cannot read video corrupt.mp4",
        "text_file": "Cannot read video notes.txt",
        "video_not_string": "got int",
        "empty_bytes": "empty",
    }
    for name, fragment in expected_errors.items():
        assert set(answers[name]) == {"error"}, (name, answers[name])
        assert fragment in answers[name]["error"], (name, answers[name]["error"])
