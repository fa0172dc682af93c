"""The embedded default data: real mp4 files whose direction of motion only the frame order reveals."""

import csv
import os

import av
import numpy as np
import pytest

from clip2video.training.loaders import load_video_folder
from clip2video.training.synthetic import COLOURS, SyntheticConfig, generate_synthetic_dataset, render_clip


@pytest.mark.parametrize("pair", [("moves left", "moves right"), ("moves up", "moves down"), ("grows", "shrinks")])
def test_opposite_motions_have_the_same_frames_in_reverse_order(pair):
    config = SyntheticConfig()
    first = render_clip("red", "cross", pair[0], np.random.default_rng(7), config)
    second = render_clip("red", "cross", pair[1], np.random.default_rng(7), config)
    # Same frames, reversed: any order-free pooling (the mean of frames) sees identical clips.
    np.testing.assert_array_equal(first, second[::-1])
    assert not np.array_equal(first, second)


def test_generated_files_decode_and_are_cached(tmp_path):
    config = SyntheticConfig(num_train_clips=10)
    data_dir = generate_synthetic_dataset(tmp_path / "synthetic", config)
    test = load_video_folder(data_dir / "test")
    assert len(test) == len(set(test["caption"])) == 10 * 2 * 6
    train = load_video_folder(data_dir / "train")
    assert len(train) == 10

    with open(data_dir / "test" / "metadata.csv", newline="") as file:
        first = next(csv.DictReader(file))
    with av.open(str(data_dir / "test" / first["file_name"])) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == config.num_frames and frames[0].shape == (32, 32, 3)
    # The shape's colour survives encoding: the brightest pixels are close to the named colour.
    pixels = frames[0].reshape(-1, 3).astype(int)
    expected = np.array(COLOURS[first["colour"]])
    assert (np.abs(pixels - expected).sum(axis=1) < 40).sum() >= 20

    stamp = os.path.getmtime(data_dir / "generation.json")
    generate_synthetic_dataset(tmp_path / "synthetic", config)  # same parameters: nothing rewritten
    assert os.path.getmtime(data_dir / "generation.json") == stamp
    generate_synthetic_dataset(tmp_path / "synthetic", SyntheticConfig(num_train_clips=11))
    assert len(load_video_folder(data_dir / "train")) == 11
