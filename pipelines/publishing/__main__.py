"""Publishing from the command line.

    python -m clip2video.pipelines.publishing convert --checkpoint CLIP2Video_MSVD/pytorch_model.bin.2 \\
        --output_dir clip2video-msvd --fps 5 --model_card model_cards/clip2video-msvd.md

`convert`: the authors' released checkpoint converted (the converter's flags, e.g. `--centerK 7` for VATEX) and
published in one call: the model, its processor (`--num_frames`, `--fps`: the sampling the checkpoint was tested
with), the pipelines, the endpoint handler and, with `--model_card`, the card as `README.md`. The folder is the one
`save_publishable_checkpoint` writes for the same model and processor.
"""

import argparse
from pathlib import Path

from clip2video.modeling_clip2video.convert_original_checkpoint import (
    ConversionError,
    add_conversion_arguments,
    convert_original_checkpoint,
)
from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer

from .folder import complete_saved_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m clip2video.pipelines.publishing", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="convert the authors' checkpoint and publish it")
    add_conversion_arguments(convert)
    convert.add_argument("--num_frames", type=int, help="frames per video (the processor's default: 12)")
    convert.add_argument("--fps", type=float, help="frames per second sampled (the processor's default: 2.5)")
    convert.add_argument("--model_card", help="Markdown file written as the folder's README.md")
    args = vars(parser.parse_args(argv))
    args.pop("command")
    checkpoint, output_dir, card = args.pop("checkpoint"), args.pop("output_dir"), args.pop("model_card")
    sampling = {name: value for name in ("num_frames", "fps") if (value := args.pop(name)) is not None}
    try:
        # Built first: bad sampling flags fail before the conversion writes anything.
        processor = CLIP2VideoProcessor(
            video_processor=CLIP2VideoVideoProcessor(**sampling), tokenizer=offline_clip_tokenizer()
        )
        if card is not None and not Path(card).is_file():  # before the conversion too
            raise FileNotFoundError(f"--model_card {card} is not a file")
        convert_original_checkpoint(checkpoint, output_dir, **args)
        written = complete_saved_checkpoint(output_dir, processor, model_card_file=card)
    except (ConversionError, ValueError, OSError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"Published {output_dir}: the model, the processor and {', '.join(written)}")


if __name__ == "__main__":
    main()
