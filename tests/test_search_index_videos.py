"""`apps/search/index_videos.py`'s decoding workers: each video is decoded exactly once per indexing run, however many
workers, with the progress bar (`tqdm.auto`) around the DataLoader. Decodes are counted by the kernel:
inotify reports every open of a file in the video folder, by any process (the workers included), and a decode opens
its file a fixed number of times, measured here on the same files."""

import ctypes
import os
import struct
import sys
from collections import Counter
from pathlib import Path

import pytest

from clip2video.processing import CLIP2VideoVideoProcessor
from tests.helpers.processes import run_module
from tests.helpers.videos import COLOURS, write_square_video


pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux only")

IN_OPEN, IN_ISDIR = 0x20, 0x40000000
EVENT_HEADER = struct.Struct("iIII")


class FileOpens:
    """Counts the opens of the files directly inside `folder`, from the moment it is made, by every process."""

    def __init__(self, folder: Path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        watch = self.libc.inotify_add_watch(self.fd, os.fsencode(folder), IN_OPEN)
        assert watch >= 0, os.strerror(ctypes.get_errno())
        self.counts = Counter()

    def read(self) -> Counter:
        """The opens counted so far, by file name; resets the count."""
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                _, mask, _, length = EVENT_HEADER.unpack_from(data, offset)
                name = data[offset + EVENT_HEADER.size : offset + EVENT_HEADER.size + length].rstrip(b"\0")
                offset += EVENT_HEADER.size + length
                if not mask & IN_ISDIR and name:
                    self.counts[name.decode()] += 1
        counts, self.counts = self.counts, Counter()
        return counts

    def close(self):
        os.close(self.fd)


@pytest.mark.slow
def test_every_video_is_decoded_once_per_indexing_run(tmp_path, tiny_checkpoint):
    videos = tmp_path / "videos"
    videos.mkdir()
    names = [f"{colour}.mp4" for colour in COLOURS]
    for name, colour in zip(names, COLOURS.values()):
        write_square_video(videos / name, colour, num_frames=20)
    opens = FileOpens(videos)
    try:
        # What one decode of a file costs in opens.
        CLIP2VideoVideoProcessor()(str(videos / names[0]))
        per_decode = opens.read()[names[0]]
        assert per_decode >= 1
        # Two workers, each with videos queued ahead: a second set of workers (the progress bar iterating the
        # DataLoader once more) decodes every video twice.
        run_module(
            "clip2video.apps.search.index_videos", "--model", tiny_checkpoint, "--videos", videos,
            "--index_dir", tmp_path / "index", "--num_workers", "2", "--batch_size", "2",
            env={"OMP_NUM_THREADS": "1"},
        )
        assert opens.read() == {name: per_decode for name in names}
    finally:
        opens.close()
