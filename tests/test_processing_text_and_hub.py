"""Captions tokenised as the original CLIP tokenizer does, the full processor, and save/load as remote code in a fresh
process (alone and next to a model's config.json)."""

import json

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer
from tests.helpers.models import save_tiny_checkpoint, tiny_processor
from tests.helpers.processes import run_isolated
from tests.helpers.videos import write_video


START, END = 49406, 49407

CAPTIONS = [
    # MSR-VTT style
    "a man is singing on stage",
    "A woman is slicing an onion in the kitchen.",
    "two kids play basketball outside, while their dog watches",
    "a cartoon character talks to another cartoon character",
    "someone is folding paper into a crane",
    # punctuation, numbers, case, whitespace
    "It's 3:45pm -- the 2nd race of 2021 starts NOW!!!",
    "people's reactions (shocked/surprised) to the $1,000,000 prize?",
    "  tabs\tand\nnewlines   everywhere  ",
    "tom &amp; jerry chase each other &lt;again&gt;",
    "i'd say they're done, we've seen it, you'll see, she'll go, he'd've",
    # unicode: accents, curly quotes, dashes, CJK, emoji, full-width, mojibake
    "a naïve café owner serves crème brûlée — très chic",
    "the chef’s “secret” sauce",
    "东京 の 夜景 and a 🎉 party 🎉🎉",
    "ＦＵＬＬＷＩＤＴＨ text and ﬁ ligature",
    "the cafÃ© is open",
    # long: more than 30 word pieces, truncated to 32 tokens in all
    "a very long description of a video in which a man walks into a room, picks up a red ball, throws it to a dog "
    "that runs around the garden, and then everyone laughs and claps for a long time afterwards",
    "",
]


def original_ids(caption, tokenizer, max_words=32):
    """The authors' `_get_text`: start token, word pieces, cut to max_words - 1, end token, zero padding."""
    words = [START] + tokenizer.encode(caption)
    words = words[: max_words - 1] + [END]
    return words + [0] * (max_words - len(words)), [1] * len(words) + [0] * (max_words - len(words))


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()  # 32 x 32 pixels, at most 4 frames


def test_offline_tokenizer_is_openais_vocabulary():
    tokenizer = offline_clip_tokenizer()
    original = SimpleTokenizer()
    assert len(tokenizer) == len(original.encoder) == 49408
    assert tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [START, END]
    # open_clip spells the two special tokens <start_of_text> and <end_of_text>; OpenAI and the authors use <|...|>.
    ours = {token: index for token, index in tokenizer.get_vocab().items() if index < START}
    assert ours == {token: index for token, index in original.encoder.items() if index < START}


def test_token_ids_equal_the_original_tokenizer(processor):
    original = SimpleTokenizer()
    batch = processor(text=CAPTIONS, return_tensors="pt")
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (len(CAPTIONS), 32)
    for row, caption in enumerate(CAPTIONS):
        ids, mask = original_ids(caption, original)
        assert batch["attention_mask"][row].tolist() == mask, caption
        length = sum(mask)
        assert batch["input_ids"][row, :length].tolist() == ids[:length], caption
        # Padding uses CLIP's pad token where the authors wrote 0; both sit after the end token, masked out.
        assert set(batch["input_ids"][row, length:].tolist()) <= {END}
    assert batch["attention_mask"][CAPTIONS.index(CAPTIONS[-2])].sum() == 32  # the long caption is cut


def test_processor_returns_exactly_the_model_inputs(processor, tmp_path):
    video = write_video(tmp_path / "clip.mp4", 20, 10)
    both = processor(text=["a dog", "a cat"], videos=[video, video], return_tensors="pt")
    assert set(both) == {"input_ids", "attention_mask", "pixel_values_videos", "video_mask"}
    assert both["pixel_values_videos"].shape == (2, 4, 3, 32, 32) and both["video_mask"].dtype == torch.int64
    text_only = processor(text="a dog", return_tensors="pt")
    assert set(text_only) == {"input_ids", "attention_mask"} and text_only["input_ids"].shape == (1, 32)
    videos_only = processor(videos=video, return_tensors="pt")
    assert set(videos_only) == {"pixel_values_videos", "video_mask"}
    torch.testing.assert_close(videos_only["pixel_values_videos"][0], both["pixel_values_videos"][0])
    assert processor.model_input_names == ["input_ids", "attention_mask", "pixel_values_videos", "video_mask"]
    with pytest.raises(ValueError, match="at least one input"):
        processor()


def test_from_a_plain_clip_checkpoint_folder(tmp_path):
    # The files of openai/clip-vit-base-patch32 that matter here: tokenizer and (legacy-style) image preprocessing.
    offline_clip_tokenizer().save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224,
            }
        )
    )
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    processor = CLIP2VideoProcessor.from_pretrained(str(tmp_path))
    assert processor.video_processor.size.shortest_edge == 224
    assert (processor.video_processor.crop_size.height, processor.video_processor.crop_size.width) == (224, 224)
    assert processor(text="a dog")["input_ids"][:3] == [START, 320, 1929]


def test_remote_code_needs_only_torch_torchvision_numpy_transformers_and_huggingface_hub():
    # transformers refuses to load remote code whose imports (outside `try`) are missing: PyAV, torchcodec, decord,
    # ftfy and open_clip must stay optional, and the processing code must not import the model code.
    import sys
    from pathlib import Path

    from transformers.dynamic_module_utils import get_imports

    from clip2video import processing

    # huggingface_hub is a dependency of transformers (its own video processors import from it too).
    allowed = {"numpy", "torch", "torchvision", "transformers", "huggingface_hub"} | set(sys.stdlib_module_names)
    modules = sorted(Path(processing.__file__).parent.glob("*_clip2video.py"))
    assert {"video_processing_clip2video.py", "video_inputs_clip2video.py"} <= {module.name for module in modules}
    for module in modules:
        imports = set(get_imports(module))
        assert imports <= allowed, (module.name, imports - allowed)


CONFIGURATION_FILE = '''
from transformers import CLIPConfig


class CLIP2VideoConfig(CLIPConfig):
    model_type = "clip2video"
'''


@pytest.mark.slow
def test_round_trip_in_a_fresh_process(processor, tmp_path):
    """The processor saved alone and next to a model's config.json, a video processor saved on its own, and a model
    saved with its processor, all loaded in ONE fresh interpreter (each interpreter importing torch and transformers
    costs several CPU seconds; the folders are distinct, so each load is still a load of that folder)."""
    variants = {"plain": False, "next_to_model_config": True}
    for name, next_to_model_config in variants.items():
        checkpoint = tmp_path / name / "checkpoint"
        checkpoint.mkdir(parents=True)
        if next_to_model_config:
            # What a saved CLIP2VideoModel puts in the same folder.
            (checkpoint / "configuration_clip2video.py").write_text(CONFIGURATION_FILE)
            (checkpoint / "config.json").write_text(
                json.dumps(
                    {
                        "model_type": "clip2video",
                        "architectures": ["CLIP2VideoModel"],
                        "auto_map": {"AutoConfig": "configuration_clip2video.CLIP2VideoConfig"},
                    }
                )
            )
        processor.save_pretrained(checkpoint)
        saved = json.loads((checkpoint / "processor_config.json").read_text())
        assert saved["auto_map"] == {"AutoProcessor": "processing_clip2video.CLIP2VideoProcessor"}
        assert saved["video_processor"]["auto_map"]["AutoVideoProcessor"] == (
            "video_processing_clip2video.CLIP2VideoVideoProcessor"
        )
        for code in ("processing_clip2video.py", "video_processing_clip2video.py", "frame_sampling_clip2video.py",
                     "video_decoding_clip2video.py", "video_inputs_clip2video.py", "media_types_clip2video.py",
                     "url_fetching_clip2video.py"):
            assert (checkpoint / code).is_file(), code

    # A video processor saved on its own (video_preprocessor_config.json) loads with AutoVideoProcessor too.
    CLIP2VideoVideoProcessor(size={"shortest_edge": 32}, crop_size=32, num_frames=4).save_pretrained(tmp_path / "alone")
    assert json.loads((tmp_path / "alone" / "video_preprocessor_config.json").read_text())["auto_map"] == {
        "AutoVideoProcessor": "video_processing_clip2video.CLIP2VideoVideoProcessor"
    }
    # The model and `tiny_processor()`, saved together, run end to end.
    save_tiny_checkpoint(tmp_path / "together", with_apps=False)

    video = write_video(tmp_path / "clip.mp4", 45, 30)
    captions = ["a man is singing on stage", "the chef’s “secret” sauce"]
    expected = processor(text=captions, videos=[video, video], return_tensors="pt", return_timestamps=True)
    result = run_isolated(
        f"""
        import json, torch
        from transformers import AutoConfig, AutoModel, AutoProcessor, AutoVideoProcessor
        outputs = {{}}
        for name, next_to_model_config in {variants!r}.items():
            checkpoint = f"{{name}}/checkpoint"
            processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
            video_processor = AutoVideoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
            for loaded in (processor, processor.video_processor, video_processor):
                assert type(loaded).__module__.startswith("transformers_modules"), type(loaded).__module__
            if next_to_model_config:
                assert AutoConfig.from_pretrained(checkpoint, trust_remote_code=True).model_type == "clip2video"
            both = processor(text={captions!r}, videos=["clip.mp4", "clip.mp4"], return_tensors="pt",
                             return_timestamps=True)
            alone = video_processor(["clip.mp4", "clip.mp4"], return_timestamps=True)
            saved_alone = AutoVideoProcessor.from_pretrained("alone", trust_remote_code=True)
            assert type(saved_alone).__module__.startswith("transformers_modules"), type(saved_alone).__module__
            torch.testing.assert_close(saved_alone(["clip.mp4", "clip.mp4"])["pixel_values_videos"],
                                       alone["pixel_values_videos"], rtol=0, atol=0)
            outputs[name] = {{"both": dict(both), "alone": dict(alone)}}
        torch.save(outputs, "outputs.pt")

        processor = AutoProcessor.from_pretrained("together", trust_remote_code=True)
        model = AutoModel.from_pretrained("together", trust_remote_code=True).eval()
        inputs = processor(text=["a dog", "a cat"], videos=["clip.mp4", "clip.mp4"], return_tensors="pt")
        with torch.no_grad():
            output = model(**inputs)
        print(tuple(output.logits_per_text.shape))
        """,
        cwd=tmp_path,
    )
    assert result.stdout.strip().endswith("(2, 2)")
    saved_outputs = torch.load(tmp_path / "outputs.pt")
    assert set(saved_outputs) == set(variants)
    for outputs in saved_outputs.values():
        assert set(outputs["both"]) == set(expected)
        for key in expected:
            torch.testing.assert_close(outputs["both"][key], expected[key], rtol=0, atol=0, equal_nan=True)
        for key in ("pixel_values_videos", "video_mask", "video_timestamps"):
            torch.testing.assert_close(outputs["alone"][key], expected[key], rtol=0, atol=0, equal_nan=True)
