"""Retrieval evaluation during and after training: every test caption against every test video, over all
processes, with the videos that could not be decoded left out and counted."""

import torch
from accelerate.utils import gather_object
from torch.utils.data import DataLoader

from clip2video.training.loaders import group_by_video
from clip2video.training.metrics.video_text_retrieval.video_text_retrieval import compute_retrieval_metrics


class EvaluationData:
    """The eval split as separate caption and video loaders (each video embedded once, whatever its caption count).
    Videos known to be missing are not decoded; they, and those that fail to decode, are left out of the metrics."""

    def __init__(self, accelerator, evaluation, collator, batch_size, num_workers, known_bad: dict[str, str]):
        self.video_ids, self.videos, self.caption_video_index = group_by_video(evaluation)
        self.captions = list(evaluation["caption"])
        self.collator = collator
        self.known_bad = known_bad
        self.text_loader = accelerator.prepare_data_loader(
            DataLoader(self.captions, batch_size=batch_size, collate_fn=self._tokenize)
        )
        rows = [{"video": video, "caption": ""} for video in self.videos]
        self.video_loader = accelerator.prepare_data_loader(
            DataLoader(rows, batch_size=batch_size, collate_fn=self._videos, num_workers=num_workers)
        )

    def _tokenize(self, captions):
        input_ids, attention_mask = self.collator.tokenize(captions)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _videos(self, rows):
        self.collator._known_bad.update(self.known_bad)
        return self.collator(rows)


@torch.no_grad()
def evaluate(
    accelerator, embedder, data: EvaluationData, dual_softmax: bool, max_bad_videos: float | None = None
) -> tuple[dict, dict[str, str]]:
    """Retrieval metrics through the prepared module (sharded parameters are gathered by its forward), and the
    videos left out. A left-out video takes its captions with it: R@k is over the videos that could be decoded,
    and `num_dropped_videos` / `num_dropped_captions` say how many were not."""
    embedder.eval()
    text_embeds, logit_scale = [], None
    for batch in data.text_loader:
        embeds, logit_scale = embedder(**batch)
        text_embeds.append(accelerator.gather_for_metrics(embeds))
    video_embeds, valid, bad_videos = [], [], {}
    for batch in data.video_loader:
        for name, reason in batch.pop("bad_videos"):
            bad_videos.setdefault(name, reason)
        valid.append(accelerator.gather_for_metrics(batch.pop("valid")))
        embeds, logit_scale = embedder(pixel_values_videos=batch["pixel_values_videos"], video_mask=batch["video_mask"])
        video_embeds.append(accelerator.gather_for_metrics(embeds))
    if accelerator.num_processes > 1:
        bad_videos = {name: reason for part in gather_object([bad_videos]) for name, reason in part.items()}
    valid = torch.cat(valid).cpu()
    if not valid.any():
        raise RuntimeError(f"none of the {len(valid)} test videos could be decoded, e.g. {next(iter(bad_videos.items()), '')}")
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
    if max_bad_videos is not None:
        limit = max_bad_videos if max_bad_videos >= 1 or max_bad_videos == 0 else max_bad_videos * len(valid)
        if metrics["num_dropped_videos"] > limit:
            examples = "\n".join(f"  {name}: {reason}" for name, reason in list(bad_videos.items())[:20])
            raise RuntimeError(
                f"{metrics['num_dropped_videos']} of the {len(valid)} test videos could not be decoded, more than "
                f"--max_bad_videos {max_bad_videos:g} allows: the test split looks broken. Some of them:\n{examples}"
            )
    return metrics, dict(sorted(bad_videos.items()))
