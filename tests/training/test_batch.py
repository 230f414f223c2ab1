"""The global batch (paper, *Network optimisation*): 24 tiles per step, 8 GPUs x 3, any layout."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("torch")

from tseg.runtime.errors import InvalidArgumentError  # noqa: E402
from tseg.training.config import OptimConfig, batch_layout, config_from_dict, load_config  # noqa: E402
from tseg.training.data import BatchOrder, StepBatches  # noqa: E402


def test_paper_config_says_the_global_batch():
    optim = load_config("paper").optim
    assert (optim.global_batch, optim.micro_batch) == (24, 3)
    # "The batch of 24 is distributed on 8 GPUs with 3 tiles per GPU".
    eight = batch_layout(optim, 8)
    assert (eight.per_process, eight.accumulation, eight.micro_batches) == (3, 1, 8)
    one = batch_layout(optim, 1)
    assert (one.per_process, one.accumulation) == (24, 8)
    assert batch_layout(optim, 2).accumulation == 4 and batch_layout(optim, 4).accumulation == 2
    assert one.describe() == "global batch 24 = 1 process(es) x 8 accumulation step(s) x 3 tile(s)"


@pytest.mark.parametrize("world", [3, 5, 6, 7, 16])
def test_layouts_that_do_not_divide_are_refused(world):
    with pytest.raises(InvalidArgumentError, match=f"cannot be shared by {world} process.*run 1, 2, 4, 8 processes"):
        batch_layout(OptimConfig(), world)


def test_batch_config_errors():
    with pytest.raises(InvalidArgumentError, match="not a multiple of micro_batch 5"):
        config_from_dict({"optim": {"global_batch": 24, "micro_batch": 5}})
    with pytest.raises(InvalidArgumentError, match=r"\[optim\]: batch_size was the batch of one process.*global_batch"):
        config_from_dict({"optim": {"batch_size": 3}}, "old.toml")


def test_every_layout_runs_the_same_micro_batches():
    """Process r's accumulation step k runs micro-batch r * accumulation + k of the global batch."""
    n, steps = 100, 9  # 4 steps per epoch: crosses an epoch boundary
    reference = BatchOrder(n, 24, 3, seed=5, world_size=1)
    expected = [reference.keys(s, k) for s in range(steps) for k in range(8)]
    for world in (1, 2, 4, 8):
        orders = [BatchOrder(n, 24, 3, seed=5, world_size=world, rank=r) for r in range(world)]
        got = [orders[m // orders[0].accumulation].keys(s, m % orders[0].accumulation)
               for s in range(steps) for m in range(8)]
        assert got == expected, world
    # Within an epoch no tile repeats; each global batch is 24 distinct positions.
    first_epoch = [key for s in range(4) for k in range(8) for key in reference.keys(s, k)]
    assert len({idx for _, _, idx in first_epoch}) == 96
    assert reference.epoch_of(4) == 1 and reference.keys(4, 0)[0][0] == 1
    sampler = list(StepBatches(BatchOrder(n, 24, 3, seed=5, world_size=2, rank=1), 2, 4))
    assert len(sampler) == 2 * 4 and sampler[0] == reference.keys(2, 4)


def test_fit_refuses_a_world_size_that_does_not_divide(tmp_path, monkeypatch):
    from tseg.training.train import fit

    cfg = load_config("tiny")
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, global_batch=4, micro_batch=2))
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(InvalidArgumentError, match="cannot be shared by 3 process"):
        fit(cfg, tmp_path / "tiles.csv", tmp_path / "run")
