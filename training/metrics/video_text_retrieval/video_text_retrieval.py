"""Text-to-video and video-to-text retrieval metrics (R@K, median rank, mean rank).

An `evaluate` metric module: load it offline with
`evaluate.load("training/metrics/video_text_retrieval")`, or import `compute_retrieval_metrics` directly.

Inputs follow the evaluation of CLIP4Clip / CLIP2Video:

- `predictions`: the similarity matrix, one row per caption (query text), one column per video: `[num_captions,
  num_videos]`. Higher is more similar (cosine similarities or the model's logits).
- `references`: for each caption, the column index of its own video: `[num_captions]`.

One caption per video (MSR-VTT 1k-A) is `references = range(num_videos)`. Many captions per video (MSVD, VATEX,
MSR-VTT full) is the multi-caption protocol: a caption retrieves correctly if the top video is its own; for
video-to-text a video is ranked by its best-ranked own caption.

Ties are ranked pessimistically: the rank of the correct item is 1 + the number of wrong candidates that score at
least as high. A model that gives every pair the same score therefore ranks last, not first. (CLIP4Clip's
`compute_metrics` neither: `np.where(sorted - diagonal == 0)` yields one rank per tied position, so a row with a k-way
tie contributes k ranks, every position of the tie, and the denominator grows to more than the number of queries; its
multi-caption text-to-video path breaks ties by the order `torch.argsort` returns. Real-valued similarities of a
trained model almost never tie, so this matters for degenerate models, fp16 logits and hand-made tests.)

Video-to-text with many captions per video has two conventions, chosen by `video_to_text_candidates`:

- `"videos"` (default, CLIP4Clip / CLIP2Video, so their published MSVD/VATEX numbers are comparable): the candidates
  are the videos' caption sets, each scored by its best caption for the query video; rank of the own set.
- `"captions"` (Collaborative Experts style): the candidates are all captions; rank of the best own caption.
  R@1 is the same in both; R@5, R@10 and the ranks differ.

Dual softmax (DSL, Cheng et al. 2021, "Improving Video-Text Retrieval by Multi-Stream Corpus Alignment and Dual
Softmax Loss") is an opt-in, inference-time re-weighting that uses the whole test set of queries at once
(transductive): `sim * softmax(temperature * sim)` taken over the other modality. Its results are returned under
keys prefixed `dsl_` so they are never confused with plain retrieval.
"""

import datasets
import evaluate
import numpy as np

_CITATION = """\
@article{fang2021clip2video,
  title={CLIP2Video: Mastering Video-Text Retrieval via Image CLIP},
  author={Fang, Han and Xiong, Pengfei and Xu, Luhui and Chen, Yu},
  journal={arXiv preprint arXiv:2106.11097},
  year={2021}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: similarity matrix rows, `[num_captions][num_videos]` floats (caption i against every video).
    references: `[num_captions]` ints, the column of each caption's own video.
    video_to_text_candidates: "videos" (default, CLIP4Clip/CLIP2Video) or "captions" (see the module docstring).
    dual_softmax: if True, compute the metrics after inference-time dual softmax; keys are prefixed `dsl_`.
    dual_softmax_temperature: multiplies the similarities inside the softmax (1.0 for logits already scaled by the
        model's logit scale; about 100 for raw cosine similarities).
Returns:
    `t2v_R1`, `t2v_R5`, `t2v_R10` (percent), `t2v_MedianR`, `t2v_MeanR`, the same with `v2t_`,
    and `num_captions`, `num_videos`.
Examples:
    >>> metric = evaluate.load("training/metrics/video_text_retrieval")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 1])["t2v_R1"]
    100.0
"""

RECALL_AT = (1, 5, 10)


def _summarise(ranks: np.ndarray, prefix: str) -> dict:
    summary = {f"{prefix}R{k}": float(np.mean(ranks <= k) * 100.0) for k in RECALL_AT}
    summary[f"{prefix}MedianR"] = float(np.median(ranks))
    summary[f"{prefix}MeanR"] = float(np.mean(ranks))
    return summary


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def text_to_video_ranks(similarity: np.ndarray, video_index: np.ndarray) -> np.ndarray:
    """Pessimistic rank (1 = best) of each caption's own video among all videos. Shapes: `[Nt, Nv]`, `[Nt]` -> `[Nt]`."""
    own_score = similarity[np.arange(len(video_index)), video_index]
    # Counts the own video itself once, so this is 1 + the wrong videos scoring at least as high.
    return (similarity >= own_score[:, None]).sum(axis=1)


def best_caption_per_video(similarity: np.ndarray, video_index: np.ndarray, num_videos: int) -> np.ndarray:
    """`[Nv_candidates, Nv_queries]`: entry (u, v) is the best similarity of a caption of video u to video v."""
    order = np.argsort(video_index, kind="stable")
    sorted_index = video_index[order]
    group_starts = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
    if len(group_starts) != num_videos:
        missing = sorted(set(range(num_videos)) - set(sorted_index.tolist()))
        raise ValueError(f"video-to-text needs at least one caption per video; videos without captions: {missing[:10]}")
    return np.maximum.reduceat(similarity[order], group_starts, axis=0)


def video_to_text_ranks(similarity: np.ndarray, video_index: np.ndarray, candidates: str = "videos") -> np.ndarray:
    """Pessimistic rank (1 = best) of each video's best-ranked own caption. Shapes: `[Nt, Nv]`, `[Nt]` -> `[Nv]`."""
    num_videos = similarity.shape[1]
    best_per_video = best_caption_per_video(similarity, video_index, num_videos)
    best_own = np.diagonal(best_per_video)
    if candidates == "videos":
        return (best_per_video >= best_own[None, :]).sum(axis=0)
    if candidates == "captions":
        is_other_caption = video_index[:, None] != np.arange(num_videos)[None, :]
        return 1 + ((similarity >= best_own[None, :]) & is_other_caption).sum(axis=0)
    raise ValueError(f"video_to_text_candidates must be 'videos' or 'captions', got {candidates!r}")


def compute_retrieval_metrics(
    similarity,
    video_index,
    video_to_text_candidates: str = "videos",
    dual_softmax: bool = False,
    dual_softmax_temperature: float = 1.0,
) -> dict:
    """Retrieval metrics from a `[num_captions, num_videos]` similarity matrix; see the module docstring."""
    similarity = np.asarray(similarity, dtype=np.float64)
    video_index = np.asarray(video_index, dtype=np.int64)
    if similarity.ndim != 2 or video_index.shape != (similarity.shape[0],):
        raise ValueError(
            f"expected similarity [num_captions, num_videos] and video_index [num_captions], got "
            f"{similarity.shape} and {video_index.shape}"
        )
    if not np.isfinite(similarity).all():
        raise ValueError("similarity contains NaN or infinite values")
    if video_index.min(initial=0) < 0 or video_index.max(initial=0) >= similarity.shape[1]:
        raise ValueError(f"video_index must lie in [0, {similarity.shape[1]}), got {video_index.min()}..{video_index.max()}")

    if dual_softmax:
        scaled = similarity * dual_softmax_temperature
        # Text-to-video ranks videos for a caption, weighted by how strongly each video prefers this caption over
        # all captions (softmax over the caption axis), and symmetrically for video-to-text.
        text_to_video_similarity = similarity * _softmax(scaled, axis=0)
        video_to_text_similarity = similarity * _softmax(scaled, axis=1)
        prefix = "dsl_"
    else:
        text_to_video_similarity = video_to_text_similarity = similarity
        prefix = ""

    results = {}
    results.update(_summarise(text_to_video_ranks(text_to_video_similarity, video_index), f"{prefix}t2v_"))
    results.update(
        _summarise(
            video_to_text_ranks(video_to_text_similarity, video_index, video_to_text_candidates), f"{prefix}v2t_"
        )
    )
    results["num_captions"] = int(similarity.shape[0])
    results["num_videos"] = int(similarity.shape[1])
    return results


@evaluate.utils.file_utils.add_start_docstrings(__doc__, _KWARGS_DESCRIPTION)
class VideoTextRetrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
            codebase_urls=["https://github.com/CryhanFang/CLIP2Video", "https://github.com/ArrowLuo/CLIP4Clip"],
        )

    def _compute(
        self,
        predictions,
        references,
        video_to_text_candidates: str = "videos",
        dual_softmax: bool = False,
        dual_softmax_temperature: float = 1.0,
    ):
        return compute_retrieval_metrics(
            np.asarray(predictions),
            np.asarray(references),
            video_to_text_candidates=video_to_text_candidates,
            dual_softmax=dual_softmax,
            dual_softmax_temperature=dual_softmax_temperature,
        )
