"""The real CLIP tokenizer without the Hugging Face Hub, from the BPE file that ships inside `open-clip-torch`."""

import gzip
import os

from transformers import CLIPTokenizer


# OpenAI's vocabulary: 256 byte symbols, the same with the end-of-word mark, 48,894 merges, then two special tokens.
NUM_MERGES = 49152 - 256 - 2


def byte_symbols() -> list[str]:
    """The 256 printable symbols byte-level BPE uses for the bytes 0-255, in OpenAI's vocabulary order.

    Printable Latin-1 bytes stand for themselves and come first; every other byte is mapped, in increasing order, to
    the code points from 256 on.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in symbols]
    symbols.update({byte: chr(256 + rank) for rank, byte in enumerate(others)})
    return [symbols[byte] for byte in printable + others]


def clip_vocab_and_merges(bpe_path: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Token-to-id vocabulary and merge rules, derived from a `bpe_simple_vocab_16e6.txt.gz` file as OpenAI's
    `SimpleTokenizer` does (the file's first line is a header)."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")[1 : NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = byte_symbols()
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def offline_clip_tokenizer(bpe_path: str | None = None) -> CLIPTokenizer:
    """OpenAI's CLIP tokenizer (same ids as `openai/clip-vit-base-patch32`), built from the BPE vocabulary inside the
    installed `open-clip-torch` wheel, or from `bpe_path`. No network access."""
    if bpe_path is None:
        try:
            import open_clip
        except ImportError as error:
            raise ImportError(
                "offline_clip_tokenizer() reads the vocabulary shipped with open-clip-torch: "
                "`pip install open-clip-torch`, pass `bpe_path`, or load a CLIP tokenizer from the Hub."
            ) from error
        bpe_path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    vocab, merges = clip_vocab_and_merges(bpe_path)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
