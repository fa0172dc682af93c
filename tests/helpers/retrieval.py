"""Retrieval metrics counted one by one, the tests' independent expectation of the metrics module and of the
training script's evaluation."""

import statistics


def independent_metrics(scores: list[list[float]], caption_video: list[int]) -> dict[str, float]:
    """R@1/5/10, median and mean rank, both directions, by counting; ties count against the model. Video-to-text
    candidates are the videos' caption sets, scored by their best caption (CLIP4Clip's protocol)."""
    num_videos = len(scores[0])
    text_ranks = [
        1 + sum(1 for video in range(num_videos) if video != own and row[video] >= row[own])
        for row, own in zip(scores, caption_video)
    ]
    best = [
        [max(scores[c][query] for c in range(len(scores)) if caption_video[c] == candidate) for query in range(num_videos)]
        for candidate in range(num_videos)
    ]  # best[candidate][query]: best score of a caption of `candidate` for video `query`
    video_ranks = [
        1 + sum(1 for other in range(num_videos) if other != query and best[other][query] >= best[query][query])
        for query in range(num_videos)
    ]
    metrics = {}
    for prefix, ranks in (("t2v_", text_ranks), ("v2t_", video_ranks)):
        for k in (1, 5, 10):
            metrics[f"{prefix}R{k}"] = 100.0 * sum(rank <= k for rank in ranks) / len(ranks)
        metrics[f"{prefix}MedianR"] = float(statistics.median(ranks))
        metrics[f"{prefix}MeanR"] = sum(ranks) / len(ranks)
    return metrics
