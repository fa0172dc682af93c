"""The videos of a split that a run cannot use: which ones, why, and the cap that ends a run whose data is broken
wholesale (`--max_bad_videos`)."""

import math
import os

import datasets
import torch
from accelerate.utils import gather_object


def missing_videos(dataset: datasets.Dataset) -> dict[str, str]:
    """Video key -> reason for the local files a split names that do not exist (checked once, before training)."""
    missing = {}
    table = dataset.select_columns(["video"]).with_format("arrow")
    for start in range(0, len(dataset), 10_000):
        column = table[start : start + 10_000].column("video").combine_chunks()
        for path, no_bytes in zip(column.field("path").to_pylist(), column.field("bytes").is_null().to_pylist()):
            if no_bytes and path and "://" not in path and not os.path.isfile(path):
                missing[path] = "FileNotFoundError: video file not found"
    return missing


class BadVideos:
    """The videos of one split that a model run could not use, in three roles held together:

    - detection: `reason(key)` for a video known to be bad (found before training, `known_before`: missing, or
      failed while the frame cache decoded it; or since, `mark`), so the collator does not decode it again;
    - the report: `videos`, name -> reason, as the batches report them (`add`), merged over processes by
      `gathered` / `merge_processes`; it is what `results.json` lists;
    - the cap: `check` ends the run when more videos are bad than `cap` allows, an absolute count (>= 1, or 0) or
      a fraction (< 1) of `total` videos (for a stream, of the rows read, once 100 are).

    The collator that decodes the split is given this object. DataLoader workers hold copies: what they find
    reaches the run through each batch's `bad_videos`, which the training loop and the evaluation `add`."""

    def __init__(self, split: str, cap: float = math.inf, total: int | None = None,
                 known_before: dict[str, str] | None = None):
        self.split, self.cap, self.total = split, cap, total
        self.known_before = dict(known_before or {})  # video key -> reason, found before training
        self._known = dict(self.known_before)  # and those found since, in this process
        self.videos: dict[str, str] = {}
        self._reported_at_start: list[tuple[str, str]] = []  # the same on every process
        self.rows_read = 0

    def reason(self, key: str) -> str | None:
        """Why the video of `video_key` `key` cannot be used, when that is known; None otherwise."""
        return self._known.get(key)

    def mark(self, key: str, reason: str):
        """A video that failed to decode: later rows of it are skipped without decoding."""
        self._known[key] = reason

    def add(self, bad_videos, known_at_start: bool = False):
        """Reports `(name, reason)` pairs; a video reported again counts once."""
        for name, reason in bad_videos:
            if name not in self.videos:
                self.videos[name] = reason
                if known_at_start:
                    self._reported_at_start.append((name, reason))

    def restarted(self) -> "BadVideos":
        """The same split for another model: the videos known before training (reported again), none found since."""
        fresh = BadVideos(self.split, self.cap, self.total, self.known_before)
        fresh.add(self._reported_at_start, known_at_start=True)
        return fresh

    def limit(self, total: int) -> float:
        return self.cap if self.cap >= 1 or self.cap == 0 else self.cap * total

    def check(self, accelerator, collective: bool = True):
        """Raises when there are more bad videos than the cap allows. `collective`: every process calls it at the
        same point (training steps), and the counts met by each process are summed (every process reaches the same
        decision, so none is left waiting in a collective)."""
        known_at_start = len(self._reported_at_start)
        count, rows_read = len(self.videos) - known_at_start, self.rows_read
        if collective and accelerator.num_processes > 1:
            summed = accelerator.reduce(torch.tensor([count, rows_read], device=accelerator.device), "sum")
            count, rows_read = (int(value) for value in summed.tolist())
        count += known_at_start
        if self.total is None and rows_read < 100:  # a stream: a fraction of the first few rows means nothing yet
            return
        total = self.total or rows_read
        if count > self.limit(total):
            examples = "\n".join(f"  {name}: {reason}" for name, reason in list(self.videos.items())[:20])
            raise RuntimeError(
                f"{count} {self.split} videos could not be decoded, more than --max_bad_videos {self.cap:g} allows "
                f"(of {total} videos): the data looks broken wholesale. Some of them:\n{examples}\nFix or remove "
                "them, or raise --max_bad_videos."
            )

    def gathered(self, accelerator) -> dict[str, str]:
        """Every process's reported videos, sorted by name (a collective: call on every process)."""
        merged = {}
        for part in gather_object([self.videos]) if accelerator.num_processes > 1 else [self.videos]:
            merged.update(part)
        return dict(sorted(merged.items()))

    def merge_processes(self, accelerator):
        """After a pass over the split on every process (evaluation): each process reports every process's videos
        (a collective)."""
        self.videos = self.gathered(accelerator)
