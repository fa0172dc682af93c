"""`pipelines/pipeline_clip2video.py`'s label captions, from its contract: a template with exactly one `{}`, filled by
plain replacement, never `str.format`; braces, format fields and escapes in the template or in a label (user text at
the endpoint) stay exactly as written (hypothesis over arbitrary text)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clip2video.pipelines.pipeline_clip2video import check_hypothesis_template, hypothesis_captions


# Text rich in what str.format would interpret: braces, fields, attribute and index lookups, conversions.
PIECES = list("ab {}[]!:0._x%s") + ["{0}", "{x}", "{{", "}}", "{0.__class__}", "{!r}"]
TEXT = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)


@settings(deadline=None)
@given(prefix=TEXT, suffix=TEXT, labels=st.lists(TEXT.filter(bool), min_size=1, max_size=5))
def test_the_label_replaces_the_one_placeholder_and_nothing_else_changes(prefix, suffix, labels):
    template = prefix + "{}" + suffix
    if template.count("{}") != 1:
        with pytest.raises(ValueError, match=r"exactly one '\{\}' where the label goes"):
            check_hypothesis_template(template)
        return
    assert check_hypothesis_template(template) == template
    assert hypothesis_captions(labels, template) == [prefix + label + suffix for label in labels]


@pytest.mark.parametrize("template", ["a video of {0}.", "{}{}", "no placeholder", "{} and {}", "", "{ }"])
def test_templates_without_exactly_one_placeholder_are_refused(template):
    with pytest.raises(ValueError, match=r"must be a string with exactly one '\{\}' where the label goes"):
        check_hypothesis_template(template)


def test_braces_and_format_fields_stay_literal():
    assert hypothesis_captions(["{0.__class__}", "50% {x}"], "{{a}} video of {}: {0}!r") == [
        "{{a}} video of {0.__class__}: {0}!r", "{{a}} video of 50% {x}: {0}!r"]


def test_num_frames_may_reach_the_frame_position_table_and_not_pass_it():
    from clip2video.pipelines.pipeline_clip2video import check_num_frames
    from tests.helpers.models import tiny_checkpoint_config

    config = tiny_checkpoint_config()
    limit = config.max_frame_positions
    assert config.uses_frame_positions and check_num_frames(limit, config) == limit
    assert check_num_frames(1, config) == 1
    with pytest.raises(ValueError, match=rf"`num_frames`={limit + 1} exceeds the model's frame-position table "
                                         rf"\({limit} frames\)"):
        check_num_frames(limit + 1, config)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match=r"`num_frames` must be a positive integer"):
            check_num_frames(bad, config)
