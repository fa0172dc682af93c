"""Fixtures shared by the test modules: tiny checkpoint folders and tiny videos built once per session, and static
HTTP servers on 127.0.0.1. Helpers that are not fixtures live in `tests/helpers/`."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Under pytest-xdist (`.ci/run` runs `-n 2`) each worker is a process of its own, loading the same remote code at
# the same time: transformers copies it into its module cache (HF_MODULES_CACHE, read once when transformers is
# imported), and two processes writing the same cached file at once can import a half-written one. Each worker gets
# its own cache; the variable is removed again so that the fresh processes the tests start keep their own HF_HOME.
if os.environ.get("PYTEST_XDIST_WORKER") and "transformers" not in sys.modules:
    _modules_cache = tempfile.mkdtemp(prefix=f"clip2video-tests-{os.environ['PYTEST_XDIST_WORKER']}-modules-")
    atexit.register(shutil.rmtree, _modules_cache, ignore_errors=True)
    os.environ["HF_MODULES_CACHE"] = _modules_cache
    import transformers.utils.hub  # noqa: E402,F401  reads HF_MODULES_CACHE

    del os.environ["HF_MODULES_CACHE"]

# Under several xdist workers the workers already fill the cores, and each of them, and every process it starts,
# would use torch's default of one intra-op thread per core: OpenMP threads spin while they wait for work, so the
# surplus threads burn CPU time that the other worker needed (docs/testing.md, "How long the suite takes"). One
# thread each, inherited by the child processes through the environment; a value the user set is kept, and a test
# that needs more threads sets them itself (test_video_decoding_fork.py, test_training_frame_cache.py).
_ONE_THREAD_PER_WORKER = (
    int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 and "OMP_NUM_THREADS" not in os.environ
)
if _ONE_THREAD_PER_WORKER:
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import CLIPModel  # noqa: E402

from tests.helpers.models import save_tiny_checkpoint, tiny_clip_config  # noqa: E402
from tests.helpers.servers import file_server, stop_server  # noqa: E402
from tests.helpers.videos import write_square_videos  # noqa: E402

if _ONE_THREAD_PER_WORKER:
    torch.set_num_threads(1)  # in case a plugin imported torch before OMP_NUM_THREADS was set


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """`get(seed=0, with_apps=True) -> Path`: a tiny checkpoint folder (`helpers.models.save_tiny_checkpoint`), saved
    once per session for each (seed, with_apps). Shared: a test that changes the folder must work on a copy."""
    saved: dict[tuple[int, bool], Path] = {}

    def get(seed: int = 0, with_apps: bool = True) -> Path:
        if (seed, with_apps) not in saved:
            folder = tmp_path_factory.mktemp(f"tiny_checkpoint_seed{seed}{'_apps' if with_apps else ''}")
            saved[seed, with_apps] = save_tiny_checkpoint(folder / "checkpoint", with_apps=with_apps, seed=seed)
        return saved[seed, with_apps]

    return get


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoints) -> Path:
    """The tiny checkpoint folder of seed 0 with the pipelines and the endpoint handler, as published. Shared: copy
    it before changing it."""
    return tiny_checkpoints()


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tmp_path_factory) -> Path:
    """A tiny image CLIP checkpoint folder (`CLIPModel(tiny_clip_config())`, seed 0), what `from_pretrained` of a
    CLIP2Video model starts from. Shared: copy it before changing it."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_clip") / "clip"
    CLIPModel(tiny_clip_config()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_videos(tmp_path_factory) -> dict[str, str]:
    """{colour name: path}: one 20-frame, 10 fps square video per colour of `helpers.videos.COLOURS`, in a folder of
    their own. Shared: copy a file before changing it, and write new files elsewhere."""
    return write_square_videos(tmp_path_factory.mktemp("tiny_videos"))


@pytest.fixture(scope="session")
def serve_folder():
    """`serve(folder) -> LocalServer`: a static HTTP server on 127.0.0.1 for the files of `folder` (`server.url` is
    its base URL, `server.requests` the paths asked for); every server stops at the end of the session."""
    servers = []

    def serve(folder: Path):
        servers.append(file_server(folder))
        return servers[-1]

    yield serve
    for server in servers:
        stop_server(server)
