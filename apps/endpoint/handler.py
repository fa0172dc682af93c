"""Inference Endpoints handler for a CLIP2Video checkpoint (copied next to the weights as `handler.py`).

The service builds `EndpointHandler(path)` once and calls it with the JSON body of every request:

    {"inputs": {"video": VIDEO, "candidate_labels": ["cooking", "dancing"]}}   -> zero-shot classification
    {"inputs": {"video": VIDEO, "texts": ["a man cooks", "a girl dances"]}}    -> one score per text
    {"inputs": {"video": VIDEO}, "parameters": {"return_embeddings": true}}    -> the video's embedding

VIDEO is an `http(s)` URL, a path on the endpoint, base64-encoded file bytes (optionally as a `data:` URI), or the
raw bytes of a request sent with a video content type (then `inputs` is those bytes and the labels or texts go in
`parameters`, where they may also be given for the other forms). `parameters.hypothesis_template` (default
`"a video of {}."`) turns labels into captions; `parameters.return_embeddings` adds the L2-normalised embeddings
(`video_embedding`, and `text_embeddings` when texts or labels are given) whose scaled dot product is the score.

Answers:
    labels:   `{"labels": [{"label": str, "score": float}, ...]}`, sorted, scores are probabilities over the labels;
    texts:    `{"scores": [{"text": str, "score": float}, ...]}` in the order given, scores are the model's
              `logits_per_text` (scaled cosine similarities);
    `timestamps`: the seconds of the frames the model saw.
A malformed request or an unreadable video gets `{"error": message}` naming what is wrong; the handler keeps
serving. Imports only torch, transformers and the standard library (PyAV decodes, see requirements.txt).
"""

import base64
import binascii
import math
import os
import tempfile

import torch
from transformers import AutoModel, AutoProcessor


DEFAULT_HYPOTHESIS_TEMPLATE = "a video of {}."
KNOWN_INPUT_KEYS = {"video", "candidate_labels", "texts"}
KNOWN_PARAMETERS = {"candidate_labels", "texts", "hypothesis_template", "return_embeddings"}


class RequestError(ValueError):
    """The request is malformed; the message says how."""


class EndpointHandler:
    def __init__(self, path: str = ""):
        self.model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)

    def __call__(self, data: dict) -> dict:
        try:
            return self._answer(data)
        except (RequestError, FileNotFoundError, ValueError) as error:
            # Bad input (including the processor's errors for unreadable videos): report it, keep serving.
            return {"error": str(error)}

    def _answer(self, data) -> dict:
        if not isinstance(data, dict) or "inputs" not in data:
            raise RequestError('The request must be a JSON object with "inputs" (and optionally "parameters").')
        inputs, parameters = data["inputs"], data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise RequestError('"parameters" must be a JSON object.')
        unknown = set(parameters) - KNOWN_PARAMETERS
        if unknown:
            raise RequestError(f"Unknown parameters {sorted(unknown)}; expected some of {sorted(KNOWN_PARAMETERS)}.")
        if isinstance(inputs, dict):
            unknown = set(inputs) - KNOWN_INPUT_KEYS
            if unknown:
                raise RequestError(f"Unknown inputs {sorted(unknown)}; expected some of {sorted(KNOWN_INPUT_KEYS)}.")
            if "video" not in inputs:
                raise RequestError('"inputs" has no "video".')
            fields = {**parameters, **{key: value for key, value in inputs.items() if key != "video"}}
            video = inputs["video"]
        else:
            fields, video = parameters, inputs

        labels, texts = fields.get("candidate_labels"), fields.get("texts")
        if labels is not None and texts is not None:
            raise RequestError('Give either "candidate_labels" or "texts", not both.')
        return_embeddings = fields.get("return_embeddings", False)
        if not isinstance(return_embeddings, bool):
            raise RequestError('"return_embeddings" must be true or false.')
        if labels is None and texts is None and not return_embeddings:
            raise RequestError('Give "candidate_labels" or "texts" to score, or set "return_embeddings": true.')
        template = fields.get("hypothesis_template", DEFAULT_HYPOTHESIS_TEMPLATE)
        if not isinstance(template, str) or "{}" not in template:
            raise RequestError(f'"hypothesis_template" must be a string containing {{}}, got {template!r}.')
        if labels is not None:
            labels = _string_list(labels, "candidate_labels")
            captions = [template.format(label) for label in labels]
        else:
            captions = None if texts is None else _string_list(texts, "texts")

        with _local_video(video) as video_path, torch.no_grad():
            try:
                video_inputs = self.processor(videos=[video_path], return_tensors="pt", return_timestamps=True)
            except ValueError as error:
                if video_path == video:
                    raise
                raise RequestError(str(error).replace(video_path, "the video sent in the request")) from None
            video_embeds = self.model.get_video_features(
                pixel_values_videos=video_inputs["pixel_values_videos"].to(self.model.dtype),
                video_mask=video_inputs["video_mask"],
            )
            answer = {"timestamps": [t for t in video_inputs["video_timestamps"][0].tolist() if not math.isnan(t)]}
            if captions is not None:
                text_inputs = self.processor(text=captions, return_tensors="pt")
                text_embeds = self.model.get_text_features(
                    input_ids=text_inputs["input_ids"], attention_mask=text_inputs["attention_mask"]
                )
                logits = (self.model.logit_scale.exp() * text_embeds @ video_embeds.T)[:, 0].float()
                if labels is not None:
                    probabilities = logits.softmax(dim=0).tolist()
                    ranked = sorted(zip(labels, probabilities), key=lambda pair: -pair[1])
                    answer["labels"] = [{"label": label, "score": score} for label, score in ranked]
                else:
                    answer["scores"] = [
                        {"text": text, "score": score} for text, score in zip(captions, logits.tolist())
                    ]
                if return_embeddings:
                    answer["text_embeddings"] = text_embeds.float().tolist()
            if return_embeddings:
                answer["video_embedding"] = video_embeds[0].float().tolist()
        return answer


def _string_list(value, name: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item.strip() for item in value):
        raise RequestError(f'"{name}" must be a non-empty list of non-empty strings, got {value!r}.')
    return value


class _local_video:
    """The video of a request as something the processor reads: a URL or path as given, bytes written to a
    temporary file (removed afterwards)."""

    def __init__(self, video):
        self.video = video
        self.temporary = None

    def __enter__(self) -> str:
        video = self.video
        if isinstance(video, str) and video.startswith(("http://", "https://")):
            return video
        if isinstance(video, str) and not video.startswith("data:") and os.path.isfile(video):
            return video
        if isinstance(video, (bytes, bytearray)):
            content = bytes(video)
        elif isinstance(video, str):
            content = _decode_base64(video)
        else:
            raise RequestError(
                f'"video" must be a URL, a path or base64-encoded bytes (a string), got {type(video).__name__}.'
            )
        if not content:
            raise RequestError('"video" is empty.')
        with tempfile.NamedTemporaryFile(prefix="request-video-", suffix=".video", delete=False) as file:
            file.write(content)
            self.temporary = file.name
        return self.temporary

    def __exit__(self, *exc_info):
        if self.temporary is not None:
            os.unlink(self.temporary)


def _decode_base64(video: str) -> bytes:
    payload = video.split(",", 1)[1] if video.startswith("data:") and "," in video else video
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        shown = video if len(video) <= 80 else video[:77] + "..."
        raise RequestError(
            f'"video" {shown!r} is neither an http(s) URL, an existing file on the endpoint, nor base64-encoded bytes.'
        ) from None
