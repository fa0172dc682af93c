"""Inference Endpoints handler for a CLIP2Video checkpoint (copied next to the weights as `handler.py`).

The service builds `EndpointHandler(path)` once and calls it with the JSON body of every request:

    {"inputs": {"video": VIDEO, "candidate_labels": ["cooking", "dancing"]}}     -> zero-shot classification
    {"inputs": {"video": VIDEO, "texts": ["a man cooks", "a girl dances"]}}      -> one score per text
    {"inputs": {"videos": [VIDEO, VIDEO], "candidate_labels": [...]}}            -> several videos, batched
    {"inputs": {"video": VIDEO}, "parameters": {"return_embeddings": true}}      -> the video's embedding
    {"inputs": VIDEO, "parameters": {"candidate_labels": [...], "top_k": 2}}     -> the Hub's task schema

The last form is the Hub's (`huggingface_hub` `VideoClassificationInput` and the zero-shot classification types):
`inputs` is the video (or a list of videos), `parameters` holds `candidate_labels`, `hypothesis_template`, `top_k`,
`num_frames` and `function_to_apply` (`frame_sampling_rate` is refused: the paper's sampling has no stride), and the
answer is `[{"label", "score"}, ...]` best first (a list of them for a list of videos).

VIDEO is base64-encoded file bytes (optionally a `data:<type>;base64,` URI), an `http(s)` URL (fetched by the
processor's one safe fetcher: public addresses only, timeouts, size cap), or, only when the deployment sets
`CLIP2VIDEO_ENDPOINT_VIDEO_ROOT`, a path relative to that folder. Labels, texts, `hypothesis_template` (default
`"a video of {}."`, one `{}`), `top_k` and `return_embeddings` may also be given in `parameters`.

Answers, per video: `{"labels": [{"label", "score"}, ...]}` (probabilities over the labels, best first),
`{"scores": [{"text", "score"}, ...]}` (the model's `logits_per_text`, in the order given), plus `video_embedding`
and `text_embeddings` (L2-normalised) with `return_embeddings`. A request with `"videos"` gets
`{"results": [answer or {"error": message}, ...]}`: a bad video is reported in its place, the others are answered.

Errors. A malformed request, or a single video that cannot be read, raises `RequestError` (a `ValueError`); the
Hugging Face inference toolkit answers every exception a handler raises with HTTP 400 and `{"error": message}`.
Failures of the server itself (CUDA out of memory, a broken model) are never turned into `RequestError`: they
propagate unchanged, so a server that tells them apart (`serve.py` next to this file) answers them with 500.

The model runs on CUDA when available, loaded with `dtype=bfloat16` there by default (the model then keeps everything
but its vision tower's linear layers in float32; `CLIP2VIDEO_ENDPOINT_DEVICE`, `CLIP2VIDEO_ENDPOINT_DTYPE` override),
in eval mode under `torch.inference_mode`. Decoding limits are the processor's
`CLIP2VIDEO_*` environment variables (see `DecodeLimits`). Imports only torch, transformers and the standard library.
"""

import base64
import binascii
import importlib
import math
import os
import stat
import tempfile

import torch
from transformers import pipeline


ZERO_SHOT_TASK = "zero-shot-video-classification"
KNOWN_INPUT_KEYS = {"video", "videos", "candidate_labels", "texts"}
KNOWN_PARAMETERS = {
    "candidate_labels", "texts", "hypothesis_template", "top_k", "return_embeddings",
    # The Hub's video-classification parameters (`huggingface_hub` `VideoClassificationParameters`).
    "num_frames", "function_to_apply", "frame_sampling_rate",
}
# `VideoClassificationOutputTransform` of the Hub's task schema.
SCORE_FUNCTIONS = ("softmax", "sigmoid", "none")
# Deployment settings (environment variables), with their defaults.
DEVICE_VARIABLE = "CLIP2VIDEO_ENDPOINT_DEVICE"  # default: "cuda" when available, else "cpu"
DTYPE_VARIABLE = "CLIP2VIDEO_ENDPOINT_DTYPE"  # default: bfloat16 on CUDA, float32 elsewhere
VIDEO_ROOT_VARIABLE = "CLIP2VIDEO_ENDPOINT_VIDEO_ROOT"  # default: unset, no local paths
# Counts per request: default and the largest a deployment may set (a request is one batch held in memory).
MAX_VIDEOS_VARIABLE, DEFAULT_MAX_VIDEOS, MAX_MAX_VIDEOS = "CLIP2VIDEO_ENDPOINT_MAX_VIDEOS", 8, 1024
MAX_TEXTS_VARIABLE, DEFAULT_MAX_TEXTS, MAX_MAX_TEXTS = "CLIP2VIDEO_ENDPOINT_MAX_TEXTS", 256, 65536
# Captions are cut at 32 tokens by the processor: a longer text would be scored on its start without saying so.
MAX_TEXT_CHARACTERS = 1000
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_MAX_SHOWN = 80
_BASE64_WHITESPACE = b" \t\r\n"
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


class RequestError(ValueError):
    """The request is malformed or its video cannot be used; the message says how. `status_code` is the HTTP status
    a server should answer with (the inference toolkit answers 400 for every exception)."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(message)
        self.status_code = status_code


class ModelOutputError(RuntimeError):
    """The model's answer holds NaN or infinity (broken weights or `logit_scale`): a failure of the server, never of
    the request (HTTP 500), whose message is safe to show. No such answer is returned: it would not even be JSON."""

    status_code = 500


def select_device_and_dtype(device: str | None = None, dtype: str | torch.dtype | None = None):
    """The device (argument, else `CLIP2VIDEO_ENDPOINT_DEVICE`, else CUDA when available, else CPU) and the dtype
    (argument, else `CLIP2VIDEO_ENDPOINT_DTYPE`, else bfloat16 on CUDA and float32 elsewhere)."""
    device = device or (os.environ.get(DEVICE_VARIABLE) or "").strip() or (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{DEVICE_VARIABLE}={device!r} is not a torch device (e.g. cpu, cuda, cuda:1).") from None
    dtype = dtype or (os.environ.get(DTYPE_VARIABLE) or "").strip() or (
        "bfloat16" if device.type == "cuda" else "float32"
    )
    if isinstance(dtype, str):
        if dtype.lower() not in DTYPES:
            raise ValueError(f"{DTYPE_VARIABLE}={dtype!r}: choose one of {sorted(DTYPES)}.")
        dtype = DTYPES[dtype.lower()]
    return device, dtype


class EndpointHandler:
    """Answers requests with the checkpoint's zero-shot pipeline (the one label-scoring implementation).

    Args:
        path (`str`): the checkpoint folder.
        device (`str`, *optional*): overrides `CLIP2VIDEO_ENDPOINT_DEVICE` and the CUDA check.
        dtype (`str` or `torch.dtype`, *optional*): overrides `CLIP2VIDEO_ENDPOINT_DTYPE`.
        video_root (`str`, *optional*): overrides `CLIP2VIDEO_ENDPOINT_VIDEO_ROOT`, the only folder local paths may
            name (unset: no local paths).
    """

    def __init__(self, path: str = "", device: str | None = None, dtype=None, video_root: str | None = None):
        self.device, self.dtype = select_device_and_dtype(device, dtype)
        self.classifier = pipeline(
            ZERO_SHOT_TASK, model=path, trust_remote_code=True, device=self.device, dtype=self.dtype
        )
        self.model = self.classifier.model.eval()
        self.processor = self.classifier.processor
        # The checks and the caption rule of the pipeline's own code, and the processor's limits and fetcher.
        self.checks = importlib.import_module(type(self.classifier).__module__)
        decoding = importlib.import_module(
            type(self.processor.video_processor).__module__.rsplit(".", 1)[0] + ".video_decoding_clip2video"
        )
        self.fetcher = importlib.import_module(decoding.__name__.rsplit(".", 1)[0] + ".url_fetching_clip2video")
        self.limits = decoding.DecodeLimits.from_env()
        root = video_root or (os.environ.get(VIDEO_ROOT_VARIABLE) or "").strip()
        self.video_root = os.path.realpath(root) if root else None
        if self.video_root is not None and not os.path.isdir(self.video_root):
            raise ValueError(f"{VIDEO_ROOT_VARIABLE}={root!r} is not a folder.")
        # Parsed by the processor's one parser of `CLIP2VIDEO_*` variables (ASCII digits, range-checked).
        self.max_videos = decoding.parse_setting(
            MAX_VIDEOS_VARIABLE, os.environ.get(MAX_VIDEOS_VARIABLE), int, DEFAULT_MAX_VIDEOS, 1, MAX_MAX_VIDEOS
        )
        self.max_texts = decoding.parse_setting(
            MAX_TEXTS_VARIABLE, os.environ.get(MAX_TEXTS_VARIABLE), int, DEFAULT_MAX_TEXTS, 1, MAX_MAX_TEXTS
        )

    def __call__(self, data: dict) -> dict:
        request = self._parse(data)
        with tempfile.TemporaryDirectory(prefix="clip2video-request-") as folder, torch.inference_mode():
            videos, errors = [], []
            for index, video in enumerate(request["videos"]):
                where = "video" if request["single"] else f"videos[{index}]"
                try:
                    videos.append(self._video_file(video, where, folder, index))
                    errors.append(None)
                except RequestError as error:
                    if request["single"]:
                        raise
                    videos.append(None)
                    errors.append(str(error))
            answers = self._answer(request, videos, errors, folder)
        _check_finite(answers)
        if request["hub_task"]:
            return _hub_task_answer(request, answers)
        if request["single"]:
            return answers[0]
        return {"results": answers}

    # -- the request ---------------------------------------------------------------------------------------------

    def _parse(self, data) -> dict:
        if not isinstance(data, dict) or "inputs" not in data:
            raise RequestError('The request must be a JSON object with "inputs" (and optionally "parameters").')
        unknown = set(data) - {"inputs", "parameters"}
        if unknown:
            raise RequestError(f"Unknown request keys {sorted(unknown)}; expected \"inputs\" and \"parameters\".")
        inputs, parameters = data["inputs"], data.get("parameters")
        parameters = {} if parameters is None else parameters
        if not isinstance(parameters, dict):
            raise RequestError('"parameters" must be a JSON object.')
        unknown = set(parameters) - KNOWN_PARAMETERS
        if unknown:
            raise RequestError(f"Unknown parameters {sorted(unknown)}; expected some of {sorted(KNOWN_PARAMETERS)}.")
        if isinstance(inputs, dict):
            unknown = set(inputs) - KNOWN_INPUT_KEYS
            if unknown:
                raise RequestError(f"Unknown inputs {sorted(unknown)}; expected some of {sorted(KNOWN_INPUT_KEYS)}.")
            if ("video" in inputs) == ("videos" in inputs):
                raise RequestError('"inputs" must have either "video" or "videos".')
            fields = dict(parameters)
            for key in ("candidate_labels", "texts"):
                if key in inputs:
                    if key in parameters:
                        raise RequestError(f'"{key}" is given both in "inputs" and in "parameters".')
                    fields[key] = inputs[key]
            single = "video" in inputs
            videos = [inputs["video"]] if single else inputs["videos"]
        else:
            # The Hub's task schema: `inputs` is the video (or a list of videos), everything else in `parameters`.
            fields, single, videos = parameters, not isinstance(inputs, list), inputs
            videos = videos if isinstance(videos, list) else [videos]
        if not isinstance(videos, list) or not videos:
            raise RequestError(f'"videos" must be a non-empty list, got {_shown(videos)}.')
        if len(videos) > self.max_videos:
            message = f'"videos" has {len(videos)} videos; at most {self.max_videos} per request'
            raise RequestError(f"{message} ({MAX_VIDEOS_VARIABLE}).", status_code=413)

        labels, texts = fields.get("candidate_labels"), fields.get("texts")
        if labels is not None and texts is not None:
            raise RequestError('Give either "candidate_labels" or "texts", not both.')
        return_embeddings = fields.get("return_embeddings", False)
        if not isinstance(return_embeddings, bool):
            raise RequestError(f'"return_embeddings" must be true or false, got {_shown(return_embeddings)}.')
        if labels is None and texts is None and not return_embeddings:
            raise RequestError('Give "candidate_labels" or "texts" to score, or set "return_embeddings": true.')
        for name in ("hypothesis_template", "top_k", "function_to_apply"):
            if name in fields and labels is None:
                raise RequestError(f'"{name}" applies to "candidate_labels" only.')
        function_to_apply = fields.get("function_to_apply", "softmax")
        if function_to_apply not in SCORE_FUNCTIONS:
            choices = list(SCORE_FUNCTIONS)
            raise RequestError(f'"function_to_apply" must be one of {choices}, got {_shown(function_to_apply)}.')
        try:
            self.checks.refuse_frame_sampling_rate(fields.get("frame_sampling_rate"))
            num_frames = self.checks.check_num_frames(fields.get("num_frames"), self.model.config)
            if labels is not None:
                labels = self._string_list(labels, "candidate_labels")
                template = self.checks.check_hypothesis_template(
                    fields.get("hypothesis_template", self.checks.DEFAULT_HYPOTHESIS_TEMPLATE)
                )
                top_k = self.checks.check_top_k(fields.get("top_k"))
            else:
                template, top_k = None, None
        except ValueError as error:
            raise RequestError(str(error).replace("`", '"')) from None
        if texts is not None:
            texts = self._string_list(texts, "texts")
        return {
            "single": single, "videos": videos, "labels": labels, "texts": texts, "template": template,
            "top_k": top_k, "return_embeddings": return_embeddings, "num_frames": num_frames,
            "function_to_apply": function_to_apply,
            # Classification asked in the Hub's form is answered in the Hub's form (a list of {"label", "score"}).
            "hub_task": not isinstance(inputs, dict) and labels is not None and not return_embeddings,
        }

    def _string_list(self, value, name: str) -> list[str]:
        if not isinstance(value, list) or not value:
            raise RequestError(f'"{name}" must be a non-empty list of strings, got {_shown(value)}.')
        if len(value) > self.max_texts:
            raise RequestError(f'"{name}" has {len(value)} entries; at most {self.max_texts} ({MAX_TEXTS_VARIABLE}).')
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise RequestError(f'"{name}[{index}]" must be a non-empty string, got {_shown(item)}.')
            if len(item) > MAX_TEXT_CHARACTERS:
                raise RequestError(
                    f'"{name}[{index}]" has {len(item)} characters; at most {MAX_TEXT_CHARACTERS} (the model reads '
                    "32 tokens)."
                )
        return value

    # -- the videos ----------------------------------------------------------------------------------------------

    def _video_file(self, video, where: str, folder: str, index: int) -> str:
        """The request's video as a file in the request's temporary folder, within the decoding limits."""
        if isinstance(video, (bytes, bytearray)):
            content = bytes(video)
        elif not isinstance(video, str):
            raise RequestError(
                f'"{where}" must be a string (base64, a data URI, an http(s) URL or an allowed path), got '
                f"{type(video).__name__}."
            )
        elif video[:8].lower().startswith(("http://", "https://")):
            try:
                content = self.fetcher.fetch_url(
                    video,
                    max_bytes=self.limits.max_input_bytes,
                    timeout=self.limits.url_timeout_seconds,
                    total_timeout=self.limits.max_download_seconds,
                    allow_private=self.limits.allow_private_urls,
                )
            except ValueError as error:
                raise RequestError(f'"{where}": {error}') from None
        elif video[:5].lower() == "data:":  # URI schemes are case-insensitive (RFC 3986), so is ";base64" (RFC 2397)
            header, comma, payload = video.partition(",")
            if not comma or not header.lower().endswith(";base64"):
                raise RequestError(f'"{where}" is a data URI without ";base64,": only base64 data URIs are accepted.')
            content = self._base64(payload, where)
        elif _looks_like_base64(video):
            content = self._base64(video, where)
        else:
            content = self._local_file(video, where)
        if not content:
            raise RequestError(f'"{where}" is empty.')
        if len(content) > self.limits.max_input_bytes:
            raise RequestError(
                f'"{where}" has {len(content)} bytes, over the limit of {self.limits.max_input_bytes} '
                "(CLIP2VIDEO_MAX_INPUT_BYTES).",
                status_code=413,
            )
        path = os.path.join(folder, f"video-{index}")
        with open(path, "wb") as file:
            file.write(content)
        return path

    def _base64(self, payload: str, where: str) -> bytes:
        """Base64 (MIME or PEM line breaks allowed) decoded, refused from its length before any copy or decoding:
        base64 takes 4 characters for 3 bytes, and line breaks at most 2 more per 64."""
        encoded = 4 * (self.limits.max_input_bytes // 3 + 1)
        too_large = RequestError(
            f'"{where}" decodes to more than {self.limits.max_input_bytes} bytes (CLIP2VIDEO_MAX_INPUT_BYTES).',
            status_code=413,
        )
        if len(payload) > encoded + 2 * (encoded // 64 + 1):
            raise too_large
        if not payload.isascii():
            raise RequestError(f'"{where}" is not valid base64.')
        compact = payload.encode("ascii").translate(None, _BASE64_WHITESPACE)
        if len(compact) > encoded:
            raise too_large
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f'"{where}" is not valid base64.') from None

    def _local_file(self, video: str, where: str) -> bytes:
        """The bytes of a file under the video root. Every refusal gets the same message whether or not the file
        exists, so the endpoint cannot be used to probe the server's files."""
        refused = RequestError(
            f'"{where}" {_shown(video)} is neither base64, a data URI, an http(s) URL, nor a video file in the folder '
            "this endpoint serves" + ("" if self.video_root else f" (local paths are disabled: {VIDEO_ROOT_VARIABLE})")
            + "."
        )
        if self.video_root is None or "\0" in video or os.path.isabs(video):
            raise refused
        if ".." in video.replace("\\", "/").split("/"):
            raise refused
        try:  # realpath's readlink fails (EINVAL) when a link is swapped for a file while it resolves
            real = os.path.realpath(os.path.join(self.video_root, video))
        except (OSError, ValueError):
            raise refused from None
        if os.path.commonpath([self.video_root, real]) != self.video_root:
            raise refused  # a symbolic link out of the root
        try:
            descriptor = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            raise refused from None
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise refused  # a folder, a device or a pipe
            with os.fdopen(descriptor, "rb", closefd=False) as file:
                return file.read(self.limits.max_input_bytes + 1)
        finally:
            os.close(descriptor)

    # -- the answers ---------------------------------------------------------------------------------------------

    def _answer(self, request: dict, videos: list, errors: list, folder: str) -> list[dict]:
        answers = [{"error": error} if error else {} for error in errors]
        usable = [index for index, path in enumerate(videos) if path is not None]
        if request["labels"] is not None or request["texts"] is not None:
            self._score(request, videos, usable, answers, folder)
        if request["return_embeddings"]:
            usable = [index for index in usable if "error" not in answers[index]]
            self._embed(request, videos, usable, answers, folder)
        return answers

    def _score(self, request, videos, usable, answers, folder):
        if request["labels"] is not None:
            labels = request["labels"]
            arguments = {
                "hypothesis_template": request["template"], "top_k": request["top_k"],
                "function_to_apply": request["function_to_apply"],
            }
        else:
            # Texts are captions already: the template is the caption itself, the scores the logits, in order.
            labels, arguments = request["texts"], {"hypothesis_template": "{}", "function_to_apply": "none"}
        if request["num_frames"] is not None:
            arguments["num_frames"] = request["num_frames"]
        results = self._per_video(
            lambda paths: self.classifier(paths, candidate_labels=labels, batch_size=len(paths), **arguments),
            request, videos, usable, answers, folder,
        )
        for index, result in results.items():
            if request["labels"] is not None:
                answers[index]["labels"] = result
            else:
                by_label = {}
                for item in result:
                    by_label.setdefault(item["label"], item["score"])
                answers[index]["scores"] = [{"text": text, "score": by_label[text]} for text in request["texts"]]

    def _embed(self, request, videos, usable, answers, folder):
        captions = None
        if request["labels"] is not None:
            captions = self.checks.hypothesis_captions(request["labels"], request["template"])
        elif request["texts"] is not None:
            captions = request["texts"]
        text_embeddings = None
        if captions is not None:
            text_inputs = self.processor(text=captions, return_tensors="pt").to(self.device)
            text_embeddings = self.model.get_text_features(**text_inputs).pooler_output.float().tolist()

        frames = {} if request["num_frames"] is None else {"num_frames": request["num_frames"]}

        def video_embeddings(paths):
            inputs = self.processor(videos=paths, return_tensors="pt", **frames).to(self.device)
            # As the pipeline does: the model's own dtype (float32; only its vision linear layers run in `self.dtype`).
            pixels = inputs["pixel_values_videos"].to(self.model.dtype)
            embeds = self.model.get_video_features(pixel_values_videos=pixels, video_mask=inputs["video_mask"])
            return embeds.pooler_output.float().tolist()

        for index, embedding in self._per_video(video_embeddings, request, videos, usable, answers, folder).items():
            answers[index]["video_embedding"] = embedding
            if text_embeddings is not None:
                answers[index]["text_embeddings"] = text_embeddings

    def _per_video(self, run, request, videos, usable, answers, folder) -> dict:
        """`run(paths)` on the usable videos in one batch; if a video cannot be read, each one alone, so that the
        error is reported for that video only. Only the processor's errors about a video (`ValueError`,
        `FileNotFoundError`) are the client's; anything else is the server's and propagates."""
        if not usable:
            return {}
        paths = [videos[index] for index in usable]
        try:
            return dict(zip(usable, run(paths)))
        except (ValueError, FileNotFoundError) as error:
            if request["single"]:
                raise RequestError(self._client_message(error, usable[0], request, folder)) from None
        results = {}
        for index in usable:
            try:
                results[index] = run([videos[index]])[0]
            except (ValueError, FileNotFoundError) as error:
                answers[index] = {"error": self._client_message(error, index, request, folder)}
        return results

    def _client_message(self, error: Exception, index: int, request: dict, folder: str) -> str:
        """The processor's message, naming the video as the request did instead of the temporary file."""
        where = "video" if request["single"] else f"videos[{index}]"
        video = request["videos"][index]
        shown = f"{where} ({_shown(video)})" if isinstance(video, str) and len(video) <= _MAX_SHOWN else where
        message = str(error).replace(os.path.join(folder, f"video-{index}"), shown)
        return message.replace(folder, "<request folder>")


def _hub_task_answer(request: dict, answers: list[dict]):
    """The answer of the Hub's video-classification task (`huggingface_hub` `VideoClassificationOutputElement`, and
    `ZeroShotImageClassificationOutputElement` for the zero-shot form): `[{"label", "score"}, ...]` best first for
    one video, a list of those for a list of videos. The schema has no place for one video's error, so a video that
    cannot be used fails the request, naming it."""
    for answer in answers:
        if "error" in answer:
            raise RequestError(answer["error"])
    labels = [answer["labels"] for answer in answers]
    return labels[0] if request["single"] else labels


def _check_finite(answers: list[dict]) -> None:
    """Raises `ModelOutputError` when any number of the answers (scores, embeddings) is NaN or infinite."""
    stack = list(answers)
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ModelOutputError(
                "The model's scores or embeddings are NaN or infinite: the checkpoint's weights or logit_scale are "
                "broken, so no answer was given."
            )


def _looks_like_base64(text: str) -> bool:
    """Whether a string is written in the base64 alphabet, with MIME line breaks or not (the decision never depends
    on which files exist)."""
    if not text.isascii():
        return False
    compact = text.encode("ascii").translate(None, _BASE64_WHITESPACE)
    body = compact.rstrip(b"=")
    return 0 < len(compact) and len(compact) % 4 == 0 and len(compact) - len(body) <= 2 \
        and not body.translate(None, _BASE64_ALPHABET)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."

