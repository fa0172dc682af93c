"""The embedded data is the same bytes in every run: the main job's figures must not depend on the machine's load.

x264's look-ahead runs in its own thread and its frame decisions depended on timing, so under load a few clips in
a hundred came out different from one run to the next (and the trained model with them: T2V R@1 98.3 in one run,
100.0 in another). The generator turns it off; the encoder records the settings it used in each file."""

import filecmp
import re
import subprocess
import sys

import pytest

CODE = (
    "import sys\n"
    "from clip2video.training.synthetic import SyntheticConfig, generate_synthetic_dataset\n"
    "generate_synthetic_dataset(sys.argv[1], SyntheticConfig(num_train_clips=160))\n"
)


@pytest.mark.slow
def test_concurrent_generations_write_identical_files_without_threaded_lookahead(tmp_path):
    folders = [tmp_path / f"run{index}" for index in range(3)]
    processes = [subprocess.Popen([sys.executable, "-c", CODE, str(folder)]) for folder in folders]
    assert [process.wait(timeout=300) for process in processes] == [0] * len(folders)
    for split in ("train", "test"):
        names = sorted(path.name for path in (folders[0] / split / "videos").iterdir())
        assert len(names) == (160 if split == "train" else 120)
        for other in folders[1:]:
            _, mismatch, errors = filecmp.cmpfiles(folders[0] / split / "videos", other / split / "videos", names,
                                                   shallow=False)
            assert not mismatch and not errors, f"{split}: {mismatch[:5]} differ between runs"
    # What the encoder wrote into the stream (its SEI message), i.e. the settings it really used.
    settings = (folders[0] / "test" / "videos" / "000000.mp4").read_bytes()
    found = dict(re.findall(rb" (rc_lookahead|mbtree|threads|lookahead_threads)=(\d+)", settings))
    assert found.get(b"rc_lookahead", b"0") == b"0", found  # x264 leaves it out of the message when it is off
    assert (found[b"mbtree"], found[b"threads"], found[b"lookahead_threads"]) == (b"0", b"1", b"1"), found
