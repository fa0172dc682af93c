"""`training/metrics/video_text_retrieval/`'s contract at its edges: R@K counts a rank of exactly K and not K + 1,
the median of an even number of ranks is the mean of the middle two, `references` may name the last video and no
further, every keyword of the `evaluate` metric (`video_to_text_candidates`, `dual_softmax`,
`dual_softmax_temperature`) reaches the computation when the metric is loaded with `evaluate.load` in a fresh process,
and random matrices (hypothesis) agree with a plain count written here."""

import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clip2video.training.metrics.video_text_retrieval.video_text_retrieval import compute_retrieval_metrics
from tests.helpers.processes import REPO, environment, run_command


METRIC_DIR = REPO / "training" / "metrics" / "video_text_retrieval"


def counted(similarity, references, candidates):
    """Ranks by counting, one query at a time (pessimistic ties), and the summary the docs define."""
    similarity, references = np.asarray(similarity, dtype=float), list(references)
    num_captions, num_videos = similarity.shape
    t2v = []
    for caption in range(num_captions):
        own = similarity[caption][references[caption]]
        t2v.append(1 + sum(1 for video in range(num_videos) if video != references[caption]
                           and similarity[caption][video] >= own))
    v2t = []
    for video in range(num_videos):
        own_captions = [caption for caption in range(num_captions) if references[caption] == video]
        best_own = max(similarity[caption][video] for caption in own_captions)
        if candidates == "captions":
            others = [similarity[c][video] for c in range(num_captions) if references[c] != video]
        else:
            others = [max(similarity[c][video] for c in range(num_captions) if references[c] == other)
                      for other in range(num_videos) if other != video]
        v2t.append(1 + sum(1 for score in others if score >= best_own))

    def summary(ranks, prefix):
        ranks = sorted(ranks)
        middle = len(ranks) // 2
        median = ranks[middle] if len(ranks) % 2 else (ranks[middle - 1] + ranks[middle]) / 2
        result = {f"{prefix}R{k}": 100.0 * sum(rank <= k for rank in ranks) / len(ranks) for k in (1, 5, 10)}
        return {**result, f"{prefix}MedianR": median, f"{prefix}MeanR": sum(ranks) / len(ranks)}

    return {**summary(t2v, "t2v_"), **summary(v2t, "v2t_"), "num_captions": num_captions, "num_videos": num_videos}


def one_caption_with_rank(rank, num_videos=12):
    """A one-caption-per-video matrix where caption 0's own video ranks exactly `rank` (all others rank 1)."""
    similarity = np.eye(num_videos) * 10.0
    similarity[0, 0] = 5.0
    similarity[0, 1:rank] = 6.0  # rank - 1 wrong videos above the own one
    return similarity


@pytest.mark.parametrize("rank", [1, 2, 5, 6, 10, 11])
def test_recall_at_k_counts_a_rank_of_exactly_k(rank):
    metrics = compute_retrieval_metrics(one_caption_with_rank(rank), np.arange(12))
    for k in (1, 5, 10):
        assert metrics[f"t2v_R{k}"] == pytest.approx(100.0 * (11 + (rank <= k)) / 12), (rank, k)
    assert metrics["t2v_MeanR"] == pytest.approx((11 + rank) / 12)
    assert metrics == pytest.approx(counted(one_caption_with_rank(rank), range(12), "videos"))


def test_the_median_of_an_even_number_of_ranks_is_the_mean_of_the_middle_two():
    # Ranks 1, 1, 2, 4 (t2v): median 1.5, which neither middle rank is.
    similarity = np.array([[9.0, 0, 0, 0], [0, 9.0, 0, 0], [0, 5.0, 4.0, 0], [6.0, 6.0, 6.0, 1.0]])
    metrics = compute_retrieval_metrics(similarity, np.arange(4))
    assert metrics["t2v_MedianR"] == 1.5
    assert metrics["t2v_MeanR"] == pytest.approx((1 + 1 + 2 + 4) / 4)
    assert metrics == pytest.approx(counted(similarity, range(4), "videos"))


def test_references_may_name_the_last_video_and_no_further():
    similarity = np.eye(3)
    assert compute_retrieval_metrics(similarity, [0, 1, 2])["t2v_R1"] == 100.0
    with pytest.raises(ValueError, match=r"video_index must lie in \[0, 3\), got 0\.\.3"):
        compute_retrieval_metrics(similarity, [0, 1, 3])
    with pytest.raises(ValueError, match=r"video_index must lie in \[0, 3\), got -1\.\.2"):
        compute_retrieval_metrics(similarity, [-1, 1, 2])
    with pytest.raises(ValueError, match=r"video_to_text_candidates must be 'videos' or 'captions', got 'Captions'"):
        compute_retrieval_metrics(similarity, [0, 1, 2], video_to_text_candidates="Captions")


@settings(max_examples=150, deadline=None)
@given(
    num_videos=st.integers(1, 7),
    extra_captions=st.integers(0, 9),
    seed=st.integers(0, 2**32 - 1),
    levels=st.sampled_from([3, 1000]),  # few levels: many ties
    candidates=st.sampled_from(["videos", "captions"]),
)
def test_random_matrices_agree_with_a_count(num_videos, extra_captions, seed, levels, candidates):
    generator = np.random.default_rng(seed)
    references = np.concatenate([np.arange(num_videos), generator.integers(0, num_videos, extra_captions)])
    generator.shuffle(references)
    similarity = generator.integers(0, levels, (len(references), num_videos)) / levels
    metrics = compute_retrieval_metrics(similarity, references, video_to_text_candidates=candidates)
    assert metrics == pytest.approx(counted(similarity, references, candidates))


# Several captions per video, and scores on which the two video-to-text conventions and the two temperatures differ.
SIMILARITY = [
    [0.27, -0.46, -0.92, -0.97],
    [0.63, 0.83, 0.21, 0.46],
    [0.09, 0.87, 0.63, -0.99],
    [0.71, -0.93, 0.46, -0.65],
    [0.73, 0.08, -0.4, -0.15],
    [-0.94, -0.75, 0.34, 0.29],
    [0.23, -0.23, 0.99, 0.96],
]
REFERENCES = [0, 0, 0, 1, 2, 3, 1]


@pytest.mark.slow
def test_every_keyword_of_the_evaluate_metric_reaches_the_computation(tmp_path):
    calls = {
        "default": {},
        "captions": {"video_to_text_candidates": "captions"},
        "videos": {"video_to_text_candidates": "videos"},
        "dsl": {"dual_softmax": True},
        "dsl_hot": {"dual_softmax": True, "dual_softmax_temperature": 100.0},
        "dsl_captions": {"dual_softmax": True, "video_to_text_candidates": "captions"},
    }
    code = (
        "import evaluate, json\n"
        f"metric = evaluate.load({str(METRIC_DIR)!r})\n"
        f"calls = {calls!r}\n"
        "print(json.dumps({name: metric.compute(predictions=" + repr(SIMILARITY) + ", references="
        + repr(REFERENCES) + ", **kwargs) for name, kwargs in calls.items()}))\n"
    )
    variables = environment(HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", PYTHONPATH="", HF_HOME=str(tmp_path / "hf"))
    loaded = json.loads(run_command([sys.executable, "-c", code], cwd=tmp_path, env=variables).stdout.splitlines()[-1])

    # The cases must tell the keywords apart, or the test could not notice one being dropped.
    by_videos, by_captions = counted(SIMILARITY, REFERENCES, "videos"), counted(SIMILARITY, REFERENCES, "captions")
    assert by_videos["v2t_MeanR"] != by_captions["v2t_MeanR"]
    assert loaded["default"] == pytest.approx(by_videos) and loaded["videos"] == pytest.approx(by_videos)
    assert loaded["captions"] == pytest.approx(by_captions)
    for name, kwargs in calls.items():
        assert loaded[name] == pytest.approx(compute_retrieval_metrics(SIMILARITY, REFERENCES, **kwargs)), name
    assert set(loaded["dsl"]) == {f"dsl_{key}" for key in by_videos if key.startswith(("t2v", "v2t"))} | {
        "num_captions", "num_videos"}
    assert len({json.dumps(loaded[name], sort_keys=True) for name in ("dsl", "dsl_hot", "dsl_captions")}) == 3


def stable_softmax(logits, axis):
    """Softmax written out with the log-sum-exp shift per row or column (the independent reference)."""
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=axis, keepdims=True)
    return np.exp(logits - top) / np.exp(logits - top).sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("temperature", [1.0, 100.0, 1000.0])
def test_dual_softmax_is_stable_at_any_temperature(temperature):
    # Columns far apart: a shift by the global maximum would underflow whole columns, no shift would overflow.
    generator = np.random.default_rng(0)
    similarity = generator.uniform(-1, 1, (6, 5)) + np.array([3.0, -3.0, 0.0, 1.0, -2.0])
    references = np.arange(6) % 5
    metrics = compute_retrieval_metrics(similarity, references, dual_softmax=True,
                                        dual_softmax_temperature=temperature)
    text_to_video = similarity * stable_softmax(similarity * temperature, axis=0)
    video_to_text = similarity * stable_softmax(similarity * temperature, axis=1)
    assert np.isfinite(text_to_video).all() and np.isfinite(video_to_text).all()
    expected_t2v = counted(text_to_video, references, "videos")
    expected_v2t = counted(video_to_text, references, "videos")
    for key, value in metrics.items():
        if key.startswith("dsl_t2v_"):
            assert value == pytest.approx(expected_t2v[key[len("dsl_"):]]), key
        elif key.startswith("dsl_v2t_"):
            assert value == pytest.approx(expected_v2t[key[len("dsl_"):]]), key


def test_the_default_dual_softmax_temperature_is_one():
    similarity, references = np.array(SIMILARITY), np.array(REFERENCES)
    default = compute_retrieval_metrics(similarity, references, dual_softmax=True)
    assert default == compute_retrieval_metrics(similarity, references, dual_softmax=True, dual_softmax_temperature=1.0)
    assert any(default != compute_retrieval_metrics(similarity, references, dual_softmax=True,
                                                     dual_softmax_temperature=t) for t in (2.0, 0.5))


def test_half_precision_scores_are_ranked_in_double_precision():
    # fp16 logits (a model run in half precision): the dual softmax must not be computed in float16.
    generator = np.random.default_rng(1)
    similarity = generator.uniform(-1, 1, (40, 40)).astype(np.float16)
    references = np.arange(40)
    for kwargs in ({}, {"dual_softmax": True, "dual_softmax_temperature": 100.0}):
        assert compute_retrieval_metrics(similarity, references, **kwargs) == compute_retrieval_metrics(
            similarity.astype(np.float64), references, **kwargs), kwargs


def test_shape_errors_and_missing_captions_are_named():
    with pytest.raises(ValueError, match=r"^expected similarity \[num_captions, num_videos\] and video_index "
                                         r"\[num_captions\], got \(3, 3\) and \(2,\)"):
        compute_retrieval_metrics(np.eye(3), [0, 1])
    with pytest.raises(ValueError, match=r"^expected similarity .* got \(3,\) and \(3,\)"):
        compute_retrieval_metrics(np.ones(3), [0, 1, 2])
    with pytest.raises(ValueError, match=r"^similarity contains NaN or infinite values$"):
        compute_retrieval_metrics(np.array([[np.inf, 0.0], [0.0, 1.0]]), [0, 1])
    # Twelve videos without captions: the message lists the first ten.
    with pytest.raises(ValueError, match=r"^video-to-text needs at least one caption per video; videos without "
                                         r"captions: \[2, 3, 4, 5, 6, 7, 8, 9, 10, 11\]$"):
        compute_retrieval_metrics(np.ones((2, 14)), [0, 1])


def test_no_captions_at_all_is_refused_by_name():
    with pytest.warns(RuntimeWarning), pytest.raises(
        ValueError, match=r"^video-to-text needs at least one caption per video; videos without captions: \[0, 1, 2\]$"
    ):
        compute_retrieval_metrics(np.zeros((0, 3)), [])
