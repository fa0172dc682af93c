"""Video-text retrieval datasets as `datasets.Dataset`s of (video_id, video path, caption) rows.

Every loader returns one row per caption (the training unit of CLIP4Clip / CLIP2Video; a video with 20 captions gives
20 rows). The videos stay on disk: the `video` column holds absolute paths, decoded later by the processor inside the
DataLoader workers. `group_by_video` turns a test split into the (videos, captions, caption -> video) layout the
retrieval metrics need.

Annotation formats (the files published with CLIP4Clip / CLIP2Video):

- MSR-VTT: `MSRVTT_data.json` (`{"videos": [...], "sentences": [{"video_id", "caption", "sen_id"}, ...]}`), the
  split lists `MSRVTT_train.9k.csv`, `MSRVTT_train.7k.csv`, `MSRVTT_train.full.csv`, `MSRVTT_val.full.csv`,
  `MSRVTT_test.full.csv` (one column `video_id`), and the 1k-A test pairs `MSRVTT_JSFUSION_test.csv`
  (`key,vid_key,video_id,sentence`). Videos: `<video_id>.mp4`.
- MSVD: `raw-captions.pkl` (`{video_id: [[word, ...], ...]}`) and `train_list.txt`, `val_list.txt`, `test_list.txt`.
  Videos: `<video_id>.avi`.
- VATEX (English): `vatex_data.json` (`{video_id: {"enCap": [...], ...}}`), the HGR split `train_list.txt`,
  `val_list.txt`, `test_list.txt`, and the CLIP2Video authors' random 1,500-video test list `test1k5_sec_list.txt`.
- LSMDC 2016: tab-separated `LSMDC16_annos_training.csv`, `LSMDC16_annos_val.csv`,
  `LSMDC16_challenge_1000_publictect.csv` with `clip_id, start_aligned, end_aligned, start_extracted, end_extracted,
  sentence`; clips live in per-movie sub-folders.
- Your own videos: a folder with a `metadata.csv` or `metadata.jsonl` whose rows name a video file relative to the
  folder (`file_name`, the `videofolder` convention, or `video`) and a `caption`; several captions per video are
  several rows, or a JSON list in `metadata.jsonl`.

Videos of the published sets are found by file name stem anywhere under `videos_dir` (any extension), since
MSR-VTT, MSVD, VATEX and LSMDC ship as .mp4, .avi, .webm or nested folders.

Bad rows (video file missing, empty caption, malformed line or record) are all counted first. With
`on_bad_row="error"` (default) a `BadRowsError` lists them; with `on_bad_row="skip"` they are left out and a
`BadRowsSkipped` warning carries the same list. Nothing is dropped silently.
"""

import csv
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import datasets

ON_BAD_ROW_CHOICES = ("error", "skip")


@dataclass(frozen=True)
class BadRow:
    where: str  # file and line, or file and key
    reason: str

    def __str__(self):
        return f"{self.where}: {self.reason}"


class BadRowsError(ValueError):
    def __init__(self, dataset_name: str, bad_rows: list[BadRow]):
        self.bad_rows = bad_rows
        super().__init__(_describe_bad_rows(dataset_name, bad_rows) + ' (pass on_bad_row="skip" to leave them out)')


class BadRowsSkipped(UserWarning):
    def __init__(self, dataset_name: str, bad_rows: list[BadRow]):
        self.bad_rows = bad_rows
        super().__init__(_describe_bad_rows(dataset_name, bad_rows) + " were skipped")


def _describe_bad_rows(dataset_name: str, bad_rows: list[BadRow], shown: int = 5) -> str:
    reasons = {}
    for row in bad_rows:
        reasons[row.reason.split(":")[0]] = reasons.get(row.reason.split(":")[0], 0) + 1
    counts = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
    examples = "; ".join(str(row) for row in bad_rows[:shown])
    more = f"; ... {len(bad_rows) - shown} more" if len(bad_rows) > shown else ""
    return f"{dataset_name}: {len(bad_rows)} bad rows ({counts}): {examples}{more}"


class _RowCollector:
    """Collects (video_id, video path, caption) rows, checking each; builds the Dataset at the end."""

    def __init__(self, dataset_name: str, on_bad_row: str):
        if on_bad_row not in ON_BAD_ROW_CHOICES:
            raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW_CHOICES}, got {on_bad_row!r}")
        self.dataset_name = dataset_name
        self.on_bad_row = on_bad_row
        self.rows = {"video_id": [], "video": [], "caption": []}
        self.bad_rows: list[BadRow] = []

    def bad(self, where: str, reason: str):
        self.bad_rows.append(BadRow(where, reason))

    def add(self, where: str, video_id: str, video_path: str | None, caption):
        if not isinstance(caption, str):
            self.bad(where, f"malformed caption: expected a string, got {type(caption).__name__}")
        elif not caption.strip():
            self.bad(where, f"empty caption for video {video_id!r}")
        elif video_path is None or not os.path.isfile(video_path):
            self.bad(where, f"missing video file for {video_id!r}" + (f" ({video_path})" if video_path else ""))
        else:
            self.rows["video_id"].append(video_id)
            self.rows["video"].append(str(Path(video_path).resolve()))
            self.rows["caption"].append(caption.strip())

    def build(self) -> datasets.Dataset:
        if self.bad_rows:
            if self.on_bad_row == "error":
                raise BadRowsError(self.dataset_name, self.bad_rows)
            warnings.warn(BadRowsSkipped(self.dataset_name, self.bad_rows), stacklevel=3)
        features = datasets.Features(
            {"video_id": datasets.Value("string"), "video": datasets.Value("string"), "caption": datasets.Value("string")}
        )
        description = f"{self.dataset_name}; {len(self.bad_rows)} bad rows skipped" if self.bad_rows else self.dataset_name
        return datasets.Dataset.from_dict(
            self.rows, info=datasets.DatasetInfo(description=description, features=features)
        )


def index_videos(videos_dir: str | os.PathLike) -> dict[str, str]:
    """Maps each file name stem under `videos_dir` (recursively) to its path."""
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"videos folder not found: {videos_dir}")
    index = {}
    for root, _, files in os.walk(videos_dir):
        for name in sorted(files):
            if not name.startswith("."):
                index.setdefault(os.path.splitext(name)[0], os.path.join(root, name))
    return index


def _read_id_list(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as file:
        return [line.strip() for line in file if line.strip()]


def _read_csv(path: Path, required_columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line number, row) pairs; a missing header column is an error for the whole file."""
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [column for column in required_columns if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {reader.fieldnames}")
        return [(reader.line_num, row) for row in reader]


# MSR-VTT ---------------------------------------------------------------------------------------------------------

MSRVTT_SPLIT_FILES = {
    "train_9k": "MSRVTT_train.9k.csv",
    "train_7k": "MSRVTT_train.7k.csv",
    "train_full": "MSRVTT_train.full.csv",
    "val_full": "MSRVTT_val.full.csv",
    "test_full": "MSRVTT_test.full.csv",
    "test_1k_a": "MSRVTT_JSFUSION_test.csv",
}


def load_msrvtt(
    annotations_dir: str | os.PathLike, videos_dir: str | os.PathLike, split: str, on_bad_row: str = "error"
) -> datasets.Dataset:
    """MSR-VTT. `split`: "train_9k", "train_7k", "train_full", "val_full", "test_full" (every caption of the listed
    videos, from `MSRVTT_data.json`) or "test_1k_a" (the 1,000 JSFUSION video-caption pairs)."""
    if split not in MSRVTT_SPLIT_FILES:
        raise ValueError(f"unknown MSR-VTT split {split!r}; choose from {list(MSRVTT_SPLIT_FILES)}")
    annotations_dir = Path(annotations_dir)
    split_file = annotations_dir / MSRVTT_SPLIT_FILES[split]
    videos = index_videos(videos_dir)
    collector = _RowCollector(f"MSR-VTT {split} ({split_file})", on_bad_row)

    if split == "test_1k_a":
        for line, row in _read_csv(split_file, ("video_id", "sentence")):
            video_id = (row["video_id"] or "").strip()
            if not video_id or row["sentence"] is None:
                collector.bad(f"{split_file.name}:{line}", "malformed row: missing video_id or sentence")
                continue
            collector.add(f"{split_file.name}:{line}", video_id, videos.get(video_id), row["sentence"])
        return collector.build()

    video_ids = []
    for line, row in _read_csv(split_file, ("video_id",)):
        video_id = (row["video_id"] or "").strip()
        if video_id:
            video_ids.append(video_id)
        else:
            collector.bad(f"{split_file.name}:{line}", "malformed row: empty video_id")
    json_path = annotations_dir / "MSRVTT_data.json"
    with open(json_path, encoding="utf-8") as file:
        sentences = json.load(file)["sentences"]
    captions_by_video = {video_id: [] for video_id in video_ids}
    for position, sentence in enumerate(sentences):
        video_id = sentence.get("video_id") if isinstance(sentence, dict) else None
        if video_id is not None and video_id not in captions_by_video:
            continue  # another split's caption
        if video_id is None or "caption" not in sentence:
            collector.bad(f"{json_path.name}:sentences[{position}]", "malformed record: needs video_id and caption")
            continue
        captions_by_video[video_id].append((position, sentence["caption"]))
    for video_id in video_ids:
        if not captions_by_video[video_id]:
            collector.bad(f"{split_file.name}:{video_id}", f"malformed: no caption for video {video_id!r} in {json_path.name}")
        for position, caption in captions_by_video[video_id]:
            collector.add(f"{json_path.name}:sentences[{position}]", video_id, videos.get(video_id), caption)
    return collector.build()


# MSVD ------------------------------------------------------------------------------------------------------------


class _PlainDataUnpickler(pickle.Unpickler):
    """`raw-captions.pkl` holds only dicts, lists and strings: refuse anything that would import code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: the caption file should hold plain data only")


def load_msvd(
    annotations_dir: str | os.PathLike, videos_dir: str | os.PathLike, split: str, on_bad_row: str = "error"
) -> datasets.Dataset:
    """MSVD: `split` is "train", "val" or "test"; every caption of each listed video (about 40 per video)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown MSVD split {split!r}; choose from ['train', 'val', 'test']")
    annotations_dir = Path(annotations_dir)
    list_path = annotations_dir / f"{split}_list.txt"
    with open(annotations_dir / "raw-captions.pkl", "rb") as file:
        captions = _PlainDataUnpickler(file).load()
    videos = index_videos(videos_dir)
    collector = _RowCollector(f"MSVD {split} ({list_path})", on_bad_row)
    for video_id in _read_id_list(list_path):
        if video_id not in captions:
            collector.bad(f"{list_path.name}:{video_id}", f"malformed: no caption for video {video_id!r} in raw-captions.pkl")
            continue
        for number, caption in enumerate(captions[video_id]):
            # Captions are stored tokenised (a list of words); the authors join them with spaces.
            if isinstance(caption, list) and all(isinstance(word, str) for word in caption):
                caption = " ".join(caption)
            collector.add(f"raw-captions.pkl:{video_id}[{number}]", video_id, videos.get(video_id), caption)
    return collector.build()


# VATEX -----------------------------------------------------------------------------------------------------------

VATEX_SPLIT_FILES = {
    "train": "train_list.txt",
    "val": "val_list.txt",
    "test": "test_list.txt",  # HGR's test split
    "test_1k5": "test1k5_sec_list.txt",  # the random 1,500-video test split of the CLIP2Video paper
}


def load_vatex(
    annotations_dir: str | os.PathLike, videos_dir: str | os.PathLike, split: str, on_bad_row: str = "error"
) -> datasets.Dataset:
    """VATEX with its English captions (10 per video). `split`: "train", "val", "test" (HGR split) or "test_1k5"
    (the CLIP2Video paper's own random 1,500-video test list)."""
    if split not in VATEX_SPLIT_FILES:
        raise ValueError(f"unknown VATEX split {split!r}; choose from {list(VATEX_SPLIT_FILES)}")
    annotations_dir = Path(annotations_dir)
    list_path = annotations_dir / VATEX_SPLIT_FILES[split]
    with open(annotations_dir / "vatex_data.json", encoding="utf-8") as file:
        annotations = json.load(file)
    videos = index_videos(videos_dir)
    collector = _RowCollector(f"VATEX {split} ({list_path})", on_bad_row)
    for video_id in _read_id_list(list_path):
        record = annotations.get(video_id)
        if not isinstance(record, dict) or not isinstance(record.get("enCap"), list):
            collector.bad(f"vatex_data.json:{video_id}", f"malformed: no enCap list for video {video_id!r}")
            continue
        for number, caption in enumerate(record["enCap"]):
            collector.add(f"vatex_data.json:{video_id}.enCap[{number}]", video_id, videos.get(video_id), caption)
    return collector.build()


# LSMDC -----------------------------------------------------------------------------------------------------------

LSMDC_SPLIT_FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}


def load_lsmdc(
    annotations_dir: str | os.PathLike, videos_dir: str | os.PathLike, split: str, on_bad_row: str = "error"
) -> datasets.Dataset:
    """LSMDC 2016 (`split` "train", "val" or "test", the 1,000-clip challenge test). A clip id can appear on several
    lines (several sentences); the test file has one sentence per clip."""
    if split not in LSMDC_SPLIT_FILES:
        raise ValueError(f"unknown LSMDC split {split!r}; choose from {list(LSMDC_SPLIT_FILES)}")
    annotation_path = Path(annotations_dir) / LSMDC_SPLIT_FILES[split]
    videos = index_videos(videos_dir)
    collector = _RowCollector(f"LSMDC {split} ({annotation_path})", on_bad_row)
    with open(annotation_path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            where = f"{annotation_path.name}:{line_number}"
            if len(fields) != 6:
                collector.bad(where, f"malformed line: expected 6 tab-separated fields, got {len(fields)}")
                continue
            clip_id, sentence = fields[0].strip(), fields[5]
            collector.add(where, clip_id, videos.get(clip_id), sentence)
    return collector.build()


# Your own videos -------------------------------------------------------------------------------------------------

METADATA_FILE_NAMES = ("metadata.csv", "metadata.jsonl")


def load_video_folder(
    folder: str | os.PathLike, metadata_file: str | os.PathLike | None = None, on_bad_row: str = "error"
) -> datasets.Dataset:
    """Videos in `folder` described by `metadata.csv` or `metadata.jsonl` (or `metadata_file`).

    Each row names a video relative to the metadata file's folder, in a `file_name` column (the `videofolder`
    convention of `datasets`) or a `video` column, and gives a `caption`. A video with several captions has several
    rows, or in JSON Lines a list of captions. The `video_id` column is the file name as written in the metadata.
    """
    folder = Path(folder)
    if metadata_file is None:
        candidates = [folder / name for name in METADATA_FILE_NAMES if (folder / name).is_file()]
        if len(candidates) != 1:
            raise FileNotFoundError(
                f"{folder}: expected exactly one of {METADATA_FILE_NAMES}, found {[c.name for c in candidates]}"
            )
        metadata_file = candidates[0]
    metadata_file = Path(metadata_file)
    base = metadata_file.parent
    collector = _RowCollector(f"video folder {folder} ({metadata_file.name})", on_bad_row)

    if metadata_file.suffix == ".csv":
        with open(metadata_file, newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            fieldnames = reader.fieldnames or []
            video_column = "file_name" if "file_name" in fieldnames else "video"
            if video_column not in fieldnames or "caption" not in fieldnames:
                raise ValueError(f"{metadata_file}: needs a file_name (or video) and a caption column; header is {fieldnames}")
            records = [(reader.line_num, row.get(video_column), row.get("caption")) for row in reader]
    elif metadata_file.suffix == ".jsonl":
        records = []
        with open(metadata_file, encoding="utf-8") as file:
            for line_number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    collector.bad(f"{metadata_file.name}:{line_number}", f"malformed line: {error}")
                    continue
                if not isinstance(record, dict):
                    collector.bad(f"{metadata_file.name}:{line_number}", "malformed line: not a JSON object")
                    continue
                video = record.get("file_name", record.get("video"))
                records.append((line_number, video, record.get("caption")))
    else:
        raise ValueError(f"{metadata_file}: metadata must be .csv or .jsonl")

    for line_number, video, caption in records:
        where = f"{metadata_file.name}:{line_number}"
        if not isinstance(video, str) or not video.strip() or caption is None:
            collector.bad(where, "malformed row: needs a video file name and a caption")
            continue
        captions = caption if isinstance(caption, list) else [caption]
        if not captions:
            collector.bad(where, f"empty caption for video {video!r}: empty list")
        for single_caption in captions:
            collector.add(where, video, str(base / video), single_caption)
    return collector.build()


def group_by_video(dataset: datasets.Dataset) -> tuple[list[str], list[str], list[int]]:
    """(video ids, video paths, caption -> video index) of a split, videos in order of first appearance.

    The retrieval metrics rank, for caption i, all videos and look for video `caption_video_index[i]`.
    """
    video_ids, video_paths, position = [], [], {}
    caption_video_index = []
    for video_id, video_path in zip(dataset["video_id"], dataset["video"]):
        if video_id not in position:
            position[video_id] = len(video_ids)
            video_ids.append(video_id)
            video_paths.append(video_path)
        caption_video_index.append(position[video_id])
    return video_ids, video_paths, caption_video_index
