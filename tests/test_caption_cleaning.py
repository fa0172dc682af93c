"""Captions are cleaned as OpenAI's CLIP tokenizer cleans them before BPE (`basic_clean`: `ftfy.fix_text`, then HTML
entities unescaped twice; `whitespace_clean`: runs of whitespace to one space, stripped): escaped captions, as
scraped datasets hold them, give the ids of the plain text, with ftfy and where it is not installed (remote code)."""

import sys

import pytest

from clip2video.processing.processing_clip2video import clean_caption
from tests.helpers.models import tiny_processor

CAPTIONS = [
    ("rock &amp;amp; roll", "rock & roll"),  # escaped twice
    ("a &amp;lt;b&amp;gt;  sign", "a <b> sign"),
    ("  tom &amp; jerry\n\t&amp;quot;run&amp;quot; ", 'tom & jerry "run"'),
]


@pytest.mark.parametrize("with_ftfy", [True, False], ids=["ftfy", "without_ftfy"])
@pytest.mark.parametrize("caption, plain", CAPTIONS)
def test_escaped_captions_give_the_ids_of_the_plain_text(monkeypatch, caption, plain, with_ftfy):
    if not with_ftfy:
        monkeypatch.setitem(sys.modules, "ftfy", None)  # `import ftfy` raises ImportError
    processor = tiny_processor()
    assert clean_caption(caption) == plain
    escaped = processor(text=[caption], return_tensors="pt")["input_ids"]
    expected = processor.tokenizer([plain], padding="max_length", max_length=32, return_tensors="pt")["input_ids"]
    assert escaped.tolist() == expected.tolist()
