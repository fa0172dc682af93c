"""The Inference Endpoints handler, called as the Hugging Face inference toolkit calls it: `handler.py` imported from
a published folder in a fresh process (`spec_from_file_location`, the folder on `sys.path`), `EndpointHandler(path)`,
then the JSON bodies of requests. The toolkit (v0.5.6, `webservice_starlette.predict`) answers a returned dict with 200
and any exception with 400 and `{"error": str(exception)}`; the test records both and the exception's type, so that
client errors (`RequestError`, a `ValueError`) and server failures (which must propagate unchanged) are told apart.
Scores are checked against the model and processor run directly."""

import base64
import dataclasses
import http.client
import importlib.util
import json
import os
import shutil
import sys
import textwrap
import types
import typing

import pytest
import torch
from huggingface_hub import (
    VideoClassificationInput,
    VideoClassificationOutputElement,
    ZeroShotImageClassificationInput,
    ZeroShotImageClassificationOutputElement,
)

from clip2video.modeling_clip2video import CLIP2VideoModel
from tests.helpers.models import tiny_processor
from tests.helpers.processes import REPO, run_isolated
from tests.helpers.servers import free_port, wait_until_serving
from tests.helpers.videos import write_square_video


LABELS = ["cooking", "a red square", "playing guitar"]
TEXTS = ["a red square moves right", "a dog runs on the beach"]

# What the toolkit does with a request (its `predict`), plus the exception's type and the status a server that
# distinguishes them (the handler's `RequestError.status_code`, else 500) would answer.
TOOLKIT_CALL = """
import importlib.util, json, os, sys
def load_handler(model_dir):
    sys.path.insert(0, model_dir)
    spec = importlib.util.spec_from_file_location("handler.EndpointHandler", os.path.join(model_dir, "handler.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler.EndpointHandler"] = module
    spec.loader.exec_module(module)
    return module, module.EndpointHandler(model_dir)

def toolkit_predict(handler, body):
    try:
        return {"status": 200, "body": handler(body)}
    except Exception as error:
        return {
            "status": 400, "body": {"error": str(error)}, "type": type(error).__name__,
            "client_error": isinstance(error, module.RequestError),
            "own_status": getattr(error, "status_code", 500),
        }
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("endpoint")
    shutil.copytree(tiny_checkpoint, folder / "checkpoint")
    (folder / "served").mkdir()
    write_square_video(folder / "served" / "clip.mp4", (230, 20, 20), num_frames=30)
    (folder / "served" / "corrupt.mp4").write_bytes((folder / "served" / "clip.mp4").read_bytes()[:400])
    (folder / "secret.mp4").write_bytes((folder / "served" / "clip.mp4").read_bytes())  # outside the root
    (folder / "served" / "escape.mp4").symlink_to(folder / "secret.mp4")
    return folder


@pytest.fixture(scope="module")
def video_url(workdir, serve_folder):
    return serve_folder(workdir / "served").url + "/clip.mp4"


@pytest.mark.slow
def test_handler_answers_and_errors_as_the_toolkit_sees_them(workdir, video_url):
    video_bytes = (workdir / "served" / "clip.mp4").read_bytes()
    encoded = base64.b64encode(video_bytes).decode()
    corrupt = base64.b64encode(video_bytes[:400]).decode()
    good = {
        "labels_base64": {"inputs": {"video": encoded, "candidate_labels": LABELS}},
        "labels_in_parameters": {"inputs": encoded, "parameters": {"candidate_labels": LABELS}},
        "labels_data_uri": {"inputs": {"video": "data:video/mp4;base64," + encoded, "candidate_labels": LABELS}},
        "labels_top_k": {"inputs": {"video": encoded, "candidate_labels": LABELS}, "parameters": {"top_k": 2}},
        "texts_path": {"inputs": {"video": "clip.mp4", "texts": TEXTS}, "parameters": {"return_embeddings": True}},
        "texts_url": {"inputs": {"video": video_url, "texts": TEXTS}},
        "embedding_only": {"inputs": {"video": encoded}, "parameters": {"return_embeddings": True}},
        "several": {"inputs": {"videos": [encoded, corrupt, "clip.mp4", 3, "../secret.mp4"], "texts": TEXTS}},
        # The Hub's task schema (VideoClassificationInput / ZeroShotImageClassificationInput): parameters by its names.
        "hub_task": {"inputs": encoded, "parameters": {
            "candidate_labels": LABELS, "hypothesis_template": "a video of {}.", "top_k": 2, "num_frames": 2,
            "function_to_apply": "none",
        }},
        "hub_task_batch": {"inputs": [encoded, "clip.mp4"], "parameters": {"candidate_labels": LABELS}},
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
        "format_template": {
            "inputs": encoded, "parameters": {"candidate_labels": LABELS, "hypothesis_template": "{}{}"}
        },
        "negative_top_k": {"inputs": encoded, "parameters": {"candidate_labels": LABELS, "top_k": -1}},
        "missing_path": {"inputs": {"video": "missing.mp4", "texts": TEXTS}},
        "corrupt_bytes": {"inputs": {"video": corrupt, "texts": TEXTS}},
        "corrupt_path": {"inputs": {"video": "corrupt.mp4", "texts": TEXTS}},
        "video_not_string": {"inputs": {"video": 3, "texts": TEXTS}},
        "empty_videos": {"inputs": {"videos": [], "texts": TEXTS}},
        "too_many_videos": {"inputs": {"videos": [encoded] * 9, "texts": TEXTS}},
        "text_too_long": {"inputs": {"video": encoded, "texts": ["a" * 1001]}},
        "frame_sampling_rate": {"inputs": encoded, "parameters": {"candidate_labels": LABELS, "frame_sampling_rate": 2}},
        "function_to_apply": {"inputs": encoded, "parameters": {"candidate_labels": LABELS, "function_to_apply": "max"}},
        "num_frames": {"inputs": encoded, "parameters": {"candidate_labels": LABELS, "num_frames": 78}},
        "hub_task_bad_video": {"inputs": [encoded, corrupt], "parameters": {"candidate_labels": LABELS}},
    }
    (workdir / "requests.json").write_text(json.dumps({**good, **bad}))
    run_isolated(
        TOOLKIT_CALL
        + textwrap.dedent(
            """
        os.environ["CLIP2VIDEO_ENDPOINT_VIDEO_ROOT"] = "served"
        os.environ["CLIP2VIDEO_ALLOW_PRIVATE_URLS"] = "1"  # the test's video server is on loopback
        module, handler = load_handler("checkpoint")
        requests = json.load(open("requests.json"))
        answers = {name: toolkit_predict(handler, request) for name, request in requests.items()}
        answers["empty_bytes"] = toolkit_predict(handler, {"inputs": b"", "parameters": {"texts": ["a"]}})

        # A failure of the server itself (here: the model breaks) must not look like the client's fault.
        def broken(*args, **kwargs):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        handler.model.forward = broken
        answers["server_fault"] = toolkit_predict(handler, requests["labels_base64"])
        json.dump(answers, open("answers.json", "w"))
        """
        ),
        cwd=workdir,
    )
    answers = json.loads((workdir / "answers.json").read_text())

    # Independent computation with the model and processor of the folder.
    model = CLIP2VideoModel.from_pretrained(workdir / "checkpoint").eval()
    processor = tiny_processor()
    video = str(workdir / "served" / "clip.mp4")
    with torch.no_grad():
        label_inputs = processor(text=[f"a video of {label}." for label in LABELS], videos=[video], return_tensors="pt")
        label_probabilities = model(**label_inputs).logits_per_video[0].softmax(dim=0)
        output = model(**processor(text=TEXTS, videos=[video], return_tensors="pt"))

    for name in good:
        assert answers[name]["status"] == 200, (name, answers[name])
    expected_labels = sorted(zip(LABELS, label_probabilities.tolist()), key=lambda pair: -pair[1])
    for name in ("labels_base64", "labels_data_uri"):
        answer = answers[name]["body"]
        assert [item["label"] for item in answer["labels"]] == [label for label, _ in expected_labels], name
        assert [item["score"] for item in answer["labels"]] == pytest.approx([p for _, p in expected_labels], abs=1e-5)
    # Asked in the Hub's form, answered in the Hub's form: the list of {"label", "score"} itself.
    assert answers["labels_in_parameters"]["body"] == answers["labels_base64"]["body"]["labels"]
    for answer in (answers["labels_in_parameters"]["body"], answers["hub_task"]["body"],
                   *answers["hub_task_batch"]["body"]):
        for element in answer:
            assert_follows_hub_schema(element, VideoClassificationOutputElement)
            assert_follows_hub_schema(element, ZeroShotImageClassificationOutputElement)
    for name in ("labels_in_parameters", "hub_task", "hub_task_batch"):
        assert_follows_hub_schema(good[name], VideoClassificationInput, extra_parameters={"candidate_labels",
                                                                                      "hypothesis_template"})
    assert_follows_hub_schema(good["labels_in_parameters"], ZeroShotImageClassificationInput)
    single = answers["labels_in_parameters"]["body"]
    for answer in answers["hub_task_batch"]["body"]:  # one list per video of the batch
        assert [item["label"] for item in answer] == [item["label"] for item in single]
        assert [item["score"] for item in answer] == pytest.approx([item["score"] for item in single], abs=1e-5)
    with torch.no_grad():
        two_frames = processor(text=[f"a video of {label}." for label in LABELS], videos=[video], num_frames=2,
                               return_tensors="pt")
        two_frame_logits = model(**two_frames).logits_per_video[0]
    best = two_frame_logits.argsort(descending=True)[:2]
    assert [item["label"] for item in answers["hub_task"]["body"]] == [LABELS[index] for index in best]
    assert [item["score"] for item in answers["hub_task"]["body"]] == pytest.approx(two_frame_logits[best].tolist(),
                                                                                   abs=1e-4)
    assert answers["labels_top_k"]["body"]["labels"] == answers["labels_base64"]["body"]["labels"][:2]
    expected_scores = output.logits_per_text[:, 0].tolist()
    for name in ("texts_path", "texts_url"):
        answer = answers[name]["body"]
        assert [item["text"] for item in answer["scores"]] == TEXTS, name
        assert [item["score"] for item in answer["scores"]] == pytest.approx(expected_scores, abs=1e-4)
    embeddings = answers["texts_path"]["body"]
    assert embeddings["video_embedding"] == pytest.approx(output.video_embeds[0].tolist(), abs=1e-5)
    torch.testing.assert_close(torch.tensor(embeddings["text_embeddings"]), output.text_embeds, rtol=0, atol=1e-5)
    embedding_only = answers["embedding_only"]["body"]["video_embedding"]
    assert embedding_only == pytest.approx(embeddings["video_embedding"], abs=1e-5)
    assert set(answers["embedding_only"]["body"]) == {"video_embedding"}

    # Several videos: batched, each bad one reported in its place, the good ones answered.
    results = answers["several"]["body"]["results"]
    assert [set(result) for result in results] == [{"scores"}, {"error"}, {"scores"}, {"error"}, {"error"}]
    for index in (0, 2):
        assert [item["score"] for item in results[index]["scores"]] == pytest.approx(expected_scores, abs=1e-4)
    assert "videos[1]" in results[1]["error"] and "truncated or corrupt" in results[1]["error"]
    assert "videos[3]" in results[3]["error"] and "got int" in results[3]["error"]
    assert "videos[4]" in results[4]["error"] and "folder this endpoint serves" in results[4]["error"]

    expected_errors = {
        "no_inputs": '"inputs"',
        "not_an_object": "JSON object",
        "no_video": '"video" or "videos"',
        "nothing_to_do": "return_embeddings",
        "labels_and_texts": "not both",
        "empty_labels": "candidate_labels",
        "labels_not_strings": '"candidate_labels[0]" must be a non-empty string, got 1',
        "unknown_parameter": "Unknown parameters ['top']",
        "bad_template": "hypothesis_template",
        "format_template": "exactly one '{}'",
        "negative_top_k": '"top_k" must be a positive integer',
        "missing_path": "'missing.mp4' is neither base64, a data URI, an http(s) URL, nor a video file in the folder",
        "corrupt_bytes": "Cannot read video video:",
        "corrupt_path": "Cannot read video video ('corrupt.mp4')",
        "video_not_string": "got int",
        "empty_videos": "non-empty list",
        "too_many_videos": "at most 8 per request",
        "empty_bytes": '"video" is empty',
        "text_too_long": '"texts[0]" has 1001 characters; at most 1000',
        "frame_sampling_rate": '"frame_sampling_rate"=2 is not supported: CLIP2Video samples the paper\'s frames',
        "function_to_apply": "\"function_to_apply\" must be one of ['softmax', 'sigmoid', 'none'], got 'max'",
        "num_frames": "\"num_frames\"=78 exceeds the model's frame-position table (77 frames)",
        "hub_task_bad_video": "Cannot read video videos[1]:",
    }
    for name, fragment in expected_errors.items():
        answer = answers[name]
        assert answer["status"] == 400 and set(answer["body"]) == {"error"}, (name, answer)
        assert fragment in answer["body"]["error"], (name, answer["body"]["error"])
        assert answer["type"] == "RequestError" and answer["client_error"], (name, answer)
        assert answer["own_status"] == (413 if name == "too_many_videos" else 400), (name, answer)
    # The server's own failure propagates unchanged: a RuntimeError, not a client error (the toolkit still says 400).
    fault = answers["server_fault"]
    assert fault["type"] == "RuntimeError" and not fault["client_error"] and fault["own_status"] == 500, fault
    assert "illegal memory access" in fault["body"]["error"]


def assert_follows_hub_schema(value: dict, schema, extra_parameters=frozenset()):
    """`value` is an instance of the `huggingface_hub` generated task type `schema`: every required field present,
    no field it does not name (apart from `extra_parameters`, the zero-shot parameters a video-classification request
    adds), each value of the type the field declares (nested types checked the same way)."""
    hints = typing.get_type_hints(schema)
    fields = {field.name: field for field in dataclasses.fields(schema)}
    required = {name for name, field in fields.items() if field.default is dataclasses.MISSING}
    assert required <= set(value), (schema.__name__, value)
    assert set(value) <= set(fields) | set(extra_parameters), (schema.__name__, sorted(set(value) - set(fields)))
    for name, item in value.items():
        if name in fields:
            assert_has_type(item, hints[name], f"{schema.__name__}.{name}", extra_parameters)
    assert schema.parse_obj_as_instance(json.dumps(value)) is not None


def assert_has_type(value, hint, where: str, extra_parameters=frozenset()):
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return
    if origin in (typing.Union, types.UnionType):
        failures = []
        for option in arguments:
            try:
                assert_has_type(value, option, where, extra_parameters)
                return
            except AssertionError as error:
                failures.append(str(error))
        raise AssertionError(f"{where}: {value!r} is none of {arguments}: {failures}")
    if origin is typing.Literal:
        assert value in arguments, (where, value, arguments)
    elif origin is list:
        assert isinstance(value, list), (where, value)
        for item in value:
            assert_has_type(item, arguments[0], where, extra_parameters)
    elif hint is type(None):
        assert value is None, (where, value)
    elif dataclasses.is_dataclass(hint):
        assert isinstance(value, dict), (where, value)
        assert_follows_hub_schema(value, hint, extra_parameters)
    elif hint is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (where, value)
    else:
        assert isinstance(value, hint) and not (hint is int and isinstance(value, bool)), (where, value, hint)


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


def test_device_and_dtype_placement(workdir, monkeypatch):
    module = load_handler_module(workdir / "checkpoint")
    for variable in (module.DEVICE_VARIABLE, module.DTYPE_VARIABLE):
        monkeypatch.delenv(variable, raising=False)
    # The choice: CUDA (bfloat16) when the CUDA check says so, CPU (float32) otherwise; variables and arguments win.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert module.select_device_and_dtype() == (torch.device("cuda"), torch.bfloat16)
    monkeypatch.setenv(module.DTYPE_VARIABLE, "float32")
    assert module.select_device_and_dtype() == (torch.device("cuda"), torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(module.DTYPE_VARIABLE)
    assert module.select_device_and_dtype() == (torch.device("cpu"), torch.float32)
    monkeypatch.setenv(module.DEVICE_VARIABLE, "meta")
    assert module.select_device_and_dtype() == (torch.device("meta"), torch.float32)
    with pytest.raises(ValueError, match="CLIP2VIDEO_ENDPOINT_DTYPE='float8'"):
        module.select_device_and_dtype(dtype="float8")

    # The placement itself: every parameter on the requested device, in the requested dtype, eval mode.
    handler = module.EndpointHandler(str(workdir / "checkpoint"), device="meta", dtype="bfloat16")
    parameters = dict(handler.model.named_parameters())
    assert {parameter.device.type for parameter in parameters.values()} == {"meta"}
    # The vision tower's linear layers (nearly all of a video's cost) in bfloat16; the model keeps the rest
    # (embeddings, norms, temporal heads) in float32 by design.
    vision_linear = [
        name
        for name in parameters
        if name.startswith("vision_model.encoder.") and name.endswith(("proj.weight", "fc1.weight", "fc2.weight"))
    ]
    assert vision_linear and all(parameters[name].dtype == torch.bfloat16 for name in vision_linear)
    assert {parameter.dtype for parameter in parameters.values()} == {torch.bfloat16, torch.float32}
    assert not handler.model.training and handler.classifier.device == torch.device("meta")


def test_bfloat16_scores_stay_within_1e_2_of_float32(workdir):
    module = load_handler_module(workdir / "checkpoint")
    encoded = base64.b64encode((workdir / "served" / "clip.mp4").read_bytes()).decode()
    request = {"inputs": {"video": encoded, "candidate_labels": LABELS}}
    scores = {}
    for dtype in ("float32", "bfloat16"):
        handler = module.EndpointHandler(str(workdir / "checkpoint"), device="cpu", dtype=dtype)
        assert handler.model.vision_model.encoder.layers[0].mlp.fc1.weight.dtype == getattr(torch, dtype)
        scores[dtype] = {item["label"]: item["score"] for item in handler(request)["labels"]}
    assert scores["bfloat16"] == pytest.approx(scores["float32"], abs=1e-2)


BROKEN_MODEL = '''

# Appended by the test: the model's forward fails as a GPU fault would (get_video_features still works).
_original_init = EndpointHandler.__init__


def _broken_init(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)

    def broken(*_, **__):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    self.model.forward = broken


EndpointHandler.__init__ = _broken_init
'''


@pytest.mark.slow
def test_served_over_http_with_4xx_for_the_client_and_5xx_for_the_server(workdir, tmp_path):
    import subprocess
    import urllib.error
    import urllib.request

    folder = tmp_path / "broken"
    shutil.copytree(workdir / "checkpoint", folder)
    with open(folder / "handler.py", "a") as handler_file:
        handler_file.write(BROKEN_MODEL)
    port = free_port()
    serve = REPO / "pipelines" / "publishing" / "endpoint" / "serve.py"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "CLIP2VIDEO_MAX_INPUT_BYTES": "200000"}
    server = subprocess.Popen(
        [sys.executable, str(serve), str(folder), "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}/"

    def post(body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        # Its log is read once it has exited (reading a running server's pipe would wait for it to end).
        log = lambda: "" if server.poll() is None else server.communicate()[1]  # noqa: E731
        wait_until_serving(server, url, timeout=120, log=log)
        encoded = base64.b64encode((workdir / "served" / "clip.mp4").read_bytes()).decode()
        status, answer = post({"inputs": {"video": encoded}, "parameters": {"return_embeddings": True}})
        assert status == 200 and len(answer["video_embedding"]) > 0
        assert post({"inputs": {"video": encoded, "candidate_labels": "x"}}) == (
            400, {"error": '"candidate_labels" must be a non-empty list of strings, got \'x\'.'}
        )
        status, answer = post({"inputs": {"video": base64.b64encode(bytes(300_000)).decode(), "texts": ["a"]}})
        assert status == 413 and "CLIP2VIDEO_MAX_INPUT_BYTES" in answer["error"]
        status, answer = post(b"{not json")
        assert status == 400 and "not JSON" in answer["error"]
        assert post(b"...", content_type="video/mp4")[0] == 415
        # A body over 8 base64 videos of 200 kB plus 1 MiB is refused from its Content-Length, before it is sent.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.putrequest("POST", "/")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", "4000000")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and "request body" in json.loads(response.read())["error"]
        connection.close()
        # The server's own failure: 500, and its details stay in the log.
        status, answer = post({"inputs": {"video": encoded, "candidate_labels": LABELS}})
        assert (status, answer) == (500, {"error": "Internal server error."})
    finally:
        server.terminate()
        _, log = server.communicate(timeout=30)
    assert "RuntimeError: CUDA error: an illegal memory access" in log
