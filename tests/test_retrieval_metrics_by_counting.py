"""`compute_retrieval_metrics` against a plain count, query by query, on random similarity matrices with ties, one or
several captions per video, both video-to-text conventions and dual softmax: every R@K, median rank and mean rank
must agree, on rank distributions whose median and mean differ."""

import math
import random
import statistics

import numpy as np
import pytest

from clip2video.training.metrics.video_text_retrieval.video_text_retrieval import compute_retrieval_metrics


def summary(ranks: list[int], prefix: str) -> dict[str, float]:
    metrics = {f"{prefix}R{k}": 100.0 * sum(rank <= k for rank in ranks) / len(ranks) for k in (1, 5, 10)}
    metrics[f"{prefix}MedianR"] = float(statistics.median(ranks))
    metrics[f"{prefix}MeanR"] = sum(ranks) / len(ranks)
    return metrics


def counted_metrics(similarity: list[list[float]], own: list[int], candidates: str, prefix: str = "") -> dict:
    """Ranks counted one by one; a tie counts against the model (1 + wrong candidates scoring at least as high)."""
    num_captions, num_videos = len(similarity), len(similarity[0])
    text_ranks = [
        1 + sum(similarity[c][v] >= similarity[c][own[c]] for v in range(num_videos) if v != own[c])
        for c in range(num_captions)
    ]
    video_ranks = []
    for v in range(num_videos):
        own_best = max(similarity[c][v] for c in range(num_captions) if own[c] == v)
        if candidates == "videos":  # other videos' caption sets, each scored by its best caption
            others = [max(similarity[c][v] for c in range(num_captions) if own[c] == u) for u in range(num_videos) if u != v]
        else:  # every caption of another video
            others = [similarity[c][v] for c in range(num_captions) if own[c] != v]
        video_ranks.append(1 + sum(score >= own_best for score in others))
    return {**summary(text_ranks, f"{prefix}t2v_"), **summary(video_ranks, f"{prefix}v2t_")}


def random_split(seed: int, num_videos: int, captions_per_video: list[int]) -> tuple[list[list[float]], list[int]]:
    rng = random.Random(seed)
    own = [video for video in range(num_videos) for _ in range(captions_per_video[video])]
    rng.shuffle(own)
    # Scores on a coarse grid, so that ties happen; the own video gets a random boost so ranks spread over 1..N.
    similarity = [
        [round(rng.uniform(0, 1) + (rng.choice([0, 0.2, 0.5]) if v == own[c] else 0), 1) for v in range(num_videos)]
        for c in range(len(own))
    ]
    return similarity, own


CASES = {
    "one_caption_per_video": (0, 23, [1] * 23),
    "several_captions": (1, 17, [1 + (v % 4) for v in range(17)]),
    "many_captions_few_videos": (2, 6, [5, 1, 3, 2, 4, 7]),
}


@pytest.mark.parametrize("candidates", ["videos", "captions"])
@pytest.mark.parametrize("case", list(CASES))
def test_metrics_equal_a_count(case, candidates):
    similarity, own = random_split(*CASES[case])
    expected = counted_metrics(similarity, own, candidates)
    # Medians and means differ, and the two directions differ, so neither can stand in for the other.
    assert expected["t2v_MedianR"] != expected["t2v_MeanR"] and expected["v2t_MedianR"] != expected["v2t_MeanR"]
    assert any(expected[f"t2v_{name}"] != expected[f"v2t_{name}"] for name in ("R1", "R5", "MedianR", "MeanR"))
    metrics = compute_retrieval_metrics(similarity, own, video_to_text_candidates=candidates)
    assert {name: metrics[name] for name in expected} == pytest.approx(expected, abs=1e-9)
    assert (metrics["num_captions"], metrics["num_videos"]) == (len(own), len(similarity[0]))


@pytest.mark.parametrize("case", list(CASES))
def test_dual_softmax_equals_a_count_on_reweighted_scores(case):
    similarity, own = random_split(*CASES[case])
    temperature = 3.0
    num_captions, num_videos = len(similarity), len(similarity[0])

    def exp(c, v):
        return math.exp(temperature * similarity[c][v])

    # Text-to-video weights each video by its preference for this caption among all captions (softmax over
    # captions); video-to-text weights each caption by its preference for this video among all videos.
    over_captions = [[similarity[c][v] * exp(c, v) / sum(exp(d, v) for d in range(num_captions))
                      for v in range(num_videos)] for c in range(num_captions)]
    over_videos = [[similarity[c][v] * exp(c, v) / sum(exp(c, u) for u in range(num_videos))
                    for v in range(num_videos)] for c in range(num_captions)]
    text_side = counted_metrics(over_captions, own, "videos", prefix="dsl_")
    video_side = counted_metrics(over_videos, own, "videos", prefix="dsl_")
    expected = {**{k: v for k, v in text_side.items() if "t2v" in k}, **{k: v for k, v in video_side.items() if "v2t" in k}}
    metrics = compute_retrieval_metrics(np.array(similarity), np.array(own), dual_softmax=True,
                                        dual_softmax_temperature=temperature)
    assert not any(name.startswith(("t2v_", "v2t_")) for name in metrics)
    assert {name: metrics[name] for name in expected} == pytest.approx(expected, abs=1e-9)
