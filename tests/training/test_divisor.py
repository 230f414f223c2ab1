"""The divisor (paper, *Method application*, step 2): tiles are zero-padded so that "both the image
height and width are divisible by 16". Derived from the architecture; a tile of 7680 + 16 k px runs
at its own size through PyTorch, the exported ONNX graph and the runtime.

Not asserted, because it does not hold: that such a tile gives the same result as the same tile
zero-padded to a multiple of 32 (the former contract). The network sees the extra black border
(convolutions near the edge, and the ASPP's image-level pooling averages over the whole padded
input). Measured with the bundled demonstration model on CMU-1-Small-Region at 1 µm/px: 2.2% of
the valid pixels of a 272 px tile differ (up to 179 levels, near the padded edge) between padding
to 272 and to 288. Padding to 16, as the paper does, is what reproduces its results.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tseg.runtime.execution.backends import load_backend  # noqa: E402
from tseg.runtime.execution.contract import PAPER  # noqa: E402
from tseg.runtime.method.tiling import pad_to_divisor  # noqa: E402
from tseg.training.checkpoint import save_checkpoint  # noqa: E402
from tseg.training.config import ModelConfig, load_config  # noqa: E402
from tseg.training.model import build_model  # noqa: E402

SIDE = 7680 + 16  # 16 x 481: a multiple of 16, not of 32


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = load_config("tiny").model
    return cfg, build_model(cfg).eval()


@pytest.mark.slow
def test_divisor_is_derived_from_the_architecture(tiny):
    cfg, model = tiny
    assert ModelConfig().divisor == 16  # the paper's network (eca_nfnet_l3, output stride 16)
    assert PAPER.divisor == 16  # the runtime's contract for a model that carries none
    assert cfg.divisor == model.encoder.output_stride == 16
    assert dataclasses.replace(cfg, encoder_output_stride=8).divisor == 8
    assert dataclasses.replace(cfg, encoder_depth=3).divisor == 8  # the encoder stops at stride 8
    assert dataclasses.replace(cfg, encoder_depth=4).divisor == 16


@pytest.mark.slow
@torch.no_grad()
def test_a_side_of_7680_plus_16_runs_and_7680_plus_8_does_not(tiny):
    """16 is enough (the stride-4 and upsampled stride-16 features line up) and necessary."""
    _, model = tiny
    out = model(torch.randn(1, 3, SIDE, 48))  # 48 = 16 x 3, odd too
    assert out.shape == (1, 3, SIDE, 48) and torch.isfinite(out).all()
    with pytest.raises(RuntimeError, match="divisible by 16"):
        model(torch.randn(1, 3, SIDE - 8, 48))


@pytest.mark.slow
def test_exported_graph_and_runtime_run_it_unpadded(tiny, tmp_path):
    from tseg.export.network import TileModel
    from tseg.export.onnx_export import export_checkpoint

    cfg, model = tiny
    mean, std = (0.8, 0.7, 0.8), (0.1, 0.15, 0.1)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", model, cfg, mean=mean, std=std, mpp=1.0, tile_size=256, step=1)
    export_checkpoint(ckpt, tmp_path / "tiny.onnx", tile_size=SIDE, min_overlap=1024, traced_size=(128, 128),
                      check_parity=False, measure_memory=False)
    backend = load_backend(tmp_path / "tiny.onnx", providers="cpu")
    assert backend.contract.divisor == 16 and backend.contract.tile_size == SIDE
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (SIDE, 48, 3), dtype=np.uint8)
    # The runtime pads tiles to the contract's divisor: nothing to pad here (32 would add 16 rows).
    assert pad_to_divisor(tile, backend.contract.divisor) is tile
    assert pad_to_divisor(tile, 32).shape == (SIDE + 16, 64, 3)
    got = backend.infer(tile[None])[0, 0]
    with torch.no_grad():
        want = TileModel(model, mean, std, cfg.tumour_index).eval()(torch.from_numpy(tile[None]))[0, 0].numpy()
    diff = np.abs(got.astype(int) - want.astype(int))
    assert got.shape == (SIDE, 48) and diff.max() <= 1 and np.count_nonzero(diff) <= 1e-3 * diff.size
