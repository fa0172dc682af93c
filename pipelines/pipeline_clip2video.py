"""Pipelines for CLIP2Video checkpoints: zero-shot video classification and text-to-video retrieval.

This file is remote code: `clip2video.pipelines.publishing` copies it into a checkpoint folder and lists both
pipelines under `custom_pipelines` in its `config.json`, so that anywhere

    from transformers import pipeline

    classifier = pipeline("zero-shot-video-classification", model=folder, trust_remote_code=True)
    classifier("clip.mp4", candidate_labels=["cooking", "playing guitar"])

    retriever = pipeline("text-to-video-retrieval", model=folder, trust_remote_code=True)
    retriever("a man is cooking", videos=["a.mp4", "b.mp4"])

work with only torch and transformers installed (plus PyAV to decode files). The model and the processor are the
checkpoint's own (`AutoModel` / `AutoProcessor`), loaded by transformers' pipeline machinery; errors of the processor
(missing file: `FileNotFoundError`, undecodable video or a video over the decoding limits: `ValueError`, both naming
the input) reach the caller unchanged.

Inputs follow `Pipeline.__call__`: one video gives one answer, a list or tuple of videos a list of answers, and a
generator, a `torch.utils.data.Dataset` (e.g. `KeyDataset(dataset, "video")`) or any other iterable of videos is
streamed (an iterator of answers, decoded as it is consumed; `batch_size` and `num_workers` apply). Arguments are
checked before any video is decoded: empty or wrongly typed videos, labels and queries, a `hypothesis_template`
without exactly one `{}`, a `top_k` that is not a positive integer, a `num_frames` the model cannot take and unknown
arguments are `ValueError`s; a streamed video is checked when its turn comes. `zero-shot-video-classification` is also
registered as `video-classification`, the task the Hub shows for `pipeline_tag: video-classification`, so its snippet
runs as shown, and it takes `VideoClassificationPipeline`'s arguments (`inputs=`, `top_k`, `num_frames`,
`function_to_apply`; `frame_sampling_rate` is refused with the reason).
"""

import math
import os
import shutil
import sys
import tempfile
import types

import torch
from transformers.pipelines.base import ChunkPipeline, Pipeline


ZERO_SHOT_TASK = "zero-shot-video-classification"
# The Hub's snippet for a `pipeline_tag: video-classification` card calls this task name.
HUB_VIDEO_CLASSIFICATION_TASK = "video-classification"
RETRIEVAL_TASK = "text-to-video-retrieval"
DEFAULT_HYPOTHESIS_TEMPLATE = "a video of {}."
# Keyword arguments `pipeline()` hands every pipeline it builds (loading options, not call arguments).
_PIPELINE_LOADING_KWARGS = {"local_files_only"}
_SCORE_FUNCTIONS = ("softmax", "sigmoid", "none")


def _video_name(video) -> str | None:
    """The path or URL of a video given as one, else None (frames and bytes have no name)."""
    return os.fspath(video) if isinstance(video, (str, os.PathLike)) else None


def _first_of_batch(value):
    """Inputs shared by every video of a batch are stored once per video; batching turns them into a list."""
    return value[0] if isinstance(value, list) else value


def _is_one_video(video) -> bool:
    """A path or URL, the bytes of a file, a binary file object, a `datasets.Video(decode=False)` dict
    (`{"path", "bytes"}`), a torchcodec decoder (what `datasets.Video()` decodes to), or one video's frames as a 4D
    array or tensor."""
    if isinstance(video, (str, os.PathLike, bytes, bytearray, memoryview)):
        return True
    if isinstance(video, dict):
        return bool(video) and set(video) <= {"path", "bytes"}
    if type(video).__module__.startswith("torchcodec.") and hasattr(video, "get_frames_at"):
        return True
    if hasattr(video, "ndim") and hasattr(video, "shape"):
        return video.ndim == 4
    return callable(getattr(video, "read", None))


def _is_stream(inputs) -> bool:
    """Inputs `Pipeline.__call__` streams: a generator or a torch `Dataset` (`KeyDataset`). Other iterables that are
    not one video (a `datasets` column, a `map` object) are streamed through a generator."""
    if isinstance(inputs, (list, tuple, dict, str, bytes, bytearray, memoryview)) or _is_one_video(inputs):
        return False
    if hasattr(inputs, "ndim") and hasattr(inputs, "shape"):
        return False  # an array or tensor of the wrong rank is a mistake, never a stream of its rows
    return isinstance(inputs, (types.GeneratorType, torch.utils.data.Dataset)) or hasattr(inputs, "__iter__")


def as_pipeline_inputs(inputs, argument: str = "videos"):
    """The inputs in the form `Pipeline.__call__` dispatches on: a tuple becomes a list (a batch, as the docs promise;
    transformers would take it as one input), a stream stays lazy (a generator or a torch `Dataset`; other iterables
    are wrapped in a generator), one video or a list is checked now with `check_videos`."""
    if _is_stream(inputs):
        if isinstance(inputs, (types.GeneratorType, torch.utils.data.Dataset)):
            return inputs
        return (item for item in inputs)
    checked = check_videos(inputs, argument)
    return list(checked) if isinstance(checked, tuple) else checked


def check_videos(videos, argument: str = "videos"):
    """`videos` unchanged if it is one video or a non-empty list or tuple of videos; otherwise a `ValueError` naming
    the problem (empty lists, empty strings, wrong types), raised before any work. Streams are checked one video at a
    time, in `preprocess`."""
    if isinstance(videos, (list, tuple)):
        if not videos:
            raise ValueError(f"`{argument}` is an empty list: pass at least one video.")
        named = [(f"`{argument}[{index}]`", video) for index, video in enumerate(videos)]
    else:
        named = [(f"`{argument}`", videos)]
    for where, video in named:
        if isinstance(video, str) and not video.strip():
            raise ValueError(f"{where} is an empty string; expected a path or an http(s) URL.")
        if not _is_one_video(video):
            shape = f" of shape {tuple(video.shape)}" if hasattr(video, "shape") else ""
            raise ValueError(
                f"{where} is a {type(video).__name__}{shape}; expected a path or http(s) URL, the bytes of a video "
                "file, a binary file object, a {'path', 'bytes'} dict, a torchcodec decoder, or a 4D array or tensor "
                "of frames (frames, height, width, channels). Pass several videos as a list, a generator or a "
                "dataset."
            )
    return videos


def check_labels(candidate_labels) -> list[str]:
    """The labels as a list of non-empty strings (one comma-separated string is split), or a `ValueError`."""
    if isinstance(candidate_labels, str):
        candidate_labels = [label.strip() for label in candidate_labels.split(",")]
    if not isinstance(candidate_labels, (list, tuple)) or not candidate_labels:
        raise ValueError(
            f"`candidate_labels` must be a non-empty list of strings (or one comma-separated string), got "
            f"{_shown(candidate_labels)}."
        )
    for index, label in enumerate(candidate_labels):
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"`candidate_labels[{index}]` must be a non-empty string, got {_shown(label)}.")
    return list(candidate_labels)


def check_hypothesis_template(hypothesis_template) -> str:
    """A template holding exactly one `{}` (filled by `str.replace`, never `str.format`: braces in labels or in the
    template are plain text), or a `ValueError`."""
    if not isinstance(hypothesis_template, str) or hypothesis_template.count("{}") != 1:
        raise ValueError(
            f"`hypothesis_template` must be a string with exactly one '{{}}' where the label goes, got "
            f"{_shown(hypothesis_template)}."
        )
    return hypothesis_template


def hypothesis_captions(labels: list[str], hypothesis_template: str) -> list[str]:
    """The caption of every label: the template with its `{}` replaced by the label."""
    return [hypothesis_template.replace("{}", label, 1) for label in labels]


def check_top_k(top_k) -> int | None:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be a positive integer (or None for all), got {_shown(top_k)}.")
    return top_k


def check_num_frames(num_frames, model_config) -> int | None:
    """At most `num_frames` frames per video (the processor's `num_frames`, the paper's `max_frames`): a positive
    integer the model's frame-position table can take, or a `ValueError` before any decoding."""
    if num_frames is None:
        return None
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"`num_frames` must be a positive integer, got {_shown(num_frames)}.")
    limit = getattr(model_config, "max_frame_positions", None)
    if getattr(model_config, "uses_frame_positions", False) and limit is not None and num_frames > limit:
        raise ValueError(f"`num_frames`={num_frames} exceeds the model's frame-position table ({limit} frames).")
    return num_frames


def refuse_frame_sampling_rate(frame_sampling_rate) -> None:
    """`VideoClassificationPipeline`'s `frame_sampling_rate` takes every k-th frame of the video's start; CLIP2Video
    sees the frames of the paper's rule instead (5 per second over the whole video, then `num_frames` of them
    uniformly), which no stride expresses. Taking it silently would answer for frames other than those asked for."""
    if frame_sampling_rate is not None:
        raise ValueError(
            f"`frame_sampling_rate`={_shown(frame_sampling_rate)} is not supported: CLIP2Video samples the paper's "
            "frames (5 per second over the whole video, then `num_frames` of them uniformly), not every k-th frame "
            "from the start. Leave it out; `num_frames` sets how many frames are used."
        )


def check_timeout(timeout) -> float | None:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf
    ):
        raise ValueError(f"`timeout` must be a positive number of seconds, got {_shown(timeout)}.")
    return None if timeout is None else float(timeout)


def rank_labels(logits: torch.Tensor, labels: list[str], top_k: int | None = None, function_to_apply="softmax"):
    """`[{"label", "score"}, ...]` of one video, highest score first (ties keep the label order).

    Args:
        logits (`torch.Tensor` of shape `(num_labels,)`): the video's `logits_per_video` row.
        function_to_apply (`str`): `"softmax"` (probabilities over the labels), `"sigmoid"` (of each logit alone, as
            `VideoClassificationPipeline` offers; CLIP logits are scaled by `logit_scale.exp()`, so it saturates) or
            `"none"` (the scaled cosine similarities themselves, comparable across calls).
    """
    logits = logits.reshape(-1).float()
    if function_to_apply == "softmax":
        scores = logits.softmax(dim=-1)
    elif function_to_apply == "sigmoid":
        scores = logits.sigmoid()
    else:
        scores = logits
    ranked = sorted(zip(scores.tolist(), range(len(labels))), key=lambda pair: (-pair[0], pair[1]))
    return [{"label": labels[index], "score": score} for score, index in ranked[:top_k]]


def _check_unknown(pipeline_name: str, kwargs: dict, known: list[str]) -> None:
    unknown = sorted(set(kwargs) - _PIPELINE_LOADING_KWARGS)
    if unknown:
        raise ValueError(f"{pipeline_name} got unknown arguments {unknown}; it takes {', '.join(known)}.")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _video_kwargs(timeout: float | None, num_frames: int | None = None) -> dict:
    # The processor's decode limits carry the URL timeout (`DecodeLimits.url_timeout_seconds`).
    kwargs = {"url_timeout_seconds": timeout} if timeout is not None else {}
    if num_frames is not None:
        kwargs["num_frames"] = num_frames
    return kwargs


class _ThroughTheProcessor:
    """Both pipelines work through the checkpoint's one multimodal processor: the pipeline machinery loads it (and no
    separate tokenizer or video processor), and `save_pretrained` saves it too (`Pipeline.save_pretrained` saves a
    tokenizer, feature extractor or image processor, never a multimodal processor: without it the folder could not
    be loaded back)."""

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _default_task: str

    def save_pretrained(self, save_directory, **kwargs):
        """The model, this pipeline's code and the processor. `config.json` lists this pipeline's task only, as
        transformers' `Pipeline.save_pretrained` does for a registered pipeline, so that
        `pipeline(model=folder, trust_remote_code=True)` infers it; transformers leaves a pipeline loaded from a
        checkpoint's `custom_pipelines` listing every task of that checkpoint, and copies no code for it."""
        if os.path.isfile(save_directory):
            raise ValueError(f"{save_directory} is a file: `save_pretrained` saves into a folder.")
        os.makedirs(save_directory, exist_ok=True)
        module_file = sys.modules[type(self).__module__].__file__
        _copy_file(module_file, os.path.join(save_directory, os.path.basename(module_file)))
        config = self.model.config
        had_pipelines, previous = hasattr(config, "custom_pipelines"), getattr(config, "custom_pipelines", None)
        impl = f"{os.path.splitext(os.path.basename(module_file))[0]}.{type(self).__name__}"
        config.custom_pipelines = {
            self.task or self._default_task: {"impl": impl, "pt": ["AutoModel"], "type": "multimodal"}
        }
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            if had_pipelines:
                config.custom_pipelines = previous
            else:
                del config.custom_pipelines
        self.processor.save_pretrained(save_directory)


def _copy_file(source: str, target: str) -> None:
    """`source` copied to `target`, written beside and renamed: a kill mid-copy leaves no half file."""
    if os.path.exists(target) and os.path.samefile(source, target):
        return
    handle, partial = tempfile.mkstemp(dir=os.path.dirname(target) or ".", suffix=".partial")
    os.close(handle)
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


class CLIP2VideoZeroShotVideoClassificationPipeline(_ThroughTheProcessor, Pipeline):
    r"""
    Zero-shot video classification: scores a video against free-form labels, each turned into a caption with
    `hypothesis_template` (`"a video of {}."`), as CLIP does for images. Scores are the softmax over the labels of
    the model's `logits_per_video` (`function_to_apply="none"`: the logits themselves).

    Call with one video, a list or tuple of videos, or a stream of them (generator, `KeyDataset`) — paths, `http(s)`
    URLs, bytes of video files, `datasets.Video()` items, or 4D arrays / tensors of frames
    `(frames, height, width, channels)` uint8 — as `inputs` (positional, or `inputs=` / `videos=`) and
    `candidate_labels`; `batch_size=N` runs N videos per forward pass, `num_workers` decodes in worker processes;
    `num_frames` caps the frames per video (the paper's `max_frames`, at most the model's frame-position table);
    `timeout` (seconds) bounds the wait for a URL's server. Returns, per video, `[{"label": str, "score": float}, ...]`
    sorted by decreasing score (`top_k` keeps the first k), the output of `VideoClassificationPipeline`.
    """

    _default_task = ZERO_SHOT_TASK
    _CALL_ARGUMENTS = [
        "inputs", "candidate_labels", "hypothesis_template", "top_k", "num_frames", "timeout", "function_to_apply",
        "batch_size", "num_workers",
    ]

    def __call__(self, inputs=None, candidate_labels=None, **kwargs):
        """Classify `inputs` (one video, a list or tuple, or a stream of videos) into `candidate_labels` (a list of
        strings, or one comma-separated string)."""
        if "videos" in kwargs:  # the name this pipeline's first argument had
            if inputs is not None:
                raise ValueError("Give the videos once: as `inputs` (or positionally) or as `videos`, not both.")
            inputs = kwargs.pop("videos")
        if inputs is None:
            raise ValueError("Pass the video(s) to classify: `classifier(video, candidate_labels=[...])`.")
        check_labels(candidate_labels)
        return super().__call__(as_pipeline_inputs(inputs), candidate_labels=candidate_labels, **kwargs)

    def _sanitize_parameters(
        self,
        candidate_labels=None,
        hypothesis_template=None,
        top_k=None,
        timeout=None,
        function_to_apply=None,
        num_frames=None,
        frame_sampling_rate=None,
        **kwargs,
    ):
        _check_unknown(type(self).__name__, kwargs, self._CALL_ARGUMENTS)
        refuse_frame_sampling_rate(frame_sampling_rate)
        preprocess_params = {}
        if candidate_labels is not None:
            preprocess_params["candidate_labels"] = check_labels(candidate_labels)
        if hypothesis_template is not None:
            preprocess_params["hypothesis_template"] = check_hypothesis_template(hypothesis_template)
        if timeout is not None:
            preprocess_params["timeout"] = check_timeout(timeout)
        if num_frames is not None:
            preprocess_params["num_frames"] = check_num_frames(num_frames, self.model.config)
        postprocess_params = {}
        if top_k is not None:
            postprocess_params["top_k"] = check_top_k(top_k)
        if function_to_apply is not None:
            if function_to_apply not in _SCORE_FUNCTIONS:
                choices = f"one of {_SCORE_FUNCTIONS}"
                raise ValueError(f"`function_to_apply` must be {choices}, got {_shown(function_to_apply)}.")
            postprocess_params["function_to_apply"] = function_to_apply
        return preprocess_params, {}, postprocess_params

    def preprocess(
        self, video, candidate_labels=None, hypothesis_template=DEFAULT_HYPOTHESIS_TEMPLATE, timeout=None,
        num_frames=None,
    ):
        check_videos(video)  # a streamed video is checked here, when its turn comes
        labels = check_labels(candidate_labels)
        captions = hypothesis_captions(labels, check_hypothesis_template(hypothesis_template))
        text_inputs = self.processor(text=captions, return_tensors="pt")
        video_inputs = self.processor(videos=[video], return_tensors="pt", **_video_kwargs(timeout, num_frames))
        return {
            "pixel_values_videos": video_inputs["pixel_values_videos"],
            "video_mask": video_inputs["video_mask"],
            "text_inputs": {"input_ids": text_inputs["input_ids"], "attention_mask": text_inputs["attention_mask"]},
            "candidate_labels": labels,
        }

    def _forward(self, model_inputs):
        text_inputs = _first_of_batch(model_inputs["text_inputs"])
        labels = _one_label_list(model_inputs["candidate_labels"])
        outputs = self.model(
            input_ids=text_inputs["input_ids"],
            attention_mask=text_inputs["attention_mask"],
            pixel_values_videos=model_inputs["pixel_values_videos"].to(self.model.dtype),
            video_mask=model_inputs["video_mask"],
        )
        num_videos = outputs.logits_per_video.shape[0]
        # The tensor comes first: batching reads the batch size from the first output.
        return {"logits": outputs.logits_per_video, "candidate_labels": [labels] * num_videos}

    def postprocess(self, model_outputs, top_k=None, function_to_apply="softmax"):
        labels = _one_label_list(model_outputs["candidate_labels"])
        logits = model_outputs["logits"].reshape(-1, len(labels))[0]
        return rank_labels(logits, labels, top_k, function_to_apply)


class CLIP2VideoTextToVideoRetrievalPipeline(_ThroughTheProcessor, ChunkPipeline):
    r"""
    Text-to-video retrieval: ranks videos for a text query by the model's `logits_per_text` (the scaled similarity
    `logit_scale.exp() * text_embeds @ video_embeds.T`; higher is better, comparable across videos for one query).

    Call with the query (a string; a list or tuple of strings, or a stream of them — generator, `KeyDataset` — for
    several queries over the same videos) and `videos=[...]` (a list or tuple: paths, `http(s)` URLs, bytes of video
    files, `datasets.Video()` items or 4D frame arrays); `batch_size=N` runs N videos per forward pass; `num_frames`
    caps the frames per video; `timeout` (seconds) bounds the wait for a URL's server.
    Returns `[{"video": path or None, "index": int, "score": float, "timestamps": [seconds, ...]}, ...]` sorted by
    decreasing score (ties keep the input order; `top_k` keeps the first k). `timestamps` are the times of the frames
    the model saw (empty for frames given without a frame rate). Videos are decoded again for every query: to search
    a fixed collection with many queries, index it once (`apps/search`).
    """

    _default_task = RETRIEVAL_TASK
    _CALL_ARGUMENTS = ["inputs", "videos", "top_k", "num_frames", "timeout", "batch_size", "num_workers"]

    def __call__(self, text=None, videos=None, **kwargs):
        if "inputs" in kwargs:  # `Pipeline.__call__`'s name for the first argument
            if text is not None:
                raise ValueError("Give the query once: as `text` (or positionally) or as `inputs`, not both.")
            text = kwargs.pop("inputs")
        if isinstance(text, tuple):
            text = list(text)
        if not _is_stream(text) or isinstance(text, str):
            queries = text if isinstance(text, list) else [text]
            if isinstance(text, list) and not text:
                raise ValueError("The query list is empty: pass a string, or a non-empty list of strings.")
            for query in queries:
                if not isinstance(query, str) or not query.strip():
                    raise ValueError(f"The query must be a non-empty string, got {_shown(query)}.")
        elif not isinstance(text, (types.GeneratorType, torch.utils.data.Dataset)):
            text = (query for query in text)
        if videos is None or not isinstance(videos, (list, tuple)) or not videos:
            # One video's frames (an array) would otherwise be taken as a list of one-frame videos.
            raise ValueError(f"Pass the videos to rank as a non-empty list: `videos=[...]`, got {_shown(videos)}.")
        check_videos(list(videos))
        return super().__call__(text, videos=list(videos), **kwargs)

    def _sanitize_parameters(self, videos=None, top_k=None, timeout=None, num_frames=None, **kwargs):
        _check_unknown(type(self).__name__, kwargs, self._CALL_ARGUMENTS)
        preprocess_params = {"videos": videos} if videos is not None else {}
        if timeout is not None:
            preprocess_params["timeout"] = check_timeout(timeout)
        if num_frames is not None:
            preprocess_params["num_frames"] = check_num_frames(num_frames, self.model.config)
        postprocess_params = {"top_k": check_top_k(top_k)} if top_k is not None else {}
        return preprocess_params, {}, postprocess_params

    def preprocess(self, text, videos=None, timeout=None, num_frames=None):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"The query must be a non-empty string, got {_shown(text)}.")
        if not isinstance(videos, list) or not videos:
            raise ValueError("Pass the videos to rank as a non-empty list: `videos=[...]`.")
        text_inputs = self.processor(text=[text], return_tensors="pt")
        for index, video in enumerate(videos):
            video_inputs = self.processor(
                videos=[video], return_tensors="pt", return_timestamps=True, **_video_kwargs(timeout, num_frames)
            )
            yield {
                "input_ids": text_inputs["input_ids"],
                "attention_mask": text_inputs["attention_mask"],
                "pixel_values_videos": video_inputs["pixel_values_videos"],
                "video_mask": video_inputs["video_mask"],
                "video_timestamps": video_inputs["video_timestamps"],
                "video": _video_name(video),
                "index": index,
                "is_last": index == len(videos) - 1,
            }

    def _forward(self, model_inputs):
        # Every row of input_ids is the same query (it is stored with each video so that videos can be batched).
        outputs = self.model(
            input_ids=model_inputs["input_ids"][:1],
            attention_mask=model_inputs["attention_mask"][:1],
            pixel_values_videos=model_inputs["pixel_values_videos"].to(self.model.dtype),
            video_mask=model_inputs["video_mask"],
        )
        return {
            "score": outputs.logits_per_text[0],
            "video_timestamps": model_inputs["video_timestamps"],
            "video": model_inputs["video"],
            "index": model_inputs["index"],
            "is_last": model_inputs["is_last"],
        }

    def postprocess(self, all_outputs, top_k=None):
        results = []
        for output in all_outputs:
            timestamps = output["video_timestamps"].reshape(-1)
            results.append(
                {
                    "video": _first_of_batch(output["video"]),
                    "index": int(_first_of_batch(output["index"])),
                    "score": float(output["score"].reshape(-1)[0]),
                    "timestamps": [round(float(t), 6) for t in timestamps[~torch.isnan(timestamps)]],
                }
            )
        results.sort(key=lambda result: (-result["score"], result["index"]))
        return results[:top_k] if top_k is not None else results


def _one_label_list(labels: list) -> list[str]:
    """The labels of one video, from one list or from a list of them (one per video of a batch, all equal)."""
    return labels[0] if isinstance(labels[0], list) else labels
