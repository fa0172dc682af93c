"""Video search's data safety: the indexer never removes (or writes beside) a file it did not write, whatever the
names and the folder layout; a kill at any step of a commit leaves a queryable index; the lock is not kept by
orphaned decoding workers; a query racing commits never fails; the model is recorded so that it is found from any
directory and never taken for a Hub id; hostile files in the index folder (FIFOs, links to devices, hand-edited
`index.json`) give named errors instead of hangs; workers decoding after the parent decoded do not hang."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from clip2video.apps.search import IndexDamagedError, VideoIndex
from clip2video.apps.search import index_videos, query_videos
from clip2video.apps.search.index_build import (
    LEDGER_FILE, IndexLock, VectorIndexOptions, collect_garbage, foreign_entries, load_parts, read_ledger, write_ledger,
)
from clip2video.apps.search.indexer import IndexingOptions, VideoIndexer
from clip2video.apps.search.query_videos import search_texts
from clip2video.modeling_clip2video import CLIP2VideoModel
from tests.helpers.models import tiny_processor
from tests.helpers.processes import REPO, environment, start_process
from tests.helpers.search_fixtures import recommit as recommit_with
from tests.helpers.videos import COLOURS, write_square_video


# Names a user may keep that look like the indexer's (prefixes of its generation files, its temporaries, its fixed
# names in a folder that is not an index), dotfiles, a subfolder, and links.
FOREIGN_FILES = [
    "videos-holiday.mp4", "embeddings-v1.npy", "frames-2024.npy", "frame_times-notes.npy", "vectors-old.faiss",
    "videos-0123456789abcdef0123.arrow.bak", ".embeddings-v1.npy.tmp", ".hidden", "index.json", "part-1.arrow",
]
NON_UTF8_NAME = os.fsdecode(b"caf\xe9.mp4")


def python(arguments: list, cwd: Path, cpu_budget: float, prelude: str = "") -> subprocess.CompletedProcess:
    """`python -c <prelude; run the module>` or `python <arguments>` in `cwd`, offline, one thread. The whole process
    group (decoding workers included) is killed, failing the test, if it uses `cpu_budget` CPU seconds or none for
    minutes (`wait_for_event`): a bound on its work, which a loaded machine does not reach as it does a time."""
    env = environment(
        HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    if prelude:
        module, *rest = arguments
        code = f"import sys, runpy\n{prelude}\nsys.argv = [{module!r}, *sys.argv[1:]]\nrunpy.run_module({module!r}, run_name='__main__')"
        arguments = ["-c", code, *rest]
    with tempfile.TemporaryDirectory() as outputs:
        # Its own HF_HOME: no other process copies the checkpoint's remote code into its module cache at the same time.
        env["HF_HOME"] = str(Path(outputs, "hf_home"))
        stdout, stderr = Path(outputs, "stdout"), Path(outputs, "stderr")
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            process = start_process(
                [sys.executable, *arguments], cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True,
            )
        try:
            wait_for_event(lambda: process.poll() is not None, process, "the process did not end", cpu_budget, stderr)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # its workers, if it left any (or it, if it failed)
            except ProcessLookupError:
                pass
            process.wait()
        return subprocess.CompletedProcess(
            process.args, process.returncode, stdout.read_text(errors="replace"), stderr.read_text(errors="replace")
        )


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder` (links not followed): kind and contents (bytes, link target) or nothing."""
    entries = {}
    for directory, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(directory) / name
            relative = os.fsencode(path.relative_to(folder))
            if path.is_symlink():
                entries[relative] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[relative] = ("folder",)
            else:
                entries[relative] = ("file", path.read_bytes(), path.stat().st_mtime_ns)
    return entries


def plant_foreign_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FOREIGN_FILES:
        if not (folder / name).exists():  # an index's own index.json stays
            (folder / name).write_bytes(f"the user's {name}".encode())
    (folder / "videos-archive").mkdir()
    (folder / "videos-archive" / "embeddings-2.npy").write_bytes(b"the user's")
    outside = folder.parent / f"{folder.name}-outside.npy"
    outside.write_bytes(b"the target of the user's link")
    (folder / "embeddings-link.npy").symlink_to(outside)


# ----------------------------------------------------------------------------------------------------------------
# One real index, built as a user would from another directory: relative --model, --videos and --index_dir, two
# decoding workers forked after the parent decoded a video, and a file name that is not UTF-8.
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_checkpoints):
    work = tmp_path_factory.mktemp("safety")
    shutil.copytree(tiny_checkpoints(with_apps=False), work / "ckpt")
    videos = work / "videos"
    videos.mkdir()
    for name in ("red", "green", "blue"):
        write_square_video(videos / f"{name}.mp4", COLOURS[name], num_frames=12)
    shutil.copy(videos / "red.mp4", videos / NON_UTF8_NAME)
    parent_decodes = (
        "from transformers import AutoProcessor\n"
        "AutoProcessor.from_pretrained('ckpt', trust_remote_code=True)(videos=['videos/green.mp4'], return_tensors='pt')"
    )
    started = time.monotonic()
    result = python(
        ["clip2video.apps.search.index_videos", "--model", "ckpt", "--videos", "videos", "--index_dir", "index",
         "--index_type", "ivf", "--num_workers", 2],
        cwd=work, cpu_budget=300, prelude=parent_decodes,
    )
    return work, videos, work / "index", result, time.monotonic() - started


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_checkpoints):
    """An IVF index of three videos built in this process by `VideoIndexer`, as the demo builds its indexes: quick,
    for the tests that need an index but not the command line."""
    checkpoint = tiny_checkpoints(with_apps=False)
    folder = tmp_path_factory.mktemp("safety_base")
    videos, index_dir = folder / "videos", folder / "index"
    videos.mkdir()
    for name in ("red", "green", "blue"):
        write_square_video(videos / f"{name}.mp4", COLOURS[name], num_frames=12)
    model, processor = CLIP2VideoModel.from_pretrained(checkpoint).eval(), tiny_processor()
    options = IndexingOptions(vector_index=VectorIndexOptions(index_type="ivf"))
    VideoIndexer(model, processor, options).index(videos, index_dir)
    return checkpoint, videos, index_dir


def private_copy(videos: Path, index_dir: Path, destination: Path) -> tuple[Path, Path]:
    """A copy of the videos and the index (copy2 keeps the sizes and mtimes it recorded), the index pointing at them."""
    shutil.copytree(videos, destination / "videos", symlinks=True)
    shutil.copytree(index_dir, destination / "index", symlinks=True)
    metadata_path = destination / "index" / "index.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["video_root"] = str(destination / "videos")
    metadata_path.write_text(json.dumps(metadata))
    return destination / "videos", destination / "index"


@pytest.fixture
def index_copy(base, tmp_path):
    checkpoint, videos, index_dir = base
    return checkpoint, *private_copy(videos, index_dir, tmp_path)


@pytest.mark.slow
def test_workers_forked_after_a_parent_decode_finish_and_odd_names_are_reported(built):
    work, _, index_dir, result, seconds = built
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Indexed 3 videos" in result.stdout, result.stdout
    # The name that is not UTF-8 is skipped with a report naming it (printable), not a crash of every run.
    assert "caf\\xe9.mp4: the file name is not valid UTF-8" in result.stdout, result.stdout
    unreadable = json.loads((index_dir / "unreadable.json").read_text())
    assert list(unreadable) == ["caf\\xe9.mp4"] and "rename it" in unreadable["caf\\xe9.mp4"]
    assert sorted(VideoIndex(index_dir).paths) == ["blue.mp4", "green.mp4", "red.mp4"]
    print(f"indexed with 2 workers after a parent decode in {seconds:.1f} s")


# ----------------------------------------------------------------------------------------------------------------
# Item 1: never remove, nor write beside, a file the indexer did not write
# ----------------------------------------------------------------------------------------------------------------


def _layout(name: str, tmp_path: Path, videos: Path, index_dir: Path) -> tuple[Path, Path, list[str]]:
    """(--videos, --index_dir, words the refusal must say) of a folder layout the indexer must refuse."""
    if name == "index is the videos folder":
        plant_foreign_files(videos)
        return videos, videos, [str(videos.resolve()), "is, or lies inside, the videos folder"]
    if name == "index inside the videos folder":
        return videos, videos / "my_index", [str(videos.resolve()), "lies inside"]
    if name == "index is a link to the videos folder":
        (tmp_path / "link").symlink_to(videos)
        return videos, tmp_path / "link", [str(videos.resolve()), "is, or lies inside, the videos folder"]
    if name == "index inside the videos folder, reached through a link":
        (tmp_path / "link").symlink_to(videos)
        return videos, tmp_path / "link" / "my_index", [str(videos.resolve()), "lies inside"]
    if name == "videos given through a link, index inside them":
        (tmp_path / "link").symlink_to(videos)
        return tmp_path / "link", videos / "my_index", [str(videos.resolve()), "lies inside"]
    if name == "videos inside the index folder":
        shutil.copytree(videos, index_dir / "videos")
        return index_dir / "videos", index_dir, [str(index_dir), "lies inside --index_dir"]
    if name == "a folder of the user's files":
        plant_foreign_files(tmp_path / "mine")
        return videos, tmp_path / "mine", ["holds files the indexer did not write", "embeddings-v1.npy"]
    if name == "a folder of the user's files named as the indexer names its own":
        mine = tmp_path / "mine"
        (mine / "parts").mkdir(parents=True)
        (mine / "parts" / "notes.txt").write_bytes(b"the user's")
        (mine / ".lock").write_bytes(b"the user's lock file")
        (mine / "unreadable.json").write_bytes(b'{"the user": 1}')
        return videos, mine, ["holds files the indexer did not write", ".lock", "parts", "unreadable.json"]
    if name == "the user's files beside an existing index":
        plant_foreign_files(index_dir)
        return videos, index_dir, ["holds files the indexer did not write", "videos-holiday.mp4", "videos-archive"]
    if name == "a file":
        (tmp_path / "a_file").write_bytes(b"the user's")
        return videos, tmp_path / "a_file", ["a_file is a file, not a folder"]
    raise ValueError(name)


LAYOUTS = [
    "index is the videos folder", "index inside the videos folder", "index is a link to the videos folder",
    "index inside the videos folder, reached through a link", "videos given through a link, index inside them",
    "videos inside the index folder", "a folder of the user's files",
    "a folder of the user's files named as the indexer names its own", "the user's files beside an existing index",
    "a file",
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_unusable_index_folder_is_refused_and_left_untouched(index_copy, tmp_path, layout):
    checkpoint, videos, index_dir = index_copy
    videos_arg, index_arg, words = _layout(layout, tmp_path, videos, index_dir)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit, match=re.escape(words[0])) as refusal:
        index_videos.main(["--model", str(checkpoint), "--videos", str(videos_arg), "--index_dir", str(index_arg)])
    for word in words:
        assert word in str(refusal.value), str(refusal.value)
    assert snapshot(tmp_path) == before  # nothing removed, changed or created (not even the lock file)
    # The demo's indexing takes the same lock, which checks the same way.
    with pytest.raises((SystemExit, ValueError), match="index|folder"):
        with IndexLock(index_arg, videos=videos_arg):
            pass
    assert snapshot(tmp_path) == before


def test_only_files_the_ledger_recorded_are_ever_removed(index_copy):
    _, _, index_dir = index_copy
    plant_foreign_files(index_dir)
    current = VideoIndex(index_dir).metadata["files"]
    # A generation file of the indexer's left by a killed commit, recorded in the ledger before it was created.
    leftover = "embeddings-0000000000000000abcdef.npy"
    write_ledger(index_dir, read_ledger(index_dir) | {leftover})
    (index_dir / leftover).write_bytes(b"\x93NUMPY")
    # A hand-edited ledger naming the user's files (and paths outside the folder) vouches for none of them.
    ledger = json.loads((index_dir / LEDGER_FILE).read_text())
    ledger["files"] += FOREIGN_FILES + ["videos-archive", "embeddings-link.npy", "../index-outside.npy", "/etc/hosts"]
    (index_dir / LEDGER_FILE).write_text(json.dumps(ledger))
    before = snapshot(index_dir)

    collect_garbage(index_dir, keep={name for name in current.values() if name})
    after = snapshot(index_dir)
    assert set(before) - set(after) == {os.fsencode(leftover)}, set(before) - set(after)
    assert all(after[name] == before[name] for name in after if name != os.fsencode(LEDGER_FILE))
    assert VideoIndex(index_dir, verify=True).paths == ["blue.mp4", "green.mp4", "red.mp4"]
    assert set(foreign_entries(index_dir)) >= {"videos-holiday.mp4", "embeddings-link.npy", "videos-archive"}


# A commit in a fresh process, killed (os._exit, as kill -9: no cleanup) just before its `step`-th change of the
# folder (rename, replace or removal); step 0 counts the changes of a whole commit.
COMMIT_KILLED_AT = """
import os, sys
from pathlib import Path
index_dir, step, index_type = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
changes = [0]
def killing(change):
    def wrapped(*args, **kwargs):
        changes[0] += 1
        if changes[0] == step:
            os._exit(9)
        return change(*args, **kwargs)
    return wrapped
os.replace, os.rename, os.unlink, os.remove = map(killing, (os.replace, os.rename, os.unlink, os.remove))
from clip2video.apps.search import VideoIndex
from clip2video.apps.search.index_build import IndexLock, IndexSpec, VectorIndexOptions, commit
with IndexLock(index_dir):
    current = VideoIndex(index_dir, load_vectors=False)
    commit(index_dir, IndexSpec.of(current), current, [], VectorIndexOptions(index_type=index_type))
print("changes", changes[0])
"""


def recommit(index_dir: Path, index_type: str) -> dict:
    with IndexLock(index_dir):
        return recommit_with(index_dir, index_type=index_type)


@pytest.mark.slow
def test_a_kill_at_every_step_of_a_commit_leaves_a_queryable_index(index_copy, tmp_path):
    pytest.importorskip("faiss")
    _, _, index_dir = index_copy
    paths = VideoIndex(index_dir).paths
    dry_run = tmp_path / "dry_run"
    shutil.copytree(index_dir, dry_run)
    counted = python(["-c", COMMIT_KILLED_AT, dry_run, 0, "ivf"], cwd=tmp_path, cpu_budget=120)
    assert counted.returncode == 0, counted.stderr[-3000:]
    steps = int(counted.stdout.split()[-1])
    assert steps >= 12, counted.stdout  # ledger, 5 renames, index.json, the old generation's 5 files, ledger
    for step in range(1, steps + 1):
        folder = tmp_path / f"killed_at_{step}"
        shutil.copytree(index_dir, folder)
        old_generation = VideoIndex(folder).metadata["generation"]
        killed = python(["-c", COMMIT_KILLED_AT, folder, step, "ivf"], cwd=tmp_path, cpu_budget=120)
        assert killed.returncode == 9, (step, killed.stderr[-3000:])
        survivor = VideoIndex(folder, verify=True)  # the old generation or the new one, complete
        assert survivor.paths == paths, step
        assert len(survivor.search(np.ones(survivor.metadata["embedding_dim"], np.float32) / 8, k=2)) == 2
        assert foreign_entries(folder) == [], (step, foreign_entries(folder))  # every leftover is in the ledger
        # The next commit removes what the kill left, and only that.
        metadata = recommit(folder, "ivf")
        assert metadata["generation"] != old_generation
        left = sorted(p.name for p in folder.iterdir() if p.is_file())
        files = sorted(name for name in metadata["files"].values() if name)
        assert left == sorted([".lock", LEDGER_FILE, "index.json", "unreadable.json", *files]), (step, left)
        assert read_ledger(folder) == set(files)
        assert VideoIndex(folder, verify=True).paths == paths


# ----------------------------------------------------------------------------------------------------------------
# Item 5: the lock of a killed indexer is free at once, whatever its decoding workers do
# ----------------------------------------------------------------------------------------------------------------


def child_processes(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) used so far by process `pid` and by the children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def wait_for_event(happened, process: subprocess.Popen, what: str, cpu_budget: float, log: Path,
                   idle_seconds: float = 180) -> None:
    """Waits until `happened()` while `process` runs. The bound is the work the process and its children do, not
    the time: a loaded machine (the CI's two cores at a load of 20 give each process a tenth of a core) only makes
    the wait longer. It fails when the process ends first, uses `cpu_budget` CPU seconds (a loop), or uses none for
    `idle_seconds` (blocked)."""
    started = last_progress = time.monotonic()
    used = 0.0

    def failure(reason: str) -> str:
        return (
            f"{what}: {reason} ({used:.1f} CPU s used in {time.monotonic() - started:.0f} s, children "
            f"{[(pid, comm(pid)) for pid in child_processes(process.pid)]}):\n{log.read_text(errors='replace')[-3000:]}"
        )

    while not happened():
        assert process.poll() is None, failure(f"the process ended first (exit status {process.returncode})")
        now = sum(cpu_seconds(pid) for pid in [process.pid, *child_processes(process.pid)])
        if now > used:
            used, last_progress = now, time.monotonic()
        assert used < cpu_budget, failure(f"not done within {cpu_budget} CPU s")
        assert time.monotonic() - last_progress < idle_seconds, failure(f"no CPU used for {idle_seconds} s (blocked)")
        time.sleep(0.2)
    print(f"{what.split(' did not ')[0]}: done after {used:.1f} CPU s in {time.monotonic() - started:.0f} s")


@pytest.mark.slow
def test_the_lock_of_a_killed_indexer_is_not_kept_by_its_decoding_workers(index_copy, tmp_path):
    checkpoint, videos, index_dir = index_copy
    for name in ("yellow", "cyan", "white", "grey"):  # videos to index, so that the workers start
        write_square_video(videos / f"{name}.mp4", COLOURS.get(name, (90, 200, 200)), num_frames=12)
    # The parent is killed while it waits in its first batch (`--batch_size 1`: the loader still has videos to hand
    # out, so its workers are not being shut down); on entering that batch it writes the pids of its live workers,
    # as its own multiprocessing module knows them, to `stalled`: the test waits for that event, not for a time.
    # Each worker, once its loop ends (it notices the parent is gone), lingers as a worker decoding a long video
    # does, with every descriptor it inherited still open.
    stalled = tmp_path / "stalled"
    stall = (
        "import multiprocessing, os, time, clip2video.processing.video_processing_clip2video as p\n"
        "def stall(*args, **kwargs):\n"
        f"    with open({str(stalled) + '.tmp'!r}, 'w') as file:\n"
        "        file.write(' '.join(str(child.pid) for child in multiprocessing.active_children()))\n"
        f"    os.rename({str(stalled) + '.tmp'!r}, {str(stalled)!r})\n"
        "    time.sleep(3600)\n"
        "p.stack_videos = stall\n"
        "import torch.utils.data._utils.worker as w\n"
        "loop = w._worker_loop\n"
        "w._worker_loop = lambda *a, **k: (loop(*a, **k), time.sleep(3600))"
    )
    # Its own HF_HOME: no other process copies remote code into its module cache at the same time.
    env = environment(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"))
    code = f"import sys, runpy\n{stall}\nsys.argv = ['x', *sys.argv[1:]]\nrunpy.run_module('clip2video.apps.search.index_videos', run_name='__main__')"
    log = tmp_path / "indexer.log"
    with open(log, "wb") as output:
        indexer = start_process(
            [sys.executable, "-c", code, "--model", checkpoint, "--videos", videos, "--index_dir", index_dir,
             "--num_workers", "2", "--batch_size", "1"],
            env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    workers = []
    try:
        # About 15 CPU s here (imports, the model, two workers decoding four tiny videos).
        wait_for_event(stalled.exists, indexer, "the indexer did not reach its first batch", cpu_budget=300, log=log)
        workers = [int(pid) for pid in stalled.read_text().split()]
        assert len(workers) == 2, (workers, log.read_text()[-3000:])
        assert set(workers) <= set(child_processes(indexer.pid)), (workers, child_processes(indexer.pid))
        assert all(alive(worker) for worker in workers), [(worker, comm(worker)) for worker in workers]
        os.kill(indexer.pid, signal.SIGKILL)
        indexer.wait()
        assert any(alive(worker) for worker in workers)  # orphaned workers still running...
        with IndexLock(index_dir):  # ...and the lock is free at once (no wait)
            assert any(alive(worker) for worker in workers)
    finally:  # the indexer and its workers (orphaned or not: they keep its process group), whatever failed
        try:
            os.killpg(indexer.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        indexer.wait()


# ----------------------------------------------------------------------------------------------------------------
# Item 6: queries race commits
# ----------------------------------------------------------------------------------------------------------------


COMMIT_LOOP = """
import sys, time
from pathlib import Path
from clip2video.apps.search import VideoIndex
from clip2video.apps.search.index_build import IndexLock, IndexSpec, VectorIndexOptions, commit
index_dir, stop = Path(sys.argv[1]), Path(sys.argv[2])
commits = 0
print("ready", flush=True)
while commits < 5 or not stop.exists():  # until the reader has raced enough commits (its count, not a time)
    with IndexLock(index_dir):
        current = VideoIndex(index_dir, load_vectors=False)
        options = VectorIndexOptions(index_type="ivf" if commits % 2 else "exact")
        commit(index_dir, IndexSpec.of(current), current, [], options)
    commits += 1
print("commits", commits, flush=True)
"""


@pytest.mark.slow
def test_queries_racing_commits_never_fail_on_an_intact_index(index_copy, tmp_path):
    pytest.importorskip("faiss")
    _, _, index_dir = index_copy
    paths = VideoIndex(index_dir).paths
    env = environment(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    stop, errors = tmp_path / "stop", tmp_path / "writer.err"
    with open(errors, "wb") as err:  # a file: FAISS warns on every IVF commit, which would fill a pipe
        writer = subprocess.Popen(
            [sys.executable, "-c", COMMIT_LOOP, index_dir, stop], env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
    try:
        assert writer.stdout.readline().strip() == "ready", errors.read_text()[-3000:]
        opened, generations = 0, set()
        query = np.ones(VideoIndex(index_dir).metadata["embedding_dim"], np.float32) / 8
        used, progressed = 0.0, time.monotonic()
        while writer.poll() is None:
            index = VideoIndex(index_dir)  # raises if a commit's removal of the old generation is taken for damage
            assert index.paths == paths and len(index.search(query, k=3)) == 3
            generations.add(index.metadata["generation"])
            opened += 1
            if opened >= 20 and len(generations) >= 3:
                stop.touch()  # the writer stops after its current commit; this loop races it until then
            # Bounds on the writer's work, not on the time: a commit takes well under 0.1 CPU s.
            if cpu_seconds(writer.pid) > used:
                used, progressed = cpu_seconds(writer.pid), time.monotonic()
            assert used < 120, f"{opened} opens saw only {len(generations)} generations in {used:.0f} CPU s"
            assert time.monotonic() - progressed < 180, f"the writer is blocked:\n{errors.read_text()[-3000:]}"
        stdout = writer.communicate()[0]
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0, errors.read_text()[-3000:]
    commits = int(stdout.split()[-1])
    print(f"{opened} opens and searches over {len(generations)} of {commits} generations")
    assert commits >= 5 and len(generations) >= 3 and opened >= 20


# ----------------------------------------------------------------------------------------------------------------
# Item 7: the model as the index records it
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_local_model_is_recorded_as_its_absolute_folder_and_never_taken_for_a_hub_id(
    built, tmp_path, monkeypatch, capsys
):
    work, built_videos, built_index, result, _ = built
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    recorded = json.loads((built_index / "index.json").read_text())["model"]
    assert recorded["name"] == str((work / "ckpt").resolve()) and recorded["source"] == "local"
    _, index_dir = private_copy(built_videos, built_index, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a query from another directory finds the model the index names
    query_videos.main(["--index_dir", str(index_dir), "--json", "a red square"])
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert sorted(hit["path"] for hit in hits) == ["blue.mp4", "green.mp4", "red.mp4"]

    metadata = json.loads((index_dir / "index.json").read_text())
    # A recorded folder that is gone, and a name an older indexer stored as typed (perhaps relative), are refused:
    # neither is ever looked up on the Hub (where `ckpt` could be anyone's code, run with trust_remote_code).
    for model, words in (
        ({**recorded, "name": str(tmp_path / "moved-away")}, [str(tmp_path / "moved-away"), "no longer exists"]),
        ({"name": "ckpt", "hash": recorded["hash"]}, ["'ckpt'", "pass --model"]),
    ):
        (index_dir / "index.json").write_text(json.dumps({**metadata, "model": model}))
        with pytest.raises(SystemExit, match=re.escape(words[0])) as refusal:
            query_videos.main(["--index_dir", str(index_dir), "red"])
        assert all(word in str(refusal.value) for word in words), str(refusal.value)
    # A path that is no folder is refused by the indexer before anything starts, and by a query.
    with pytest.raises(SystemExit, match="neither a folder nor a Hugging Face Hub repository id"):
        index_videos.main(["--model", "./ckpt-typo", "--videos", str(tmp_path), "--index_dir", str(tmp_path / "i")])
    assert not (tmp_path / "i").exists()
    with pytest.raises(SystemExit, match="neither a folder nor a Hugging Face Hub repository id"):
        query_videos.main(["--index_dir", str(index_dir), "--model", "../ckpt-typo", "red"])


# ----------------------------------------------------------------------------------------------------------------
# Item 14: hostile files in the index folder, hand-edited index.json, misuse
# ----------------------------------------------------------------------------------------------------------------


def _in_a_thread(function, timeout: float = 120):
    """`function()`'s result, failing (instead of hanging the suite) if it blocks for `timeout` seconds: a read of a
    FIFO blocks forever, while opening a tiny index takes a fraction of a CPU second (seconds at a load of 20)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{function} blocked for {timeout} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_parts_that_are_not_regular_files_are_never_read(index_copy):
    _, _, index_dir = index_copy
    parts = index_dir / "parts"
    fifo = parts / f"part-{1:020d}-000-{'a' * 32}.arrow"
    os.mkfifo(fifo)
    zero = parts / f"part-{2:020d}-000-{'b' * 32}.arrow"
    zero.symlink_to("/dev/zero")
    metadata = VideoIndex(index_dir).metadata
    loaded, set_aside = _in_a_thread(
        lambda: load_parts(index_dir, metadata["model"]["hash"], metadata["embedding_dim"], metadata["projection_dim"])
    )
    assert loaded == [] and set(set_aside) == {str(fifo), str(zero)}
    assert all("not a regular file" in reason for reason in set_aside.values())
    assert fifo.is_fifo() and zero.is_symlink()  # not the indexer's files: left where they are


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "folder"])
@pytest.mark.parametrize("key", ["index.json", "embeddings", "table"])
def test_index_files_that_are_not_regular_files_are_damage_not_a_hang(index_copy, key, kind):
    _, _, index_dir = index_copy
    name = "index.json" if key == "index.json" else VideoIndex(index_dir).metadata["files"][key]
    path = index_dir / name
    path.unlink()
    {"fifo": os.mkfifo, "link to /dev/zero": lambda p: p.symlink_to("/dev/zero"), "folder": os.mkdir}[kind](path)
    with pytest.raises(IndexDamagedError, match=name):
        _in_a_thread(lambda: VideoIndex(index_dir, verify=True))


HAND_EDITS = {
    "logit_scale NaN": lambda m: m.update(logit_scale=math.nan),
    "logit_scale negative": lambda m: m.update(logit_scale=-3.0),
    "logit_scale infinite": lambda m: m.update(logit_scale=math.inf),
    "logit_scale overflowing float32 scores": lambda m: m.update(logit_scale=1e300),
    "logit_scale a string": lambda m: m.update(logit_scale="100"),
    "checksums a list": lambda m: m.update(checksums=[]),
    "a checksum a string": lambda m: m["checksums"].update({m["files"]["embeddings"]: "abc"}),
    "a size negative": lambda m: m["checksums"][m["files"]["frames"]].update(size=-1),
    "embedding_dim negative": lambda m: m.update(embedding_dim=-4),
    "num_videos a string": lambda m: m.update(num_videos="3"),
    "num_frames a float": lambda m: m.update(num_frames=2.5),
    "files a list": lambda m: m.update(files=[]),
    "a file outside the folder": lambda m: m["files"].update(table="../videos/red.mp4"),
    "nprobe zero": lambda m: m["vector_index"].update(nprobe=0),
    "model a string": lambda m: m.update(model="ckpt"),
    "not an object": lambda m: (m.clear(), m.update(x=1)),
}


@pytest.mark.parametrize("edit", list(HAND_EDITS))
def test_a_hand_edited_index_json_is_named_damage(index_copy, edit):
    _, _, index_dir = index_copy
    path = index_dir / "index.json"
    metadata = json.loads(path.read_text())
    HAND_EDITS[edit](metadata)
    path.write_text(json.dumps(metadata) if edit != "not an object" else "[1, 2]")
    with pytest.raises(IndexDamagedError, match="index.json is damaged"):
        VideoIndex(index_dir)


def test_an_index_dir_that_is_a_file_and_an_empty_query_list(index_copy, tmp_path):
    checkpoint, _, index_dir = index_copy
    (tmp_path / "a_file").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="a_file is a file, not an index folder"):
        VideoIndex(tmp_path / "a_file")
    with pytest.raises(SystemExit, match="is a file"):
        query_videos.main(["--index_dir", str(tmp_path / "a_file"), "red"])
    index = VideoIndex(index_dir)
    model, processor = CLIP2VideoModel.from_pretrained(checkpoint).eval(), tiny_processor()
    assert search_texts(index, model, processor, [], top_k=2) == []  # no queries, no answers (as a pipeline)
    for queries in ("a red square", ["red", 3], None):
        with pytest.raises(ValueError, match="queries must be a list of strings"):
            search_texts(index, model, processor, queries, top_k=2)
    assert len(search_texts(index, model, processor, ["red", "blue"], top_k=2)) == 2
