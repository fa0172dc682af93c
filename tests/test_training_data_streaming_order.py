"""`training/data.py`'s `StreamingBatches` order, from its contract: each block of the stream is shuffled with a
generator seeded by (seed, epoch, block), so every epoch reads every row in a new order (a streaming run must not
repeat one order each epoch), the same seed gives the same order, every full batch is used once per epoch, and a
resume from any batch's state continues exactly as the uninterrupted run. The dataset is a real
`datasets.IterableDataset`; the collator, an argument of the class, numbers each row's "frames" by its row id so
that the order can be read back (decoding is tested elsewhere).

Map-style data is drawn by `EpochShuffleSampler`, from the same contract: each epoch a permutation of the usable
rows drawn from (seed, epoch) only (the same on every process and after a resume, whatever the global random state),
a new one every epoch and for every seed."""

import re

import datasets
import pytest
import torch
from accelerate import Accelerator

from clip2video.training.checkpoints import TrainingProgress
from clip2video.training.data import EpochShuffleSampler, StreamingBatches
from clip2video.training.run import streamed_batches
from tests.helpers.processes import in_two_gloo_processes


class RowIdCollator:
    """What `StreamingBatches` calls: `video(row)` -> (frames, mask), `tokenize(captions)`, and `epoch`."""

    epoch = 0

    def video(self, row):
        if row["video"].startswith("bad"):
            raise ValueError(f"Cannot read video {row['video']}: corrupt")
        return torch.tensor([[float(row["id"])]]), torch.ones(1, 1, dtype=torch.long)

    def tokenize(self, captions):
        return torch.zeros(len(captions), 1, dtype=torch.long), torch.ones(len(captions), 1, dtype=torch.long)


def stream(num_rows=40, num_shards=1, bad=()):
    rows = {"id": list(range(num_rows)), "video": [("bad" if i in bad else "") + f"{i}.mp4" for i in range(num_rows)],
            "caption": [f"caption {i}" for i in range(num_rows)]}
    return datasets.Dataset.from_dict(rows).to_iterable_dataset(num_shards=num_shards)


def epoch_order(batches: StreamingBatches) -> list[int]:
    return [int(value) for batch, _ in batches for value in batch["pixel_values_videos"].flatten().tolist()]


@pytest.mark.parametrize("num_shards, block_size", [(1, 1000), (1, 7), (4, 1000), (4, 3)])
def test_every_epoch_reads_every_row_in_a_new_order(num_shards, block_size):
    batches = StreamingBatches(stream(40, num_shards), 8, RowIdCollator(), seed=3, block_size=block_size)
    orders = [epoch_order(batches) for _ in range(4)]
    for order in orders:
        assert sorted(order) == list(range(40))  # 40 rows: five full batches of 8, each row once
    assert len({tuple(order) for order in orders}) == 4, "an epoch repeated another epoch's order"
    assert all(order != list(range(40)) for order in orders), "rows read unshuffled"
    again = StreamingBatches(stream(40, num_shards), 8, RowIdCollator(), seed=3, block_size=block_size)
    assert [epoch_order(again) for _ in range(4)] == orders  # the seed fixes the orders
    other_seed = StreamingBatches(stream(40, num_shards), 8, RowIdCollator(), seed=4, block_size=block_size)
    assert epoch_order(other_seed) != orders[0]


def test_the_last_partial_batch_is_left_out_and_bad_videos_are_replaced():
    batches = StreamingBatches(stream(43, 1, bad={5, 17}), 8, RowIdCollator(), seed=0, block_size=10)
    results = list(batches)
    assert len(results) == 5  # 41 readable rows: five full batches, one row left over
    used = [int(value) for batch, _ in results for value in batch["pixel_values_videos"].flatten().tolist()]
    assert len(set(used)) == 40 and not {5, 17} & set(used)
    reported = {name: reason for batch, _ in results for name, reason in batch["bad_videos"]}
    assert reported == {f"bad{i}.mp4": f"ValueError: Cannot read video bad{i}.mp4: corrupt" for i in (5, 17)}


@pytest.mark.parametrize("stop_after", [1, 3, 5])
def test_a_resume_from_any_batch_continues_the_uninterrupted_order(stop_after):
    uninterrupted = StreamingBatches(stream(40, 2), 8, RowIdCollator(), seed=1, block_size=6)
    expected = epoch_order(uninterrupted) + epoch_order(uninterrupted)
    first = StreamingBatches(stream(40, 2), 8, RowIdCollator(), seed=1, block_size=6)
    seen, state = [], None
    for count, (batch, state) in enumerate(first, start=1):
        seen += [int(value) for value in batch["pixel_values_videos"].flatten().tolist()]
        if count == stop_after:
            break
    resumed = StreamingBatches(stream(40, 2), 8, RowIdCollator(), seed=1, block_size=6)
    resumed.load_state_dict(state)
    seen += epoch_order(resumed)
    seen += epoch_order(resumed) if len(seen) < 80 else []
    assert seen == expected


def test_a_new_stream_reads_epoch_zero_from_its_first_block_and_each_pass_moves_to_the_next_epoch():
    # The order of epoch k is the one a stream whose state says "epoch k, block 0, nothing read" gives: a new
    # stream starts there at epoch 0 (a run that started elsewhere would read one epoch's order twice once its
    # epochs are counted from 0), and each whole pass leaves the state at the start of the next epoch.
    batches = StreamingBatches(stream(40, 2), 8, RowIdCollator(), seed=2, block_size=7)
    assert batches.state_dict() == {"epoch": 0, "block": 0, "block_state": None, "position": 0}
    for epoch in range(3):
        at_start = StreamingBatches(stream(40, 2), 8, RowIdCollator(), seed=2, block_size=7)
        at_start.load_state_dict({"epoch": epoch, "block": 0, "block_state": None, "position": 0})
        assert epoch_order(batches) == epoch_order(at_start), epoch
        assert batches.state_dict() == {"epoch": epoch + 1, "block": 0, "block_state": None, "position": 0}


def test_each_block_holds_consecutive_rows_of_the_stream_and_only_they_are_shuffled():
    # Rows are shuffled within blocks of `block_size` consecutive rows only (datasets' own shuffle buffer, whose
    # content a resume loses, must not mix rows across blocks): one shard of 40 rows in blocks of 5.
    batches = StreamingBatches(stream(40, 1), 8, RowIdCollator(), seed=3, block_size=5)
    for _ in range(2):
        order = epoch_order(batches)
        assert [sorted(order[first:first + 5]) for first in range(0, 40, 5)] == [
            list(range(first, first + 5)) for first in range(0, 40, 5)]
        assert order != list(range(40))


class EpochCollator(RowIdCollator):
    """Each row's "frames" are the collator's epoch when it decoded them (the training jitter is seeded by it)."""

    def video(self, row):
        return torch.tensor([[float(self.epoch)]]), torch.ones(1, 1, dtype=torch.long)


def test_each_pass_over_a_stream_decodes_with_that_epochs_jitter():
    batches = StreamingBatches(stream(16), 8, EpochCollator(), seed=0)
    assert [set(epoch_order(batches)) for _ in range(3)] == [{0}, {1}, {2}]


def test_a_shard_cut_short_stops_the_stream_with_an_error_naming_it(tmp_path):
    shards = [tmp_path / "train-00000.parquet", tmp_path / "train-00001.parquet"]
    for number, shard in enumerate(shards):
        rows = {"id": [number * 20 + i for i in range(20)], "video": [f"{number}-{i}.mp4" for i in range(20)],
                "caption": [f"caption {i}" for i in range(20)]}
        datasets.Dataset.from_dict(rows).to_parquet(str(shard))
    shards[1].write_bytes(shards[1].read_bytes()[: shards[1].stat().st_size // 2])
    data = datasets.load_dataset("parquet", data_files=[str(shard) for shard in shards], split="train",
                                 streaming=True)
    batches = StreamingBatches(data, 8, RowIdCollator(), seed=0, data_files=[str(shard) for shard in shards])
    with pytest.raises(ValueError, match=rf"^the training stream: 1 data file\(s\) cannot be read .*\n  "
                                         rf"{re.escape(str(shards[1]))}: "):
        epoch_order(batches)


def sampler_order(num_samples, seed, epoch, indices=None):
    sampler = EpochShuffleSampler(num_samples, seed, indices=indices)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_the_map_style_shuffle_is_a_permutation_of_the_usable_rows_drawn_from_seed_and_epoch_only():
    for indices, expected in ((None, list(range(20))), ([3, 5, 8, 13, 21, 34, 55, 89], [3, 5, 8, 13, 21, 34, 55, 89])):
        orders = {}
        for seed in range(4):
            for epoch in range(4):
                torch.manual_seed(seed * 7 + epoch)  # the global random state must not matter
                order = sampler_order(20, seed, epoch, indices)
                assert sorted(order) == expected and len(EpochShuffleSampler(20, seed, indices)) == len(expected)
                orders[seed, epoch] = order
        # Every epoch of every seed its own order (seed 0 and epoch 0 included): no run repeats one epoch's order,
        # and two seeds never share an epoch's order, shifted or not.
        assert len({tuple(order) for order in orders.values()}) == 16, "two (seed, epoch) pairs gave one order"
        torch.manual_seed(12345)
        assert all(sampler_order(20, seed, epoch, indices) == order for (seed, epoch), order in orders.items())
    # The sampler keeps its own copy of the rows it was given.
    rows = [1, 2, 3, 4]
    sampler = EpochShuffleSampler(10, 0, indices=rows)
    rows.append(9)
    assert sorted(sampler) == [1, 2, 3, 4] and len(sampler) == 4


def test_a_sampler_built_again_at_a_later_epoch_draws_that_epochs_order():
    # A resume builds a new sampler and sets the epoch it stopped in: the order is the uninterrupted run's.
    running = EpochShuffleSampler(30, 5)
    orders = []
    for epoch in range(3):
        running.set_epoch(epoch)
        orders.append(list(running))
    resumed = EpochShuffleSampler(30, 5)
    resumed.set_epoch(2)
    assert list(resumed) == orders[2] and list(resumed) == orders[2]  # iterating again does not move it on
    assert list(EpochShuffleSampler(30, 5)) == orders[0]  # a new sampler starts at epoch 0


def _processes_with_uneven_shards_end_the_epoch_together():
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    # Process 0 reads 3 batches of 8 rows, process 1 only 2: both train on 2 and end the epoch there.
    batches = StreamingBatches(stream(24 if accelerator.process_index == 0 else 16), 8, RowIdCollator(), seed=0)
    progress = TrainingProgress(epoch=0)
    assert len(list(streamed_batches(accelerator, batches, progress))) == 2
    assert batches.state_dict() == {"epoch": 1, "block": 0, "block_state": None, "position": 0}


def test_processes_whose_shards_run_out_at_different_times_end_the_epoch_together():
    # docs: each process reads its own shards, and the processes end an epoch together when the first runs out.
    # Two real gloo processes.
    in_two_gloo_processes(_processes_with_uneven_shards_end_the_epoch_together)
