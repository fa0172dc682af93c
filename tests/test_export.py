"""Exporting the embeddings, as docs/model.md's recipe does: `torch.export.export` of `get_video_features` and
`get_text_features` with a dynamic batch and a dynamic frame (token) axis, then ONNX from the exported programs, run
with onnxruntime; both against eager on padded batches of shapes other than the example's. The model's eager input
checks still refuse what they refused."""

import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from tests.helpers.models import CLIP_END, CLIP_START


ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# Padded batches: every video of a batch has at least one real frame, real frames first (what the processor gives).
VIDEO_BATCHES = [((3, 6), (6, 3, 1)), ((2, 5), (5, 2)), ((4, 12), (12, 7, 5, 1))]
TEXT_BATCHES = [(10, 6, 3), (20, 4), (7,)]


class VideoEmbeddings(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values_videos, video_mask):
        return self.model.get_video_features(pixel_values_videos=pixel_values_videos, video_mask=video_mask).pooler_output


class TextEmbeddings(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def padded_videos(shape, real_frames, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(*shape, 3, 32, 32, generator=generator)
    mask = torch.zeros(shape, dtype=torch.long)
    for row, count in enumerate(real_frames):
        mask[row, :count] = 1
        pixels[row, count:] = 0
    return pixels, mask


def padded_texts(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.full((len(lengths), max(lengths)), CLIP_END, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, 0], input_ids[row, length - 1] = CLIP_START, CLIP_END
        input_ids[row, 1 : length - 1] = torch.randint(1, CLIP_START, (length - 2,), generator=generator)
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    model = CLIP2VideoModel.from_pretrained(tiny_checkpoint).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    video, text = VideoEmbeddings(model), TextEmbeddings(model)
    # Frames: Dim.AUTO lets export find the range (it needs >= 5 frames: see docs/model.md).
    video_program = torch.export.export(
        video, padded_videos(*VIDEO_BATCHES[0]),
        dynamic_shapes={"pixel_values_videos": {0: batch, 1: torch.export.Dim.AUTO},
                        "video_mask": {0: batch, 1: torch.export.Dim.AUTO}},
    )
    text_program = torch.export.export(
        text, padded_texts(TEXT_BATCHES[0]),
        dynamic_shapes={"input_ids": {0: batch, 1: torch.export.Dim("tokens", min=2, max=77)},
                        "attention_mask": {0: batch, 1: torch.export.Dim("tokens", min=2, max=77)}},
    )
    folder = tmp_path_factory.mktemp("export")
    sessions = {}
    for name, program in (("video", video_program), ("text", text_program)):
        torch.onnx.export(program, dynamo=True).save(str(folder / f"{name}.onnx"))
        sessions[name] = ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    return {"video": video, "text": text, "video_program": video_program, "text_program": text_program,
            "sessions": sessions}


def max_difference(got, expected) -> float:
    return (torch.as_tensor(got) - expected).abs().max().item()


@pytest.mark.slow
@pytest.mark.parametrize("shape, real_frames", VIDEO_BATCHES)
def test_video_embeddings_export_and_onnx_equal_eager(exported, shape, real_frames):
    pixels, mask = padded_videos(shape, real_frames, seed=sum(shape))
    with torch.no_grad():
        eager = exported["video"](pixels, mask)
        from_export = exported["video_program"].module()(pixels, mask)
    session = exported["sessions"]["video"]
    (from_onnx,) = session.run(None, {"pixel_values_videos": pixels.numpy(), "video_mask": mask.numpy()})
    assert max_difference(from_export, eager) <= 1e-5
    assert max_difference(from_onnx, eager) <= 1e-5
    # The padding changes nothing: each video alone, unpadded, has the same embedding.
    for row, count in enumerate(real_frames):
        if count >= 5:
            with torch.no_grad():
                alone = exported["video"](pixels[row : row + 1, :count], mask[row : row + 1, :count])
            assert max_difference(from_onnx[row : row + 1], alone) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("lengths", TEXT_BATCHES)
def test_text_embeddings_export_and_onnx_equal_eager(exported, lengths):
    input_ids, attention_mask = padded_texts(lengths, seed=len(lengths))
    with torch.no_grad():
        eager = exported["text"](input_ids, attention_mask)
        from_export = exported["text_program"].module()(input_ids, attention_mask)
    (from_onnx,) = exported["sessions"]["text"].run(
        None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
    )
    assert max_difference(from_export, eager) <= 1e-5
    assert max_difference(from_onnx, eager) <= 1e-5


@pytest.mark.slow
def test_the_exported_video_program_keeps_the_shape_checks_and_its_frame_range(exported):
    program = exported["video_program"]
    pixels, mask = padded_videos((2, 6), (6, 2))
    with pytest.raises(AssertionError, match=r"video_mask.size\(\)\[1\] == pixel_values_videos.size\(\)\[1\]"):
        program.module()(pixels, mask[:, :5])
    with pytest.raises(AssertionError, match=r"pixel_values_videos.size\(\)\[1\] >= 5"):
        program.module()(*padded_videos((2, 4), (4, 2)))


def test_eager_checks_are_unchanged(tiny_checkpoint):
    model = CLIP2VideoModel.from_pretrained(tiny_checkpoint).eval()
    pixels, mask = padded_videos((2, 4), (4, 2))
    mask[1] = 0
    with pytest.raises(ValueError, match=r"Videos \[1\] of the batch have no real frame in video_mask"):
        model.get_video_features(pixel_values_videos=pixels, video_mask=mask)
    mask[1] = torch.tensor([0, 1, 1, 0])
    with pytest.raises(ValueError, match=r"video_mask rows \[1\] have padding before a real frame"):
        model.get_video_features(pixel_values_videos=pixels, video_mask=mask)
    with pytest.raises(ValueError, match="name the same mask but differ"):
        model.get_video_features(pixel_values_videos=pixels, video_mask=mask, padding_mask_videos=torch.ones(2, 4))
