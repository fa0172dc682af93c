"""`training/data.py`: the resumable shuffle, batches without repeated captions, the collator."""

import tempfile

import numpy as np
import pytest
import torch

from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer
from clip2video.training.data import DistinctCaptionBatchSampler, EpochShuffleSampler, VideoTextCollator
from clip2video.training.synthetic import write_mp4


def test_shuffle_depends_on_seed_and_epoch_only():
    first, again = EpochShuffleSampler(50, seed=3), EpochShuffleSampler(50, seed=3)
    torch.manual_seed(123)  # the global random state plays no part
    assert list(first) == list(again) and sorted(first) == list(range(50))
    again.set_epoch(1)
    assert list(again) != list(first)


def test_distinct_caption_batches():
    rng = np.random.default_rng(0)
    captions = [f"caption {rng.integers(12)}" for _ in range(200)]
    sampler = DistinctCaptionBatchSampler(captions, batch_size=10, sampler=EpochShuffleSampler(200, seed=0))
    batches = list(sampler)
    assert len(batches) == len(sampler) == 20
    assert all(len(batch) == 10 for batch in batches)
    assert len({index for batch in batches for index in batch}) == 200  # every pair used once
    # Only the few batches made of left-overs at the end of the epoch may repeat a caption.
    repeated = [i for i, batch in enumerate(batches) if len({captions[j] for j in batch}) < len(batch)]
    assert len(repeated) <= 3 and all(i >= 17 for i in repeated)
    # A plain random batch of 10 from 12 captions would almost surely repeat one.
    plain = list(EpochShuffleSampler(200, seed=0))
    assert sum(len({captions[j] for j in plain[k : k + 10]}) < 10 for k in range(0, 200, 10)) > 15


@pytest.fixture
def processor():
    video_processor = CLIP2VideoVideoProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                               num_frames=4)
    return CLIP2VideoProcessor(video_processor=video_processor, tokenizer=offline_clip_tokenizer())


def test_collator_tokenises_like_the_processor(tmp_path, processor):
    path = tmp_path / "clip.mp4"
    write_mp4(path, np.zeros((4, 16, 16, 3), dtype=np.uint8), 2.5)
    collator = VideoTextCollator(processor, max_text_length=32)
    rows = [{"video": str(path), "caption": "a red circle moves left"}, {"video": str(path), "caption": "a cat"}]
    batch = collator(rows)
    reference = processor(text=[row["caption"] for row in rows], return_tensors="pt")
    width = batch["input_ids"].shape[1]
    assert width == int(reference["attention_mask"].sum(1).max())  # trimmed to the longest caption
    torch.testing.assert_close(batch["input_ids"], reference["input_ids"][:, :width])
    torch.testing.assert_close(batch["attention_mask"], reference["attention_mask"][:, :width])
    assert batch["pixel_values_videos"].shape == (2, 4, 3, 16, 16) and batch["video_mask"].dtype == torch.int64


def test_training_jitter_is_seeded_by_pair_and_epoch_only(tmp_path, processor):
    # 40 s at 2 fps, each frame a distinct grey level: 100 images kept at 2.5 fps, 4 picked, inner picks jitter by up
    # to 16 images (the authors jitter only when half the gap between picks exceeds 2).
    frames = np.repeat(np.arange(0, 240, 3, dtype=np.uint8)[:, None, None, None], 16, axis=1).repeat(16, 2).repeat(3, 3)
    path = tmp_path / "grey_ramp.mp4"
    write_mp4(path, frames, 2)
    rows = [{"video": str(path), "caption": f"caption {i}"} for i in range(6)]
    fixed = VideoTextCollator(processor, max_text_length=32)(rows)["pixel_values_videos"]
    jittering = VideoTextCollator(processor, max_text_length=32, random_frame_jitter=True, jitter_seed=7)

    first = jittering(rows)["pixel_values_videos"]
    torch.manual_seed(0)  # neither the global random state nor the batch's order or make-up plays a part
    again = jittering(rows[::-1])["pixel_values_videos"].flip(0)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    torch.testing.assert_close(jittering(rows[2:3])["pixel_values_videos"], first[2:3], rtol=0, atol=0)

    # First and last frames stay; inner frames move for some pairs, differently in another epoch.
    torch.testing.assert_close(first[:, [0, -1]], fixed[:, [0, -1]], rtol=0, atol=0)
    assert not torch.equal(first[:, 1:-1], fixed[:, 1:-1])
    jittering.epoch = 1
    assert not torch.equal(jittering(rows)["pixel_values_videos"], first)

    with pytest.raises(ValueError, match="random_frame_jitter needs decoding from files"):
        VideoTextCollator(processor, max_text_length=32, frame_cache=object(), random_frame_jitter=True)


def test_an_all_bad_evaluation_batch_is_all_invalid(tmp_path, processor):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    rows = [{"video": str(garbage), "caption": "a cat"}, {"video": str(tmp_path / "missing.mp4"), "caption": "a dog"}]
    batch = VideoTextCollator(processor, max_text_length=32)(rows)
    assert batch["valid"].tolist() == [False, False]
    assert batch["pixel_values_videos"].shape == (2, 4, 3, 16, 16) and batch["video_mask"][:, 0].tolist() == [1, 1]
    assert [name for name, _ in batch["bad_videos"]] == [str(garbage), str(tmp_path / "missing.mp4")]


def test_bad_embedded_videos_are_named_by_their_row_not_a_temporary_file(tmp_path, processor):
    import datasets

    garbage = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    rows = [{"video_id": f"clip{index}", "video": {"bytes": garbage + bytes([index]), "path": None},
             "caption": f"caption {index}"} for index in range(3)]
    batch = VideoTextCollator(processor, max_text_length=32)(rows[:2])
    names = [name for name, _ in batch["bad_videos"]]
    assert names == ["video 'clip0' (embedded bytes)", "video 'clip1' (embedded bytes)"]
    assert all("clip2video_" not in reason and tempfile.gettempdir() not in reason
               for _, reason in batch["bad_videos"]), batch["bad_videos"]

    # Training: every replacement is bad too; the error names rows of the dataset.
    dataset = datasets.Dataset.from_list(rows)
    collator = VideoTextCollator(processor, max_text_length=32, dataset=dataset)
    collator.max_replacements = 3
    with pytest.raises(RuntimeError, match=r"training row 1 could not be decoded either.*row 1: video 'clip1'"):
        collator([{**rows[1], "index": 1}])
