"""Settings the temporal layers must take from the model's configuration, which numbers alone barely show: the
attention implementation chosen at loading (a sub-configuration does not inherit it by itself) and the authors'
LayerNorm epsilon of 1e-12 (CLIP's 1e-5 moves scores by about 1e-6, under the conversion tests' tolerance, but
dominates on low-variance inputs)."""

import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.modeling_clip2video.modeling_clip2video import CLIP2VideoTemporalTransformer
from tests.helpers.models import tiny_config


def temporal_transformers(model):
    return [module for module in model.modules() if isinstance(module, CLIP2VideoTemporalTransformer)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("temporal_settings")
    torch.manual_seed(0)
    CLIP2VideoModel(tiny_config()).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_temporal_layers_use_the_attention_implementation_chosen_at_loading(saved, implementation):
    model = CLIP2VideoModel.from_pretrained(saved, attn_implementation=implementation)
    # The full model has three: the temporal transformer, TDB's difference attention and TAB's frame encoder.
    assert len(temporal_transformers(model)) == 3
    assert {module.config._attn_implementation for module in temporal_transformers(model)} == {implementation}


def test_temporal_layer_norms_use_the_authors_epsilon(saved):
    model = CLIP2VideoModel.from_pretrained(saved)
    norms = [
        module for transformer in temporal_transformers(model) for module in transformer.modules()
        if isinstance(module, torch.nn.LayerNorm)
    ]
    assert len(norms) == 2 * (model.config.temporal_num_layers + 2)  # two per layer
    assert {norm.eps for norm in norms} == {1e-12}
    # On a low-variance input the epsilon is what the layer computes: 1e-12 normalises it, 1e-5 would flatten it.
    layer = model.temporal_transformer.layers[0]
    tokens = 1e-4 * torch.randn(1, 5, model.config.projection_dim, generator=torch.Generator().manual_seed(0))
    normalised = layer.layer_norm1(tokens)
    centred = (normalised - layer.layer_norm1.bias) / layer.layer_norm1.weight
    torch.testing.assert_close(centred.std(dim=-1, unbiased=False), torch.ones(1, 5), rtol=1e-3, atol=1e-3)
