"""Pipelines for CLIP2Video checkpoints: zero-shot video classification and text-to-video retrieval.

This file is remote code: `pipelines.add_custom_pipelines(folder)` copies it into a checkpoint folder and lists both
pipelines under `custom_pipelines` in its `config.json`, so that anywhere

    from transformers import pipeline

    classifier = pipeline("zero-shot-video-classification", model=folder, trust_remote_code=True)
    classifier("clip.mp4", candidate_labels=["cooking", "playing guitar"])

    retriever = pipeline("text-to-video-retrieval", model=folder, trust_remote_code=True)
    retriever("a man is cooking", videos=["a.mp4", "b.mp4"])

work with only torch and transformers installed (plus PyAV to decode files). The model and the processor are the
checkpoint's own (`AutoModel` / `AutoProcessor`), loaded by transformers' pipeline machinery; errors of the processor
(missing file: `FileNotFoundError`, undecodable video: `ValueError`, both naming the input) reach the caller unchanged.
"""

import os

import torch
from transformers.pipelines.base import ChunkPipeline, Pipeline


ZERO_SHOT_TASK = "zero-shot-video-classification"
RETRIEVAL_TASK = "text-to-video-retrieval"
DEFAULT_HYPOTHESIS_TEMPLATE = "a video of {}."


def _video_name(video) -> str | None:
    """The path or URL of a video given as one, else None (frames have no name)."""
    return os.fspath(video) if isinstance(video, (str, os.PathLike)) else None


def _first_of_batch(value):
    """Inputs shared by every video of a batch are stored once per video; batching turns them into a list."""
    return value[0] if isinstance(value, list) else value


class _ThroughTheProcessor:
    """Both pipelines work through the checkpoint's one multimodal processor: the pipeline machinery loads it (and no
    separate tokenizer or video processor), and `save_pretrained` saves it too. (`Pipeline.save_pretrained` writes the
    model, the pipeline's code and `custom_pipelines`, this task only, but not a multimodal processor: without it the
    folder could not be loaded back.)"""

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def save_pretrained(self, save_directory, **kwargs):
        super().save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory)


class CLIP2VideoZeroShotVideoClassificationPipeline(_ThroughTheProcessor, Pipeline):
    r"""
    Zero-shot video classification: scores a video against free-form labels, each turned into a caption with
    `hypothesis_template` (`"a video of {}."`), as CLIP does for images. Scores are the softmax over the labels of
    the model's `logits_per_video`.

    Call with one video or a list of videos (paths, `http(s)` URLs, or 4D arrays / tensors of frames
    `(frames, height, width, channels)` uint8) and `candidate_labels`; `batch_size=N` runs N videos per forward
    pass. Returns, per video, `[{"label": str, "score": float}, ...]` sorted by decreasing score (`top_k` keeps the
    first k).
    """

    def __call__(self, videos, candidate_labels=None, **kwargs):
        """Classify `videos` (one, or a list) into `candidate_labels` (a list of strings, or one comma-separated
        string)."""
        return super().__call__(videos, candidate_labels=candidate_labels, **kwargs)

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template=None, top_k=None, **loading_kwargs):
        # `pipeline()` also hands over its own loading options (e.g. `local_files_only`): not ours to use.
        preprocess_params = {}
        if candidate_labels is not None:
            preprocess_params["candidate_labels"] = candidate_labels
        if hypothesis_template is not None:
            preprocess_params["hypothesis_template"] = hypothesis_template
        postprocess_params = {"top_k": top_k} if top_k is not None else {}
        return preprocess_params, {}, postprocess_params

    def preprocess(self, video, candidate_labels=None, hypothesis_template=DEFAULT_HYPOTHESIS_TEMPLATE):
        labels = _label_list(candidate_labels)
        if "{}" not in hypothesis_template:
            raise ValueError(f"hypothesis_template must contain '{{}}' for the label, got {hypothesis_template!r}.")
        captions = [hypothesis_template.format(label) for label in labels]
        text_inputs = self.processor(text=captions, return_tensors="pt")
        video_inputs = self.processor(videos=[video], return_tensors="pt")
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

    def postprocess(self, model_outputs, top_k=None):
        labels = _one_label_list(model_outputs["candidate_labels"])
        scores = model_outputs["logits"].reshape(-1, len(labels))[0].float().softmax(dim=-1).tolist()
        ranked = sorted(zip(scores, labels), key=lambda pair: -pair[0])
        if top_k is not None:
            ranked = ranked[:top_k]
        return [{"label": label, "score": score} for score, label in ranked]


class CLIP2VideoTextToVideoRetrievalPipeline(_ThroughTheProcessor, ChunkPipeline):
    r"""
    Text-to-video retrieval: ranks videos for a text query by the model's `logits_per_text` (the scaled similarity
    `logit_scale.exp() * text_embeds @ video_embeds.T`; higher is better, comparable across videos for one query).

    Call with the query (a string, or a list of strings for several queries over the same videos) and
    `videos=[...]` (paths, `http(s)` URLs or 4D frame arrays); `batch_size=N` runs N videos per forward pass.
    Returns `[{"video": path or None, "index": int, "score": float, "timestamps": [seconds, ...]}, ...]` sorted by
    decreasing score (ties keep the input order; `top_k` keeps the first k). `timestamps` are the times of the frames
    the model saw (empty for frames given without a frame rate). Videos are decoded again for every query: to search
    a fixed collection with many queries, index it once (`apps/search`).
    """

    def __call__(self, text, videos=None, **kwargs):
        return super().__call__(text, videos=videos, **kwargs)

    def _sanitize_parameters(self, videos=None, top_k=None, **loading_kwargs):
        # `pipeline()` also hands over its own loading options (e.g. `local_files_only`): not ours to use.
        preprocess_params = {"videos": videos} if videos is not None else {}
        postprocess_params = {"top_k": top_k} if top_k is not None else {}
        return preprocess_params, {}, postprocess_params

    def preprocess(self, text, videos=None):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"The query must be a non-empty string, got {text!r}.")
        if videos is None or isinstance(videos, (str, os.PathLike)) or hasattr(videos, "ndim") or len(videos) == 0:
            # One video's frames (an array) would otherwise be taken as a list of one-frame videos.
            raise ValueError("Pass the videos to rank as a non-empty list: `videos=[...]`.")
        text_inputs = self.processor(text=[text], return_tensors="pt")
        for index, video in enumerate(videos):
            video_inputs = self.processor(videos=[video], return_tensors="pt", return_timestamps=True)
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


def _label_list(candidate_labels) -> list[str]:
    if isinstance(candidate_labels, str):
        candidate_labels = [label.strip() for label in candidate_labels.split(",")]
    if not candidate_labels or not all(isinstance(label, str) and label.strip() for label in candidate_labels):
        raise ValueError(f"candidate_labels must be a non-empty list of non-empty strings, got {candidate_labels!r}.")
    return list(candidate_labels)
