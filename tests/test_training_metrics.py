"""Retrieval metrics against ranks computed by hand, including ties and the multi-caption protocol."""

import sys

import numpy as np
import pytest

from clip2video.training.metrics.video_text_retrieval.video_text_retrieval import (
    compute_retrieval_metrics,
    text_to_video_ranks,
    video_to_text_ranks,
)
from tests.helpers.processes import REPO, environment, run_command

METRIC_DIR = REPO / "training" / "metrics" / "video_text_retrieval"


def test_single_caption_ranks_by_hand():
    # Rows: captions 0..2, columns: videos 0..2; caption i belongs to video i.
    similarity = np.array(
        [
            [0.9, 0.1, 0.2],  # own video first -> rank 1
            [0.8, 0.3, 0.5],  # 0.8 and 0.5 beat 0.3 -> rank 3
            [0.1, 0.7, 0.4],  # 0.7 beats 0.4 -> rank 2
        ]
    )
    assert text_to_video_ranks(similarity, np.arange(3)).tolist() == [1, 3, 2]
    # Video-to-text reads the columns: video 0 [0.9, 0.8, 0.1] -> 1; video 1 [0.1, 0.3, 0.7] -> 2;
    # video 2 [0.2, 0.5, 0.4] -> 2.
    assert video_to_text_ranks(similarity, np.arange(3)).tolist() == [1, 2, 2]
    metrics = compute_retrieval_metrics(similarity, np.arange(3))
    assert metrics["t2v_R1"] == pytest.approx(100 / 3)
    assert metrics["t2v_R5"] == 100.0
    assert metrics["t2v_MedianR"] == 2.0
    assert metrics["t2v_MeanR"] == pytest.approx(2.0)
    assert metrics["v2t_R1"] == pytest.approx(100 / 3)
    assert metrics["v2t_MeanR"] == pytest.approx(5 / 3)


def test_ties_rank_pessimistically():
    # Caption 0 ties its own video with two others: 1 + 2 wrong candidates at least as high -> rank 3.
    similarity = np.array([[0.5, 0.5, 0.5], [0.2, 0.6, 0.6], [0.0, 0.0, 1.0]])
    assert text_to_video_ranks(similarity, np.arange(3)).tolist() == [3, 2, 1]
    # A constant matrix ranks every query last, never first.
    constant = compute_retrieval_metrics(np.ones((4, 4)), np.arange(4))
    assert constant["t2v_R1"] == 0.0 and constant["t2v_MedianR"] == 4.0 and constant["v2t_R1"] == 0.0


def test_multi_caption_protocol_by_hand():
    # Videos 0, 1, 2; captions 0,1 -> video 0, captions 2,3,4 -> video 1, caption 5 -> video 2.
    video_index = np.array([0, 0, 1, 1, 1, 2])
    similarity = np.array(
        [
            [0.9, 0.2, 0.1],  # t2v rank 1
            [0.3, 0.4, 0.5],  # own 0.3 is last -> 3
            [0.6, 0.7, 0.1],  # 1
            [0.8, 0.2, 0.3],  # own 0.2 below 0.8 and 0.3 -> 3
            [0.1, 0.6, 0.6],  # tie with video 2 -> 2
            [0.2, 0.9, 0.4],  # own 0.4 below 0.9 -> 2
        ]
    )
    assert text_to_video_ranks(similarity, video_index).tolist() == [1, 3, 1, 3, 2, 2]
    # Video-to-text, candidates = videos scored by their best caption for the query video:
    # video 0 column: best of video0 captions 0.9, video1 0.8, video2 0.2 -> rank 1
    # video 1 column: best own 0.7, video0's best 0.4, video2's 0.9 -> rank 2
    # video 2 column: best own 0.4, video0's 0.5, video1's 0.6 -> rank 3
    assert video_to_text_ranks(similarity, video_index, "videos").tolist() == [1, 2, 3]
    # Candidates = all captions: video 0 -> 1; video 1: own best 0.7, other captions >= 0.7: 0.9 -> rank 2;
    # video 2: own 0.4, other captions >= 0.4: 0.5, 0.6 -> rank 3 (here the same; next case differs).
    assert video_to_text_ranks(similarity, video_index, "captions").tolist() == [1, 2, 3]
    # Two captions of video 0 both beat video 1's only caption for video 1: 2 videos vs 3 captions ahead.
    similarity = np.array([[0.9, 0.8], [0.1, 0.9], [0.2, 0.5]])
    video_index = np.array([0, 0, 1])
    assert video_to_text_ranks(similarity, video_index, "videos").tolist() == [1, 2]
    assert video_to_text_ranks(similarity, video_index, "captions").tolist() == [1, 3]
    metrics = compute_retrieval_metrics(similarity, video_index, video_to_text_candidates="captions")
    assert metrics["num_captions"] == 3 and metrics["num_videos"] == 2
    assert metrics["v2t_MeanR"] == 2.0


def test_dual_softmax_is_opt_in_and_labelled():
    # Video 1 is a "hub": caption 0 prefers it to its own video 0.
    similarity = np.array([[2.0, 3.0], [1.0, 5.0]])
    plain = compute_retrieval_metrics(similarity, np.arange(2))
    assert plain["t2v_R1"] == 50.0 and not any(key.startswith("dsl_") for key in plain)
    dsl = compute_retrieval_metrics(similarity, np.arange(2), dual_softmax=True)
    assert all(key.startswith("dsl_") or key.startswith("num_") for key in dsl)
    # By hand: softmax over captions is [0.731, 0.269] for video 0 and [0.119, 0.881] for video 1, so caption 0
    # scores video 0 at 2 * 0.731 = 1.46 and video 1 at 3 * 0.119 = 0.36: its own video now ranks first;
    # caption 1: 1 * 0.269 = 0.27 vs 5 * 0.881 = 4.40 -> first as well.
    assert dsl["dsl_t2v_R1"] == 100.0 and dsl["dsl_t2v_MeanR"] == 1.0
    # The temperature matters: at 0 the softmax is uniform and ranks equal the plain ones.
    flat = compute_retrieval_metrics(similarity, np.arange(2), dual_softmax=True, dual_softmax_temperature=0.0)
    assert flat["dsl_t2v_R1"] == 50.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="NaN"):
        compute_retrieval_metrics(np.array([[np.nan, 0.0], [0.0, 1.0]]), np.arange(2))
    with pytest.raises(ValueError, match="video_index"):
        compute_retrieval_metrics(np.eye(2), np.array([0, 2]))
    with pytest.raises(ValueError, match="without captions"):
        compute_retrieval_metrics(np.eye(3)[:2], np.array([0, 1]))


@pytest.mark.slow
def test_evaluate_load_offline_in_fresh_process(tmp_path):
    code = (
        "import evaluate, json\n"
        f"metric = evaluate.load({str(METRIC_DIR)!r})\n"
        "print(json.dumps(metric.compute(predictions=[[0.8, 0.3], [0.1, 0.7], [0.6, 0.4]], references=[0, 1, 1])))\n"
    )
    variables = environment(HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", PYTHONPATH="", HF_HOME=str(tmp_path / "hf_home"))
    result = run_command([sys.executable, "-c", code], cwd=tmp_path, env=variables)
    import json

    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    # Ranks by hand: caption 0 -> 1, caption 1 -> 1, caption 2 (0.4 for its video 1 < 0.6) -> 2.
    assert metrics["t2v_R1"] == pytest.approx(200 / 3)
    assert metrics["t2v_MeanR"] == pytest.approx(4 / 3)
    # Video-to-text, video 1: its best caption 0.7 against video 0's 0.3 -> rank 1; video 0: 0.8 vs 0.6 -> 1.
    assert metrics["v2t_R1"] == 100.0
