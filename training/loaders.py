"""Video-text retrieval datasets as `datasets.Dataset`s of (video_id, video, caption) rows.

Every loader returns one row per caption (the training unit of CLIP4Clip / CLIP2Video; a video with 20 captions gives
20 rows). The `video` column is a `datasets.Video(decode=False)` feature: each value is a `{"path", "bytes"}` dict,
decoded later by this project's video processor (PyAV) inside the DataLoader workers, so torchcodec is never
needed. `group_by_video` turns a test split into the (videos, captions, caption -> video) layout the retrieval metrics
need. `load_hub_dataset` gives the same three columns for any dataset `datasets.load_dataset` reads: a Hub id, a local
`videofolder`, parquet / arrow with embedded video bytes, or `webdataset` tar shards, streamed or not.

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
- Your own videos: the layout of `datasets`' `videofolder`, a folder with a `metadata.csv` or `metadata.jsonl`
  whose rows name a video file relative to the folder (`file_name`) and give a `caption`; several captions per video
  are several rows, or a JSON list in `metadata.jsonl`.

Videos of the published sets are found by file name stem anywhere under `videos_dir` (any extension), since
MSR-VTT, MSVD, VATEX and LSMDC ship as .mp4, .avi, .webm or nested folders.

Bad rows (malformed line or record, wrong number of CSV fields, empty caption, a repeated id or row) are all counted
first. With `on_bad_row="error"` (default) a `BadRowsError` lists every one of them; with `on_bad_row="skip"` they
are left out and a `BadRowsSkipped` warning carries the same list. A file that cannot be read at all (not UTF-8,
not JSON, the wrong JSON shape) raises `AnnotationFileError` naming the file and the line. A video file that is
missing is not a bad row: the row is kept (its `path` points where the video was expected) and the training run
counts it among its bad videos, as it does for a file that exists but does not decode. Nothing is dropped silently.
"""

import csv
import glob
import hashlib
import io
import json
import os
import pickle
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import datasets

from clip2video.processing.media_types_clip2video import VIDEO_EXTENSIONS

ON_BAD_ROW_CHOICES = ("error", "skip")
VIDEO_FEATURE = datasets.Video(decode=False)
FEATURES = datasets.Features(
    {"video_id": datasets.Value("string"), "video": VIDEO_FEATURE, "caption": datasets.Value("string")}
)


@dataclass(frozen=True)
class BadRow:
    where: str  # file and line, or file and key
    reason: str

    def __str__(self):
        return f"{self.where}: {self.reason}"


class AnnotationFileError(ValueError):
    """An annotation file that cannot be read at all: not UTF-8, not valid JSON, or JSON of the wrong shape."""


class BadRowsError(ValueError):
    def __init__(self, dataset_name: str, bad_rows: list[BadRow]):
        self.bad_rows = bad_rows
        super().__init__(_describe_bad_rows(dataset_name, bad_rows) + '\n(pass on_bad_row="skip" to leave them out)')


class BadRowsSkipped(UserWarning):
    def __init__(self, dataset_name: str, bad_rows: list[BadRow]):
        self.bad_rows = bad_rows
        super().__init__(_describe_bad_rows(dataset_name, bad_rows) + "\nwere skipped")


def _describe_bad_rows(dataset_name: str, bad_rows: list[BadRow]) -> str:
    """A count per reason, then every bad row on its own line."""
    reasons = {}
    for row in bad_rows:
        kind = row.reason.split(":")[0].split(" for ")[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    counts = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
    return f"{dataset_name}: {len(bad_rows)} bad rows ({counts}):\n" + "\n".join(f"  {row}" for row in bad_rows)


class _RowCollector:
    """Collects (video_id, video path, caption) rows, checking each; builds the Dataset at the end."""

    def __init__(self, dataset_name: str, on_bad_row: str):
        if on_bad_row not in ON_BAD_ROW_CHOICES:
            raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW_CHOICES}, got {on_bad_row!r}")
        self.dataset_name = dataset_name
        self.on_bad_row = on_bad_row
        self.rows = {"video_id": [], "video": [], "caption": []}
        self.bad_rows: list[BadRow] = []
        self._seen: dict[tuple[str, str], str] = {}

    def bad(self, where: str, reason: str):
        self.bad_rows.append(BadRow(where, reason))

    def add(self, where: str, video_id: str, video_path: str | os.PathLike, caption):
        """A row; `video_path` is where the video is, or would be when it is missing."""
        if not isinstance(caption, str):
            self.bad(where, f"malformed caption: expected a string, got {type(caption).__name__}")
        elif not caption.strip():
            self.bad(where, f"empty caption for video {video_id!r}")
        elif (video_id, caption.strip()) in self._seen:
            self.bad(where, f"repeated row: video {video_id!r} with the same caption as {self._seen[video_id, caption.strip()]}")
        else:
            self._seen[video_id, caption.strip()] = where
            self.rows["video_id"].append(video_id)
            self.rows["video"].append({"path": str(Path(video_path).resolve()), "bytes": None})
            self.rows["caption"].append(caption.strip())

    def build(self) -> datasets.Dataset:
        if self.bad_rows:
            if self.on_bad_row == "error":
                raise BadRowsError(self.dataset_name, self.bad_rows)
            warnings.warn(BadRowsSkipped(self.dataset_name, self.bad_rows), stacklevel=3)
        description = f"{self.dataset_name}; {len(self.bad_rows)} bad rows skipped" if self.bad_rows else self.dataset_name
        return datasets.Dataset.from_dict(
            self.rows, features=FEATURES, info=datasets.DatasetInfo(description=description, features=FEATURES)
        )


def video_files_by_stem(videos_dir: str | os.PathLike) -> dict[str, str]:
    """Maps each file name stem under `videos_dir` (recursively, in sorted order) to its path.

    Any extension is accepted, but a file with a video extension (`VIDEO_EXTENSIONS`) wins over other files of the
    same stem (`video7.json` beside `video7.mp4`). When one stem has several video files (the same clip in two
    sub-folders), the first in sorted order is used and a warning names how many stems were ambiguous."""
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"videos folder not found: {videos_dir}")
    index: dict[str, str] = {}
    ambiguous: dict[str, list[str]] = {}
    for root, folders, files in os.walk(videos_dir):
        folders.sort()  # os.walk lists folders in the file system's order: sorted, the choice is the same everywhere
        for name in sorted(files):
            if name.startswith("."):
                continue
            stem, path = os.path.splitext(name)[0], os.path.join(root, name)
            if stem not in index or (_is_video_file(path) and not _is_video_file(index[stem])):
                index[stem] = path
            elif _is_video_file(path):
                ambiguous.setdefault(stem, [index[stem]]).append(path)
    if ambiguous:
        examples = "; ".join(f"{stem}: {', '.join(paths)}" for stem, paths in list(ambiguous.items())[:5])
        warnings.warn(
            f"{len(ambiguous)} video ids under {videos_dir} have more than one video file; the first of each (in "
            f"sorted order) is used, e.g. {examples}",
            stacklevel=2,
        )
    return index


def _is_video_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def _video_path(videos: dict[str, str], videos_dir: str | os.PathLike, video_id: str) -> str:
    """The indexed file of `video_id`, or where it was expected (`videos_dir/<video_id>`) when it is missing."""
    return videos.get(video_id) or os.path.join(videos_dir, video_id)


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of an annotation file (a byte-order mark is dropped); an `AnnotationFileError` naming the
    file, line and byte when it is not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise AnnotationFileError(
            f"{path}:{line}: not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start}); "
            "convert the file to UTF-8"
        ) from None


def read_json(path: str | os.PathLike, expected: type, description: str):
    """The JSON value of `path`, which must be a `expected` (dict or list): else an `AnnotationFileError` naming the
    file, the line and column of a syntax error, or the shape it should have (`description`)."""
    text = read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise AnnotationFileError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None
    if not isinstance(value, expected):
        raise AnnotationFileError(f"{path}: expected {description}, got a JSON {type(value).__name__}")
    return value


def _read_id_list(path: Path, collector: "_RowCollector") -> list[str]:
    """The ids of a split list, one a line; a repeated id is a bad row (the first is kept)."""
    ids, first_line = [], {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        video_id = line.strip()
        if not video_id:
            continue
        if video_id in first_line:
            collector.bad(f"{path.name}:{number}", f"repeated video id {video_id!r} (first at line {first_line[video_id]})")
            continue
        first_line[video_id] = number
        ids.append(video_id)
    return ids


def _read_csv(path: Path, required_columns: tuple[str, ...], collector: "_RowCollector", delimiter: str = ",") -> list[tuple[int, dict]]:
    """(line number, row) pairs of a CSV file with a header, fields quoted as the csv module (RFC 4180) does: a
    quoted caption with commas is one field. A row with more or fewer fields than the header (an unquoted comma in
    a caption, a cut line) is a bad row. A missing header column is an error for the whole file."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise AnnotationFileError(f"{path}: empty file, expected a header with {list(required_columns)}") from None
    except csv.Error as error:
        raise AnnotationFileError(f"{path}:1: malformed CSV header ({error})") from None
    missing = [column for column in required_columns if column not in header]
    if missing:
        raise AnnotationFileError(f"{path}: missing column(s) {missing}; header is {header}")
    rows = []
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            collector.bad(f"{path.name}:{line}", f"malformed CSV row: {error}")
            continue
        if not fields or fields == [""]:
            continue
        if len(fields) != len(header):
            collector.bad(
                f"{path.name}:{line}",
                f"malformed CSV row: {len(fields)} fields, the header has {len(header)} (quote a caption that "
                'contains the delimiter: "a, b")',
            )
            continue
        rows.append((line, dict(zip(header, fields))))
    return rows


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
    videos = video_files_by_stem(videos_dir)
    collector = _RowCollector(f"MSR-VTT {split} ({split_file})", on_bad_row)

    if split == "test_1k_a":
        first_line = {}
        for line, row in _read_csv(split_file, ("video_id", "sentence"), collector):
            video_id, where = row["video_id"].strip(), f"{split_file.name}:{line}"
            if not video_id:
                collector.bad(where, "malformed row: empty video_id")
            elif video_id in first_line:  # 1k-A pairs each test video with one sentence
                collector.bad(where, f"repeated video id {video_id!r} (first at line {first_line[video_id]})")
            else:
                first_line[video_id] = line
                collector.add(where, video_id, _video_path(videos, videos_dir, video_id), row["sentence"])
        return collector.build()

    video_ids, first_line = [], {}
    for line, row in _read_csv(split_file, ("video_id",), collector):
        video_id = row["video_id"].strip()
        if not video_id:
            collector.bad(f"{split_file.name}:{line}", "malformed row: empty video_id")
        elif video_id in first_line:
            collector.bad(f"{split_file.name}:{line}", f"repeated video id {video_id!r} (first at line {first_line[video_id]})")
        else:
            first_line[video_id] = line
            video_ids.append(video_id)
    json_path = annotations_dir / "MSRVTT_data.json"
    data = read_json(json_path, dict, 'an object with a "sentences" list')
    sentences = data.get("sentences")
    if not isinstance(sentences, list):
        raise AnnotationFileError(f"{json_path}: expected a \"sentences\" list, got {type(sentences).__name__}")
    captions_by_video = {video_id: [] for video_id in video_ids}
    for position, sentence in enumerate(sentences):
        video_id = sentence.get("video_id") if isinstance(sentence, dict) else None
        if isinstance(video_id, str) and video_id not in captions_by_video:
            continue  # another split's caption
        if not isinstance(video_id, str) or "caption" not in sentence:
            collector.bad(f"{json_path.name}:sentences[{position}]", "malformed record: needs video_id and caption")
            continue
        captions_by_video[video_id].append((position, sentence["caption"]))
    for video_id in video_ids:
        if not captions_by_video[video_id]:
            collector.bad(f"{split_file.name}:{first_line[video_id]}", f"malformed: no caption for video {video_id!r} in {json_path.name}")
        for position, caption in captions_by_video[video_id]:
            collector.add(f"{json_path.name}:sentences[{position}]", video_id, _video_path(videos, videos_dir, video_id), caption)
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
    captions_path = annotations_dir / "raw-captions.pkl"
    with open(captions_path, "rb") as file:
        try:
            captions = _PlainDataUnpickler(file).load()
        except (EOFError, ValueError, TypeError, IndexError) as error:
            raise AnnotationFileError(f"{captions_path}: not a readable pickle ({error})") from None
    if not isinstance(captions, dict):
        raise AnnotationFileError(f"{captions_path}: expected a dict of video id -> captions, got {type(captions).__name__}")
    videos = video_files_by_stem(videos_dir)
    collector = _RowCollector(f"MSVD {split} ({list_path})", on_bad_row)
    for video_id in _read_id_list(list_path, collector):
        if not isinstance(captions.get(video_id), list):
            collector.bad(f"{list_path.name}:{video_id}", f"malformed: no caption list for video {video_id!r} in raw-captions.pkl")
            continue
        for number, caption in enumerate(captions[video_id]):
            # Captions are stored tokenised (a list of words); the authors join them with spaces.
            if isinstance(caption, list) and all(isinstance(word, str) for word in caption):
                caption = " ".join(caption)
            collector.add(f"raw-captions.pkl:{video_id}[{number}]", video_id, _video_path(videos, videos_dir, video_id), caption)
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
    annotations = read_json(annotations_dir / "vatex_data.json", dict, 'an object {video_id: {"enCap": [...]}}')
    videos = video_files_by_stem(videos_dir)
    collector = _RowCollector(f"VATEX {split} ({list_path})", on_bad_row)
    for video_id in _read_id_list(list_path, collector):
        record = annotations.get(video_id)
        if not isinstance(record, dict) or not isinstance(record.get("enCap"), list):
            collector.bad(f"vatex_data.json:{video_id}", f"malformed: no enCap list for video {video_id!r}")
            continue
        for number, caption in enumerate(record["enCap"]):
            collector.add(f"vatex_data.json:{video_id}.enCap[{number}]", video_id, _video_path(videos, videos_dir, video_id), caption)
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
    lines (several sentences); the test file has one sentence per clip. The file has no header and no quoting: each
    line is exactly six tab-separated fields."""
    if split not in LSMDC_SPLIT_FILES:
        raise ValueError(f"unknown LSMDC split {split!r}; choose from {list(LSMDC_SPLIT_FILES)}")
    annotation_path = Path(annotations_dir) / LSMDC_SPLIT_FILES[split]
    videos = video_files_by_stem(videos_dir)
    collector = _RowCollector(f"LSMDC {split} ({annotation_path})", on_bad_row)
    for line_number, line in enumerate(read_text(annotation_path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"{annotation_path.name}:{line_number}"
        if len(fields) != 6:
            collector.bad(where, f"malformed line: expected 6 tab-separated fields, got {len(fields)}")
            continue
        clip_id, sentence = fields[0].strip(), fields[5]
        collector.add(where, clip_id, _video_path(videos, videos_dir, clip_id), sentence)
    return collector.build()


# Your own videos -------------------------------------------------------------------------------------------------

METADATA_FILE_NAMES = ("metadata.csv", "metadata.jsonl")


def load_video_folder(
    folder: str | os.PathLike, metadata_file: str | os.PathLike | None = None, on_bad_row: str = "error"
) -> datasets.Dataset:
    """Videos in `folder` laid out as `datasets`' `videofolder`, described by `metadata.csv` or `metadata.jsonl` (or
    `metadata_file`), with the rows checked (see the module docstring).

    Each row names a video relative to the metadata file's folder in a `file_name` column and gives a `caption`. A
    video with several captions has several rows, or in JSON Lines a list of captions. The `video_id` column is the
    file name as written in the metadata. The rows are those `datasets.load_dataset("videofolder",
    data_dir=folder)` reads (plus `video_id`, and one row per caption), with the video column undecoded; use
    `load_hub_dataset("videofolder", data_dir=folder)` for datasets' own builder without these checks.
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
        records = [
            (line, row["file_name"], row["caption"])
            for line, row in _read_csv(metadata_file, ("file_name", "caption"), collector)
        ]
    elif metadata_file.suffix == ".jsonl":
        records = []
        for line_number, line in enumerate(read_text(metadata_file).splitlines(), start=1):
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
            records.append((line_number, record.get("file_name"), record.get("caption")))
    else:
        raise ValueError(f"{metadata_file}: metadata must be .csv or .jsonl")

    resolved_base = base.resolve()
    for line_number, video, caption in records:
        where = f"{metadata_file.name}:{line_number}"
        if not isinstance(video, str) or not video.strip() or caption is None:
            collector.bad(where, "malformed row: needs a file_name and a caption")
            continue
        path = (base / video.strip()).resolve()
        if resolved_base not in path.parents:
            collector.bad(where, f"malformed row: file_name {video!r} points outside {base}")
            continue
        captions = caption if isinstance(caption, list) else [caption]
        if not captions:
            collector.bad(where, f"empty caption for video {video!r}: empty list")
        for single_caption in captions:
            collector.add(where, video.strip(), path, single_caption)
    return collector.build()


# Any dataset datasets can load -------------------------------------------------------------------------------------

VIDEO_COLUMN_CANDIDATES = ("video", "mp4", "avi", "webm", "mkv", "mov", "video_path", "file_name")
CAPTION_COLUMN_CANDIDATES = ("caption", "captions", "text", "txt", "sentence", "sentences", "enCap", "json.caption")
ID_COLUMN_CANDIDATES = ("video_id", "videoid", "__key__", "id", "key")


def _column_value(row: dict, column: str):
    """`row[column]`, where `json.caption` reaches into a JSON object column (webdataset's `.json` files)."""
    if column in row:
        return row[column]
    head, _, rest = column.partition(".")
    value = row.get(head)
    if isinstance(value, (bytes, str)):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value.get(rest) if isinstance(value, dict) and rest else None


def _pick_column(features: datasets.Features | None, given: str | None, candidates: tuple[str, ...], what: str, flag: str, wanted_type=None) -> str:
    names = list(features or {})
    if given:
        if features is not None and given.split(".")[0] not in names:
            raise ValueError(f"{flag} {given!r}: no such column; the dataset has {names}")
        return given
    if wanted_type is not None:
        typed = [name for name, feature in (features or {}).items() if isinstance(feature, wanted_type)]
        if typed:
            return typed[0]
    for candidate in candidates:
        if candidate.split(".")[0] in names:
            return candidate
    raise ValueError(f"no {what} column found among {names}: pass {flag}")


def load_hub_dataset(
    path: str,
    name: str | None = None,
    *,
    split: str = "train",
    data_files=None,
    data_dir: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    streaming: bool = False,
    video_column: str | None = None,
    caption_column: str | None = None,
    id_column: str | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Any dataset `datasets.load_dataset(path, name, ...)` reads, as (video_id, video, caption) rows.

    `path` is a Hub dataset id or a builder (`videofolder`, `parquet`, `arrow`, `webdataset`, ...) with `data_files`
    or `data_dir`. The columns are found by type and name unless given: the video is the first `Video` feature (or
    `video`, `mp4`, ... holding `{"path", "bytes"}` or a path string), the caption `caption`, `text`, `txt`, ...
    (`json.caption` reads a key of webdataset's `.json` files; a list of captions gives one row each), the id
    `video_id`, `__key__`, ... or else the video's path. Rows without a caption or a video are left out with a
    warning (streamed: as they go by, a warning for each read batch of 64 rows that had any). The video is
    cast to `Video(decode=False)`: frames are decoded by this project's processor, never by torchcodec.
    """
    try:
        dataset = datasets.load_dataset(
            path, name, split=split, data_files=data_files, data_dir=data_dir, revision=revision, token=token,
            streaming=streaming,
        )
    except Exception as error:
        raise unreadable_files_error(f"{path} {split}", local_data_files(data_files), error) or error
    features = dataset.features
    video_column = _pick_column(features, video_column, VIDEO_COLUMN_CANDIDATES, "video", "--video_column", datasets.Video)
    caption_column = _pick_column(features, caption_column, CAPTION_COLUMN_CANDIDATES, "caption", "--caption_column")
    try:
        id_column = _pick_column(features, id_column, ID_COLUMN_CANDIDATES, "id", "--id_column")
    except ValueError:
        id_column = None
    if features is not None and isinstance(features.get(video_column), datasets.Video):
        dataset = dataset.cast_column(video_column, VIDEO_FEATURE)
    where = f"{path}{'/' + name if name else ''} {split}"

    def to_rows(batch: dict) -> dict:
        rows = {"video_id": [], "video": [], "caption": []}
        size = len(next(iter(batch.values())))
        giving = set()  # the rows that give at least one pair
        for index in range(size):
            row = {column: values[index] for column, values in batch.items()}
            video = row.get(video_column)
            if isinstance(video, str):
                video = {"path": video, "bytes": None}
            if not isinstance(video, dict) or not (video.get("bytes") or video.get("path")):
                continue
            captions = _column_value(row, caption_column)
            captions = captions if isinstance(captions, list) else [captions]
            if isinstance(captions, list) and captions and isinstance(captions[0], bytes):
                captions = [caption.decode("utf-8", "replace") for caption in captions]
            video_id = _column_value(row, id_column) if id_column else None
            if video_id in (None, ""):
                # No id: the file's path, or for bytes without one their digest (one id per distinct video).
                video_id = video.get("path") or f"sha256:{hashlib.sha256(video['bytes']).hexdigest()[:32]}"
            video_id = str(video_id)
            for caption in captions:
                if isinstance(caption, bytes):
                    caption = caption.decode("utf-8", "replace")
                if isinstance(caption, str) and caption.strip():
                    rows["video_id"].append(video_id)
                    rows["video"].append({"path": video.get("path"), "bytes": video.get("bytes")})
                    rows["caption"].append(caption.strip())
                    giving.add(index)
        if streaming and len(giving) < size:
            warnings.warn(f"{where}: {size - len(giving)} of {size} streamed rows without a video or a non-empty "
                          "caption were left out")
        return rows

    columns = list(features) if features is not None else None
    if streaming:
        return dataset.map(to_rows, batched=True, batch_size=64, remove_columns=columns, features=FEATURES)
    before = len(dataset)
    try:
        rows = dataset.map(to_rows, batched=True, remove_columns=columns, features=FEATURES, desc=f"rows of {where}")
    except Exception as error:
        raise unreadable_files_error(where, local_data_files(data_files), error) or error
    if len(rows) == 0:
        raise ValueError(f"{where}: no row with a video and a non-empty caption (columns {video_column!r}, {caption_column!r})")
    check_video_ids(rows, where, id_column and f"--id_column {id_column!r}")
    if len(rows) < before and not isinstance(features.get(caption_column), datasets.Sequence):
        warnings.warn(f"{where}: {before - len(rows)} of {before} rows without a video or a non-empty caption were left out")
    return rows


def check_video_ids(dataset: datasets.Dataset, where: str, id_source: str | None = None):
    """Refuses a split in which one video id names two different videos (other embedded bytes, or another file):
    retrieval would count them as one video, and training would take them for the same clip. Names the rows (the
    split's row numbers, from 0) of up to ten such ids."""
    first: dict[str, tuple[str, int]] = {}
    clashes: dict[str, list[int]] = {}
    table = dataset.select_columns(["video_id", "video"]).with_format("arrow")
    for start in range(0, len(dataset), 10_000):
        chunk = table[start : start + 10_000]
        video = chunk.column("video").combine_chunks()
        for offset, (video_id, path, data) in enumerate(zip(
            chunk.column("video_id").to_pylist(), video.field("path").to_pylist(), video.field("bytes").to_pylist()
        )):
            identity = f"sha256:{hashlib.sha256(data).hexdigest()}" if data else f"path:{path}"
            seen = first.setdefault(video_id, (identity, start + offset))
            if seen[0] != identity:
                clashes.setdefault(video_id, [seen[1]]).append(start + offset)
    if clashes:
        examples = "; ".join(f"id {video_id!r}: rows {', '.join(map(str, rows[:5]))}{' ...' if len(rows) > 5 else ''}"
                             for video_id, rows in list(clashes.items())[:10])
        raise ValueError(
            f"{where}: {len(clashes)} video ids each name more than one video ({examples}). Each video needs its own "
            f"id{f' in {id_source}' if id_source else ''}: pass --id_column with one id per video."
        )


def local_data_files(data_files) -> list[str]:
    """The local files `data_files` (a pattern, a list, or split -> patterns) names, sorted."""
    if data_files is None:
        return []
    patterns = data_files.values() if isinstance(data_files, dict) else [data_files]
    flat = [pattern for group in patterns for pattern in ([group] if isinstance(group, str) else group)]
    return sorted({path for pattern in flat for path in glob.glob(pattern) if os.path.isfile(path)})


def _check_readable(path: str):
    """Raises when `path` is cut short or not what its extension says: a tar member that ends past the end of the
    file, a parquet file without its footer."""
    if path.endswith(".tar"):
        size = os.path.getsize(path)
        with tarfile.open(path) as tar:
            for member in tar:
                if member.offset_data + member.size > size:
                    raise EOFError(f"truncated: {member.name} ends at byte {member.offset_data + member.size} of "
                                   f"a {size}-byte file")
    elif path.endswith(".parquet"):
        import pyarrow.parquet

        pyarrow.parquet.ParquetFile(path).metadata


def unreadable_files_error(where: str, files: list[str], error: BaseException) -> ValueError | None:
    """After `error` while reading `files`: a ValueError naming the files that are cut short or unreadable, or
    None when they all read (the error is something else)."""
    bad = []
    for path in files:
        try:
            _check_readable(path)
        except Exception as problem:  # noqa: BLE001 - any failure makes this the file to name
            bad.append(f"{path}: {type(problem).__name__}: {problem}")
    if not bad:
        return None
    problem = ValueError(f"{where}: {len(bad)} data file(s) cannot be read ({type(error).__name__}: {error}):\n  "
                         + "\n  ".join(bad[:20]) + "\nreplace or remove them.")
    problem.__cause__ = error
    return problem


def group_by_video(dataset: datasets.Dataset) -> tuple[list[str], list[dict], list[int]]:
    """(video ids, videos, caption -> video index) of a split, videos (their `{"path", "bytes"}` values) in order of
    first appearance.

    The retrieval metrics rank, for caption i, all videos and look for video `caption_video_index[i]`.
    """
    video_ids, videos, position = [], [], {}
    caption_video_index = []
    for video_id, video in zip(dataset["video_id"], dataset["video"]):
        if video_id not in position:
            position[video_id] = len(video_ids)
            video_ids.append(video_id)
            videos.append(as_video(video))
        caption_video_index.append(position[video_id])
    return video_ids, videos, caption_video_index


def as_video(value) -> dict:
    """A `{"path", "bytes"}` dict from what a video column holds (that dict, or a path string)."""
    if isinstance(value, (str, os.PathLike)):
        return {"path": os.fspath(value), "bytes": None}
    if isinstance(value, dict) and (value.get("path") or value.get("bytes")):
        return {"path": value.get("path"), "bytes": value.get("bytes")}
    raise ValueError(f"not a video: expected a path or a {{'path', 'bytes'}} dict, got {type(value).__name__}")
