"""`training/data.py`'s `StreamingBatches` order, from its contract: each block of the stream is shuffled with a
generator seeded by (seed, epoch, block), so every epoch reads every row in a new order (a streaming run must not
repeat one order each epoch), the same seed gives the same order, every full batch is used once per epoch, and a
resume from any batch's state continues exactly as the uninterrupted run. The dataset is a real
`datasets.IterableDataset`; the collator, an argument of the class, numbers each row's "frames" by its row id so
that the order can be read back (decoding is tested elsewhere)."""

import datasets
import pytest
import torch

from clip2video.training.data import StreamingBatches


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
    reported = [name for batch, _ in results for name, _ in batch["bad_videos"]]
    assert sorted(reported) == ["bad17.mp4", "bad5.mp4"]


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
