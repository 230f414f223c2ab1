"""The network: the paper's parameter count, GroupNorm, initialisation, weight decay groups."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from tseg.training.config import ModelConfig, load_config  # noqa: E402
from tseg.training.model import build_model, count_parameters, fan_in, parameter_groups  # noqa: E402


@pytest.fixture(scope="module")
def paper_model():
    return build_model(ModelConfig())


@pytest.mark.slow
def test_paper_configuration_has_the_papers_parameter_count(paper_model):
    assert count_parameters(paper_model) == 73_472_403


def test_paper_network_pads_to_16(paper_model):
    """*Method application*, step 2: "Zero-pad image so that both the image height and width are
    divisible by 16" -- the divisor derived from the architecture, and what smp checks inputs against."""
    assert ModelConfig().divisor == paper_model.encoder.output_stride == 16


def test_no_batchnorm_left_and_groups_of_8(paper_model):
    norms = [m for m in paper_model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms == []
    gns = [m for m in paper_model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(gns) == 9
    assert all(m.num_channels // m.num_groups == 8 for m in gns)


@torch.no_grad()
def test_paper_initialisation(paper_model):
    # Encoder (eq. 3): N(0, 1/fan_in) weights, zero biases. Take the largest conv for statistics.
    convs = [m for m in paper_model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    big = max(convs, key=lambda m: m.weight.numel())
    assert float(big.weight.std()) == pytest.approx(math.sqrt(1 / fan_in(big.weight)), rel=0.02)
    assert abs(float(big.weight.mean())) < 0.01 * math.sqrt(1 / fan_in(big.weight)) * 10
    assert all(m.bias is None or float(m.bias.abs().max()) == 0 for m in convs)
    # Decoder and head (eq. 4): U(-a, a), a = sqrt(3 / fan_in), weights and biases.
    for part in (paper_model.decoder, paper_model.segmentation_head):
        for m in part.modules():
            if isinstance(m, torch.nn.Conv2d):
                a = math.sqrt(3 / fan_in(m.weight))
                assert float(m.weight.abs().max()) <= a
                if m.weight.numel() > 10_000:
                    assert float(m.weight.abs().max()) > 0.99 * a  # really uniform up to a
                    assert float(m.weight.std()) == pytest.approx(a / math.sqrt(3), rel=0.03)
                if m.bias is not None:
                    assert float(m.bias.abs().max()) <= a


def test_weight_decay_spares_gains_and_biases(paper_model):
    decay, no_decay = parameter_groups(paper_model, 2e-5)
    assert decay["weight_decay"] == 2e-5 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in paper_model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    spared = {names[id(p)] for p in no_decay["params"]}
    assert "encoder.model.stem_conv1.weight" in decayed
    assert "encoder.model.stem_conv1.gain" in spared and "encoder.model.stem_conv1.bias" in spared
    assert not any(n.endswith(".bias") or n.endswith("gain") for n in decayed)
    assert len(decayed) + len(spared) == len(list(paper_model.parameters()))


@pytest.mark.slow
def test_tiny_configuration_builds_and_runs():
    cfg = load_config("tiny").model
    model = build_model(cfg).eval()
    assert cfg.divisor == model.encoder.output_stride == 16
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 96))
    assert out.shape == (1, 3, 64, 96)
