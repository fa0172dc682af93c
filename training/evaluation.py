"""Retrieval evaluation during and after training: every test caption against every test video, over all
processes, with the videos that could not be decoded left out and counted."""

import torch
from torch.utils.data import DataLoader

from clip2video.training.bad_videos import BadVideos
from clip2video.training.loaders import group_by_video
from clip2video.training.metrics.video_text_retrieval.video_text_retrieval import compute_retrieval_metrics


class EvaluationData:
    """The eval split as separate caption and video loaders (each video embedded once, whatever its caption count).
    `collator` decodes the videos; those its `BadVideos` knows to be bad are not decoded, and they, and those that
    fail to decode, are left out of the metrics."""

    def __init__(self, accelerator, evaluation, collator, batch_size, num_workers):
        self.video_ids, self.videos, self.caption_video_index = group_by_video(evaluation)
        self.captions = list(evaluation["caption"])
        self.collator = collator
        self.text_loader = accelerator.prepare_data_loader(
            DataLoader(self.captions, batch_size=batch_size, collate_fn=self._tokenize)
        )
        rows = [{"video": video, "caption": ""} for video in self.videos]
        self.video_loader = accelerator.prepare_data_loader(
            DataLoader(rows, batch_size=batch_size, collate_fn=collator, num_workers=num_workers)
        )

    def _tokenize(self, captions):
        input_ids, attention_mask = self.collator.tokenize(captions)
        return {"input_ids": input_ids, "attention_mask": attention_mask}


@torch.no_grad()
def evaluate(accelerator, embedder, data: EvaluationData, bad_videos: BadVideos, dual_softmax: bool = False) -> dict:
    """Retrieval metrics through the prepared module (sharded parameters are gathered by its forward). The videos
    left out are reported to `bad_videos` (every process's, on every process), whose cap ends the run when too many
    are. A left-out video takes its captions with it: R@k is over the videos that could be decoded, and
    `num_dropped_videos` / `num_dropped_captions` say how many were not."""
    embedder.eval()
    text_embeds, logit_scale = [], None
    for batch in data.text_loader:
        embeddings = embedder(**batch)
        text_embeds.append(accelerator.gather_for_metrics(embeddings.text_embeds))
        logit_scale = embeddings.logit_scale
    video_embeds, valid = [], []
    for batch in data.video_loader:
        bad_videos.add(batch.pop("bad_videos"))
        valid.append(accelerator.gather_for_metrics(batch.pop("valid")))
        embeddings = embedder(pixel_values_videos=batch["pixel_values_videos"], video_mask=batch["video_mask"])
        video_embeds.append(accelerator.gather_for_metrics(embeddings.video_embeds))
        logit_scale = embeddings.logit_scale
    bad_videos.merge_processes(accelerator)
    valid = torch.cat(valid).cpu()
    if not valid.any():
        raise RuntimeError(
            f"none of the {len(valid)} test videos could be decoded, e.g. {next(iter(bad_videos.videos.items()), '')}"
        )
    kept_videos = valid.nonzero().flatten()
    new_position = torch.full((len(valid),), -1, dtype=torch.long)
    new_position[kept_videos] = torch.arange(len(kept_videos))
    caption_video = new_position[torch.tensor(data.caption_video_index)]
    kept_captions = (caption_video >= 0).nonzero().flatten()
    text = torch.cat(text_embeds).float().cpu()[kept_captions]
    videos = torch.cat(video_embeds).float().cpu()[kept_videos]
    similarity = (logit_scale.float().exp().cpu() * text @ videos.t()).numpy()
    index = caption_video[kept_captions].tolist()
    metrics = compute_retrieval_metrics(similarity, index)
    if dual_softmax:
        metrics.update(compute_retrieval_metrics(similarity, index, dual_softmax=True))
    metrics.update(num_dropped_videos=int((~valid).sum()), num_dropped_captions=len(data.captions) - len(kept_captions))
    bad_videos.check(accelerator, collective=False)  # every process holds the same, merged report
    return metrics
