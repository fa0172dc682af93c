"""`apps/search/index_build.py`'s parts (`write_part`, `read_part`, `load_parts`), from their contract (the functions'
docstrings and docs/search.md): what `write_part` writes `read_part` returns exactly, for any number of videos and
frames per video (hypothesis); a part that is altered, of another model, of other widths, or whose vectors are not
finite unit vectors is refused saying what is wrong, and `load_parts` moves it to `quarantine/` (never deletes it),
reads only regular files named as `write_part` names them, oldest first, and removes only the temporary files of an
interrupted `write_part`. No model, no video: fast."""

import os
import re

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clip2video.apps.search.index_build import Part, load_parts, read_part, write_part


EMBEDDING_DIM, PROJECTION_DIM, MODEL_HASH = 6, 4, "c" * 64
NAME = re.compile(r"part-[0-9]{20}-[0-9]{3,}-[0-9a-f]{32}\.arrow")


def unit(rows, dim, rng):
    vectors = rng.normal(size=(rows, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def make_part(frame_counts, seed=0, embedding_dim=EMBEDDING_DIM):
    rng = np.random.default_rng(seed)
    part = Part()
    for number, count in enumerate(frame_counts):
        part.add((f"v{number}.mp4", 1000 + number, 10**18 + number), unit(1, embedding_dim, rng)[0],
                 unit(count, PROJECTION_DIM, rng), np.sort(rng.uniform(0, 100, count)))
    return part


def written(tmp_path, part, process_index=0, model_hash=MODEL_HASH):
    parts_dir = tmp_path / "index" / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    return write_part(parts_dir, part, model_hash, process_index)


@settings(max_examples=25, deadline=None)
@given(frame_counts=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=6),
       process_index=st.integers(min_value=0, max_value=1500), seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_what_is_written_is_read_back_exactly(tmp_path_factory, frame_counts, process_index, seed):
    tmp_path = tmp_path_factory.mktemp("parts")
    part = make_part(frame_counts, seed)
    path = written(tmp_path, part, process_index)
    assert NAME.fullmatch(path.name) and path.name.split("-")[2] == f"{process_index:03d}"
    assert os.listdir(path.parent) == [path.name]  # no temporary file left
    for embedding_dim in (EMBEDDING_DIM, None):
        loaded = read_part(path, MODEL_HASH, embedding_dim, PROJECTION_DIM)
        assert loaded.name == path.name
        assert loaded.keys() == part.keys()
        np.testing.assert_array_equal(loaded.embeddings, np.stack(part.embeddings))
        np.testing.assert_array_equal(loaded.frames, np.concatenate(part.frames))
        np.testing.assert_array_equal(loaded.frame_times, np.concatenate(part.frame_times))
        np.testing.assert_array_equal(loaded.frame_offsets, np.concatenate([[0], np.cumsum(frame_counts)]))
        assert loaded.frame_offsets.dtype == np.int64


def test_an_empty_part_writes_nothing(tmp_path):
    assert written(tmp_path, Part()) is None
    assert os.listdir(tmp_path / "index" / "parts") == []


def test_part_names_sort_oldest_first_and_load_parts_reads_them_in_that_order(tmp_path):
    paths = [written(tmp_path, make_part([1, 2], seed), process_index) for seed, process_index in ((1, 7), (2, 3), (3, 0))]
    parts, quarantined = load_parts(tmp_path / "index", MODEL_HASH, None, PROJECTION_DIM)
    assert quarantined == {}
    assert [part.name for part in parts] == [path.name for path in paths]


def rewrite(path, table):
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def test_a_part_that_is_not_what_was_written_is_refused_saying_what_is_wrong(tmp_path):
    path = written(tmp_path, make_part([2, 1]))
    with pytest.raises(ValueError, match=r"^written with another model$"):
        read_part(path, "d" * 64, EMBEDDING_DIM, PROJECTION_DIM)
    with pytest.raises(ValueError, match=rf"^embeddings of {EMBEDDING_DIM} values, the index has {EMBEDDING_DIM + 1}$"):
        read_part(path, MODEL_HASH, EMBEDDING_DIM + 1, PROJECTION_DIM)
    # Any other frame width is named before anything is reshaped (a width that does not divide the values too).
    for other in (PROJECTION_DIM + 2, PROJECTION_DIM - 1, 3 * PROJECTION_DIM + 1):
        with pytest.raises(ValueError, match=rf"^frame embeddings of {PROJECTION_DIM} values, the index has {other}$"):
            read_part(path, MODEL_HASH, EMBEDDING_DIM, other)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"^contents differ from the checksum in its name \(truncated or altered\)$"):
        read_part(path, MODEL_HASH, EMBEDDING_DIM, PROJECTION_DIM)


def test_a_part_whose_frame_times_are_grouped_otherwise_than_its_frames_is_refused(tmp_path):
    """Each video's frame times must be those of its frames: a part whose times hold as many values in all but are
    split between the videos differently (2 + 1 frames, 1 + 2 times) is refused, and `load_parts` sets it aside."""
    from clip2video.apps.search.video_index import file_checksum

    path = written(tmp_path, make_part([2, 1]))
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    times = table.column("frame_times").combine_chunks()
    regrouped = pa.ListArray.from_arrays(pa.array([0, 1, 3], pa.int32()), times.flatten())
    table = table.set_column(table.schema.get_field_index("frame_times"), "frame_times", regrouped)
    altered = path.with_name("altered.arrow")
    rewrite(altered, table)
    final = path.with_name(f"part-{'0' * 20}-000-{file_checksum(altered)}.arrow")
    os.replace(altered, final)
    path.unlink()
    with pytest.raises(ValueError, match=r"^frame embeddings and times disagree$"):
        read_part(final, MODEL_HASH, EMBEDDING_DIM, PROJECTION_DIM)
    parts, quarantined = load_parts(tmp_path / "index", MODEL_HASH, EMBEDDING_DIM, PROJECTION_DIM)
    assert parts == [] and quarantined == {
        str(final): "moved to quarantine/: ValueError: frame embeddings and times disagree"
    }


@pytest.mark.parametrize("column, factor, message", [
    ("embedding", 1.0 + 5e-4, None), ("embedding", 1.01, "embeddings"), ("embedding", np.nan, "embeddings"),
    ("frame_embeddings", 1.0 - 5e-4, None), ("frame_embeddings", 0.99, "frame embeddings"),
    ("frame_embeddings", np.inf, "frame embeddings"),
])
def test_vectors_must_be_finite_unit_vectors(tmp_path, column, factor, message):
    """A norm within 1e-3 of one is a unit vector stored in float32; one 1% off, or not finite, is refused."""
    from clip2video.apps.search.video_index import file_checksum

    path = written(tmp_path, make_part([2, 3]))
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    values = table.column(column).combine_chunks()
    if column == "embedding":
        changed = values.flatten().to_numpy().copy()
        changed[:EMBEDDING_DIM] *= factor
        array = pa.FixedSizeListArray.from_arrays(pa.array(changed), EMBEDDING_DIM)
    else:
        inner = values.flatten()
        changed = inner.flatten().to_numpy().copy()
        changed[-PROJECTION_DIM:] *= factor
        array = pa.ListArray.from_arrays(values.offsets, pa.FixedSizeListArray.from_arrays(pa.array(changed),
                                                                                           PROJECTION_DIM))
    table = table.set_column(table.schema.get_field_index(column), column, array)
    altered = path.with_name("altered.arrow")
    rewrite(altered, table)
    final = path.with_name(f"part-{'0' * 20}-000-{file_checksum(altered)}.arrow")
    os.replace(altered, final)
    path.unlink()
    if message is None:
        assert len(read_part(final, MODEL_HASH, EMBEDDING_DIM, PROJECTION_DIM).paths) == 2
    else:
        with pytest.raises(ValueError, match=rf"^{message} are not finite unit vectors$"):
            read_part(final, MODEL_HASH, EMBEDDING_DIM, PROJECTION_DIM)


def test_load_parts_quarantines_unusable_parts_and_touches_nothing_it_did_not_write(tmp_path):
    index_dir = tmp_path / "index"
    good = written(tmp_path, make_part([1, 1], 1), 0)
    other_width = written(tmp_path, make_part([1], 2, embedding_dim=EMBEDDING_DIM + 2), 1)
    other_model = written(tmp_path, make_part([2], 3), 2, model_hash="e" * 64)
    parts_dir = index_dir / "parts"
    # Entries load_parts must leave alone: names write_part never gives, and a part name that is not a regular file.
    foreign = ["notes.txt", "part-1-000-abc.arrow", ".part-xyz.tmp", "part-" + "0" * 20 + "-000-" + "f" * 31 + ".arrow"]
    for name in foreign:
        (parts_dir / name).write_bytes(b"not a part")
    link = parts_dir / ("part-" + "9" * 20 + "-000-" + "a" * 32 + ".arrow")
    os.symlink(good, link)
    fifo = parts_dir / ("part-" + "9" * 20 + "-001-" + "b" * 32 + ".arrow")
    os.mkfifo(fifo)
    interrupted = parts_dir / (".part-" + "0" * 32 + ".tmp")
    interrupted.write_bytes(b"half a part")
    interrupted_fifo = parts_dir / (".part-" + "1" * 32 + ".tmp")
    os.mkfifo(interrupted_fifo)

    parts, quarantined = load_parts(index_dir, MODEL_HASH, None, PROJECTION_DIM)

    # The first valid part sets the width; the part of another width and the other model's part are set aside.
    assert [part.name for part in parts] == [good.name]
    quarantine = index_dir / "quarantine"
    assert sorted(os.listdir(quarantine)) == sorted([other_width.name, other_model.name])
    assert quarantined[str(other_width)] == (
        f"moved to quarantine/: ValueError: embeddings of {EMBEDDING_DIM + 2} values, the index has {EMBEDDING_DIM}"
    )
    assert quarantined[str(other_model)] == "moved to quarantine/: ValueError: written with another model"
    for entry in (link, fifo):
        assert quarantined[str(entry)] == "not a regular file: left in place, not read"
    assert len(quarantined) == 4
    assert not interrupted.exists()
    assert sorted(os.listdir(parts_dir)) == sorted(foreign + [good.name, link.name, fifo.name, interrupted_fifo.name])


def test_load_parts_of_an_index_without_parts_is_empty(tmp_path):
    assert load_parts(tmp_path, MODEL_HASH, None, PROJECTION_DIM) == ([], {})


def test_a_part_stores_float32_vectors_and_float64_times_whatever_it_is_given(tmp_path):
    rng = np.random.default_rng(4)
    part = Part()
    embedding = unit(1, EMBEDDING_DIM, rng)[0].astype(np.float64)
    frames = unit(2, PROJECTION_DIM, rng).astype(np.float64)
    part.add(("a.mp4", 1, 2), embedding, frames, np.array([0.5, 1.5], np.float32))
    assert [values[0].dtype for values in (part.embeddings, part.frames, part.frame_times)] == [
        np.float32, np.float32, np.float64]
    loaded = read_part(written(tmp_path, part), MODEL_HASH, EMBEDDING_DIM, PROJECTION_DIM)
    assert (loaded.embeddings.dtype, loaded.frames.dtype, loaded.frame_times.dtype) == (
        np.float32, np.float32, np.float64)
    np.testing.assert_array_equal(loaded.embeddings[0], embedding.astype(np.float32))


def test_a_part_without_a_model_fingerprint_is_of_another_model(tmp_path):
    from clip2video.apps.search.video_index import file_checksum

    path = written(tmp_path, make_part([1]))
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    for metadata in (None, {"other": "x"}):
        bare = path.with_name("bare.arrow")
        rewrite(bare, table.replace_schema_metadata(metadata))
        final = path.with_name(f"part-{'0' * 20}-001-{file_checksum(bare)}.arrow")
        os.replace(bare, final)
        with pytest.raises(ValueError, match=r"^written with another model$"):
            read_part(final, MODEL_HASH, EMBEDDING_DIM, PROJECTION_DIM)
        final.unlink()
