"""Video search under faults and misuse: an indexer killed between its writes, damaged parts and index files, a
foreign model, a file changed while it is decoded, a second indexer, and bad `top_k`. Every fault ends in an index
that loads, or in an error naming the damaged file and the repair command."""

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2video.apps.search import IndexDamagedError, ModelMismatchError, SearchParameters, VideoIndex
from clip2video.apps.search.index_build import IndexLock
from clip2video.apps.search.indexer import VideoFiles
from clip2video.apps.search import query_videos
from clip2video.apps.search.query_videos import search_texts
from clip2video.modeling_clip2video import CLIP2VideoModel
from tests.helpers.models import tiny_processor
from tests.helpers.processes import run_module
from tests.helpers.videos import COLOURS, write_square_video


pytest.importorskip("faiss")


# Ends the process like a kill (no cleanup, no `finally`) at the `nth` rename to a name starting with `prefix`,
# before or right after that rename.
KILL_AT_RENAME = """
import os
_replace, _seen = os.replace, []
def _killing_replace(source, destination, *args, **kwargs):
    matches = os.path.basename(destination).startswith({prefix!r})
    _seen.extend([1] if matches else [])
    if matches and len(_seen) == {nth} and {before}:
        os._exit(9)
    _replace(source, destination, *args, **kwargs)
    if matches and len(_seen) == {nth} and not {before}:
        os._exit(9)
os.replace = _killing_replace
"""


def kill_at_rename(prefix: str, before: bool, nth: int = 1) -> str:
    return KILL_AT_RENAME.format(prefix=prefix, before=before, nth=nth)


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_checkpoints):
    folder = tmp_path_factory.mktemp("faults")
    checkpoint = tiny_checkpoints(with_apps=False)
    videos = folder / "videos"
    videos.mkdir()
    for name in ("red", "green", "blue"):
        write_square_video(videos / f"{name}.mp4", COLOURS[name], num_frames=12)
    index_dir = folder / "index"
    # An approximate index, so that the FAISS file exists too.
    index(checkpoint, videos, index_dir)
    return folder, checkpoint, videos, index_dir


@pytest.fixture
def copy(base, tmp_path):
    """A private copy of the videos and the index (copy2 keeps the sizes and mtimes the index recorded)."""
    _, checkpoint, videos, index_dir = base
    shutil.copytree(videos, tmp_path / "videos")
    shutil.copytree(index_dir, tmp_path / "index")
    return checkpoint, tmp_path / "videos", tmp_path / "index"


def index(checkpoint, videos, index_dir, *extra, prelude="", check=True):
    """`python -m clip2video.apps.search.index_videos` building an approximate index (so that the FAISS file exists
    too), with `prelude` run first in the same process."""
    return run_module(
        "clip2video.apps.search.index_videos", "--model", checkpoint, "--videos", videos, "--index_dir", index_dir,
        "--index_type", "ivf", *extra, prelude=prelude, check=check,
    )


def stored_files(index_dir: Path) -> list[str]:
    own = (".lock", "unreadable.json", ".clip2video-index")  # the lock, the report, the ledger of the index's files
    return sorted(p.name for p in index_dir.iterdir() if p.is_file() and p.name not in own)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["before index.json", "after index.json"])
def test_killed_between_writes_leaves_a_loadable_index(copy, moment):
    checkpoint, videos, index_dir = copy
    old_paths = VideoIndex(index_dir).paths
    write_square_video(videos / "yellow.mp4", COLOURS["yellow"], num_frames=12)
    if moment == "before index.json":  # new table renamed, killed renaming the embeddings
        prelude = kill_at_rename("embeddings-", before=True)
    else:  # index.json switched, killed before the old generation is removed
        prelude = kill_at_rename("index.json", before=False)
    killed = index(checkpoint, videos, index_dir, prelude=prelude, check=False)
    assert killed.returncode == 9, killed.stderr[-3000:]

    survivor = VideoIndex(index_dir, verify=True)
    if moment == "before index.json":
        assert survivor.paths == old_paths  # the old generation, untouched
    else:
        assert survivor.paths == sorted(old_paths + ["yellow.mp4"])
    assert len(survivor.search(np.ones(survivor.metadata["embedding_dim"], np.float32) / 8, k=2)) == 2

    # The next run resumes from the part the killed one wrote, and removes what the kill left behind.
    output = index(checkpoint, videos, index_dir).stdout
    assert "4 already indexed, 0 to index" in output, output
    repaired = VideoIndex(index_dir, verify=True)
    assert repaired.paths == sorted(old_paths + ["yellow.mp4"])
    assert len(stored_files(index_dir)) == 6  # index.json, table, embeddings, frames, frame times, FAISS index
    assert not list(index_dir.glob(".*.tmp")) and list((index_dir / "parts").iterdir()) == []


@pytest.mark.slow
def test_damaged_parts_are_quarantined_and_their_videos_indexed_again(copy):
    checkpoint, videos, index_dir = copy
    write_square_video(videos / "yellow.mp4", COLOURS["yellow"], num_frames=12)
    write_square_video(videos / "cyan.mp4", (20, 220, 220), num_frames=12)
    # One part per video, killed while renaming the second: one real part on disk.
    killed = index(
        checkpoint, videos, index_dir, "--batch_size", 1, "--save_every", 1,
        prelude=kill_at_rename("part-", before=True, nth=2),
        check=False,
    )
    assert killed.returncode == 9, killed.stderr[-3000:]
    [part] = list((index_dir / "parts").glob("part-*.arrow"))
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # truncated
    (index_dir / "parts" / f"part-{0:020d}-000-{'0' * 32}.arrow").write_bytes(os.urandom(500))  # garbage
    altered = index_dir / "parts" / f"part-{1:020d}-000-{'1' * 32}.arrow"
    shutil.copy(part, altered)

    output = index(checkpoint, videos, index_dir).stdout
    assert output.count("Quarantined the damaged part") == 3, output
    assert "5 videos" in output and "3 already indexed, 2 to index" in output, output
    assert sorted(p.name for p in (index_dir / "quarantine").iterdir()) == sorted([part.name, altered.name, f"part-{0:020d}-000-{'0' * 32}.arrow"])
    assert VideoIndex(index_dir, verify=True).paths == ["blue.mp4", "cyan.mp4", "green.mp4", "red.mp4", "yellow.mp4"]


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path):
    path.write_bytes(b"\x00not what was written" * 10)


def _flip_a_value(path: Path):
    # The last float of the file: a change that keeps its size, found by the checksum and by the unit-norm check.
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x7C
    path.write_bytes(bytes(data))


DAMAGES = {
    "index.json garbage": ("index.json", _garbage),
    "index.json truncated": ("index.json", _truncate),
    "table truncated": ("table", _truncate),
    "table garbage of the same size": ("table", lambda p: p.write_bytes(os.urandom(p.stat().st_size))),
    "embeddings truncated": ("embeddings", _truncate),
    "frames garbage": ("frames", _garbage),
    "frame times missing": ("frame_times", lambda p: p.unlink()),
    "faiss garbage": ("vectors", _garbage),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_file_gives_an_error_naming_it_and_the_repair(copy, damage):
    _, _, index_dir = copy
    key, corrupt = DAMAGES[damage]
    files = json.loads((index_dir / "index.json").read_text())["files"]
    path = index_dir / ("index.json" if key == "index.json" else files[key])
    corrupt(path)
    with pytest.raises(IndexDamagedError, match=re.escape(str(path))) as error:
        VideoIndex(index_dir)
    assert str(path) in str(error.value) and "--rebuild" in str(error.value)


def test_a_changed_value_is_found_by_verify_and_by_the_search(copy):
    _, _, index_dir = copy
    files = json.loads((index_dir / "index.json").read_text())["files"]
    _flip_a_value(index_dir / files["embeddings"])
    VideoIndex(index_dir)  # same size: opens
    with pytest.raises(IndexDamagedError, match=files["embeddings"]):
        VideoIndex(index_dir, verify=True)
    index = VideoIndex(index_dir)
    last = len(index) - 1
    # A query pointing at the damaged row: the row is never returned with a wrong score.
    query = np.zeros(index.metadata["embedding_dim"], np.float32)
    query[:] = np.sign(np.asarray(index.embeddings[last], np.float32)) / np.sqrt(len(query))
    for parameters in (SearchParameters(exact=True), SearchParameters()):
        with pytest.raises(IndexDamagedError, match="not a unit vector"):
            index.nearest(query, k=len(index), parameters=parameters)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["faiss garbage", "embeddings truncated"])
def test_rebuild_repairs_a_damaged_index(copy, damage):
    checkpoint, videos, index_dir = copy
    paths = VideoIndex(index_dir).paths
    key, corrupt = DAMAGES[damage]
    corrupt(index_dir / json.loads((index_dir / "index.json").read_text())["files"][key])
    refused = index(checkpoint, videos, index_dir, check=False)
    if key != "vectors":  # the indexer rebuilds the FAISS index anyway; other damage stops it, naming the file
        assert refused.returncode != 0 and "--rebuild" in refused.stderr + refused.stdout
    output = index(checkpoint, videos, index_dir, "--rebuild").stdout
    # A damaged FAISS index is rebuilt from the intact embeddings; damaged embeddings are embedded again.
    expected = "3 already indexed, 0 to index" if key == "vectors" else "0 already indexed, 3 to index"
    assert expected in output, output
    assert VideoIndex(index_dir, verify=True).paths == paths


@pytest.mark.slow
def test_a_foreign_model_is_refused_unless_forced(copy, tiny_checkpoints, capsys):
    checkpoint, videos, index_dir = copy
    other = tiny_checkpoints(seed=1, with_apps=False)  # same widths, other weights
    index_ = VideoIndex(index_dir)
    own, foreign = (CLIP2VideoModel.from_pretrained(c).eval() for c in (checkpoint, other))
    processor = tiny_processor()
    search_texts(index_, own, processor, ["red"], top_k=2)
    with pytest.raises(ModelMismatchError, match="not comparable"):
        search_texts(index_, foreign, processor, ["red"], top_k=2)
    assert len(search_texts(index_, foreign, processor, ["red"], top_k=2, force=True)[0]) == 2

    # The query command's own `main` in this process (a fresh interpreter per call cost most of this test's time):
    # its refusal is the SystemExit message it would print, exit status 1.
    query = ["--index_dir", str(index_dir), "--model", str(other), "red"]
    with pytest.raises(SystemExit, match="--force"):
        query_videos.main(query)
    capsys.readouterr()
    query_videos.main([*query, "--force"])
    assert "red.mp4" in capsys.readouterr().out

    refused = index(other, videos, index_dir, check=False)
    assert refused.returncode != 0 and "--rebuild" in refused.stderr, refused.stderr[-2000:]
    assert "0 already indexed, 3 to index" in index(other, videos, index_dir, "--rebuild").stdout
    VideoIndex(index_dir).check_model(foreign)


class ChangingProcessor:
    """The real processor, rewriting the video while decoding it (the first `changes` times)."""

    def __init__(self, path: Path, changes: int):
        self.processor, self.path, self.changes = tiny_processor(), path, changes

    def __call__(self, **kwargs):
        outputs = self.processor(**kwargs)
        if self.changes:
            self.changes -= 1
            write_square_video(self.path, COLOURS["blue"], num_frames=12 + self.changes)
            os.utime(self.path, ns=(time.time_ns(), time.time_ns() + 10**9 * self.changes))
        return outputs


def test_a_file_changed_while_decoded_is_read_again_or_reported(tmp_path):
    path = Path(write_square_video(tmp_path / "clip.mp4", COLOURS["red"], num_frames=12))
    item = VideoFiles([path], tmp_path, ChangingProcessor(path, changes=1))[0]
    stat = path.stat()
    assert item["key"] == ("clip.mp4", stat.st_size, stat.st_mtime_ns)  # the key of what was decoded
    fresh = tiny_processor()(videos=[str(path)], return_tensors="pt")
    torch.testing.assert_close(item["inputs"]["pixel_values_videos"], fresh["pixel_values_videos"])

    item = VideoFiles([path], tmp_path, ChangingProcessor(path, changes=10))[0]
    assert "key" not in item and "kept changing" in item["error"]


@pytest.mark.slow
def test_a_second_indexer_exits_with_a_message_or_waits(copy):
    checkpoint, videos, index_dir = copy
    with IndexLock(index_dir):
        refused = index(checkpoint, videos, index_dir, check=False)
        assert refused.returncode != 0 and "being written by another indexer" in refused.stderr, refused.stderr[-2000:]
        assert f"pid {os.getpid()}" in refused.stderr

        entered = threading.Event()

        def second():
            with IndexLock(index_dir, wait=True):
                entered.set()

        waiter = threading.Thread(target=second)
        waiter.start()
        assert not entered.wait(0.5)  # blocked while the first holds the lock
    assert entered.wait(10)
    waiter.join()


def test_top_k_and_search_settings_must_be_positive(copy, capsys):
    _, _, index_dir = copy
    for top_k in ("0", "-1", "two"):
        with pytest.raises(SystemExit, match="^2$") as exit_:  # argparse's usage error; the message goes to stderr
            query_videos.main(["--index_dir", str(index_dir), "red", "--top_k", top_k])
        assert exit_.value.code == 2 and "--top_k" in capsys.readouterr().err
    for option in ("--candidates", "--nprobe", "--ef_search"):
        with pytest.raises(SystemExit, match="^2$"):
            query_videos.main(["--index_dir", str(index_dir), "red", option, "0"])
        assert option in capsys.readouterr().err
    index_ = VideoIndex(index_dir)
    query = np.ones(index_.metadata["embedding_dim"], np.float32)
    query /= np.linalg.norm(query)
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index_.search(query, k=k)
    with pytest.raises(ValueError, match="candidates"):
        index_.search(query, k=1, parameters=SearchParameters(candidates=0))
    with pytest.raises(ValueError, match="nprobe"):
        index_.search(query, k=1, parameters=SearchParameters(nprobe=-2))
    with pytest.raises(ValueError, match="shape"):
        index_.search(np.ones(7, np.float32), k=1)
    with pytest.raises(ValueError, match="NaN"):
        index_.search(np.full_like(query, np.nan), k=1)
    assert len(index_.search(query, k=100)) == len(index_)  # more than stored: all of them
