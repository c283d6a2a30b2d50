"""SegFormer specifics the shared model harness (tests/test_models.py) does not see: the input multiple
follows the patch-embedding strides, random weights get the MiT init, and the CPU pipeline's
model takes its own crops."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from medseg.errors import ConfigError
from medseg.models import create_model, get_model_spec

TINY = {"in_channels": 3, "out_channels": 3, "hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1],
        "num_attention_heads": [1, 2, 4, 8], "decoder_hidden_size": 16}
PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "segformer_images_cpu.yaml"


@pytest.mark.parametrize(("strides", "where", "multiple"), [
    (None, "arg", 32), ([2, 2, 2, 2], "arg", 16), ([2, 2, 2, 2], "config", 16), ([4, 2, 2, 1], "arg", 16)])
def test_input_multiple_is_the_product_of_the_strides(strides, where, multiple):
    """The declared multiple is what the network takes: at it the logits keep the input size and
    come out of the decoder at ``1 / strides[0]``; a size off it is refused with the factor."""
    config = dict(TINY)
    if strides is not None:
        config.update({"strides": strides} if where == "arg" else {"config": {"strides": strides}})
    spec = get_model_spec("segformer")
    assert spec.size_multiple(config) == (multiple, multiple)
    model = create_model("segformer", **config).eval()
    x = torch.randn(1, 3, 2 * multiple, 3 * multiple)
    with torch.no_grad():
        assert model(x).shape[2:] == x.shape[2:]
        first = (strides or [4])[0]
        assert model.model(pixel_values=x).logits.shape[2:] == (2 * multiple // first, 3 * multiple // first)
    with pytest.raises(ConfigError, match=re.escape(f"multiple of {[multiple, multiple]}")):
        spec.check_size([multiple + 8, multiple], config, what="images.crop_size")


def test_random_weights_get_the_mit_init():
    """Convolutions ~ N(0, sqrt(2 / fan_out)) (the 3x3 depthwise ones of Mix-FFN included), linear layers
    std 0.02, the classifier std 0.01: not transformers' std 0.02 for every convolution."""
    torch.manual_seed(0)
    net = create_model("segformer", variant="b0", depths=[1, 1, 1, 1], out_channels=3).model
    dw = net.segformer.stages[0].blocks[0].mlp.dwconv.dwconv  # 3x3, groups = channels: fan_out 9
    assert dw.groups == dw.out_channels and float(dw.weight.std()) == pytest.approx(math.sqrt(2 / 9), rel=0.1)
    patch = net.segformer.stages[0].patch_embeddings.proj  # 7x7, 32 out: fan_out 1568
    assert float(patch.weight.std()) == pytest.approx(math.sqrt(2 / (7 * 7 * 32)), rel=0.1)
    assert float(net.segformer.stages[0].blocks[0].attention.q_proj.weight.std()) == pytest.approx(0.02, rel=0.1)
    assert float(net.decode_head.classifier.weight.std()) == pytest.approx(0.01, rel=0.3)
    assert all(float(m.bias.abs().max()) == 0 for m in net.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None)


def test_cpu_pipeline_crops_fit_its_model():
    """The CPU pipeline's crop and the shapes images (96 x 128) are multiples of its model's input multiple."""
    cfg = yaml.safe_load(PIPELINE.read_text())
    config = cfg["model"]["config"]
    spec = get_model_spec("segformer")
    spec.check_size(cfg["images"]["crop_size"], config, what="images.crop_size")
    spec.check_size([96, 128], config, what="shapes image")
    model = create_model("segformer", **{**config, "out_channels": 3}).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 128)).shape == (1, 3, 96, 128)
