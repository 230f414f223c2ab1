"""Network optimisation (paper, *Network optimisation*): ``tseg-rt train fit``.

SGD with Nesterov momentum 0.9 and weight decay 2e-5 except on gains and biases; the step
length of :mod:`tseg.training.schedule`; loss = multiclass Dice + top-90 cross entropy;
automatic mixed precision on CUDA; DistributedDataParallel when started by ``torchrun``.

The global batch (paper: 24) is fixed by the config; the world size decides how it is run
(:func:`tseg.training.config.batch_layout`): each process runs ``accumulation`` micro-batches of
``micro_batch`` tiles (paper: 3), each with its own forward pass and loss, and their gradients
are averaged (``loss / accumulation`` per micro-batch, then DistributedDataParallel's mean over
processes), so every layout that divides the batch gives the paper's update of 8 x 3 tiles
(GroupNorm has no batch statistics). Dropout masks (the ASPP's) are seeded per (seed, step,
micro-batch), not per process, so they too do not depend on the layout.

Loss (mean over the global batch's micro-batches), images/s and step length are logged to
``RUN_DIR/log.csv`` (and a progress bar); checkpoints are written every ``checkpoint_every``
steps and at the end (``RUN_DIR/checkpoint.pt``, plus ``final.pt``). Rerunning with the same
RUN_DIR resumes from ``checkpoint.pt`` exactly: same schedule position, same data order, same
next batch.

    torchrun --nproc-per-node 8 -m tseg.training.train --config paper --index tiles.csv --out runs/paper
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from tseg.runtime.execution.backends.base import file_sha256
from tseg.runtime.errors import InvalidArgumentError, TsegError

from .balance import balance_summary, balanced_rows
from .checkpoint import load_weights, read_checkpoint, save_checkpoint
from .config import TrainConfig, batch_layout, load_config
from .data import BatchOrder, StepBatches, TileDataset
from .losses import SegmentationLoss
from .model import build_model, parameter_groups
from .prepare import read_index
from .schedule import step_length

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
FINAL = "final.pt"
LOG = "log.csv"
LOG_COLUMNS = ["step", "epoch", "loss", "dice_loss", "ce_loss", "step_length", "images_per_s", "s_per_step"]


@dataclass
class Distributed:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return Distributed(world, dist.get_rank(), local)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class FitResult:
    run_dir: Path
    steps_done: int
    last_loss: float | None
    checkpoint: Path
    losses: list[float]


def micro_batch_seed(seed: int, step: int, micro_index: int) -> int:
    """The torch seed of one micro-batch's forward pass (dropout), independent of the layout."""
    return int(np.random.default_rng([seed, step, micro_index]).integers(0, 2**63 - 1))


def fit(config: TrainConfig, index: str | os.PathLike[str], run_dir: str | os.PathLike[str],
        device: str | None = None, stop_after: int | None = None, resume: bool = True,
        progress: bool = True, on_step: Callable[[int, float], None] | None = None) -> FitResult:
    """Train ``config`` on the tile index; ``stop_after`` ends this session after that many steps
    (the schedule still spans ``config.optim.steps``), which is how resumption is tested."""
    opt = config.optim
    # Checked before the process group forms, so that every process fails alike instead of waiting.
    layout = batch_layout(opt, int(os.environ.get("WORLD_SIZE", "1")))
    dist_info = init_distributed()
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if device is None:
        device = f"cuda:{dist_info.local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    rows = read_index(index)
    balance = None
    if config.data.balance:
        balance = balance_summary(rows, seed=opt.seed)
        if dist_info.is_main:
            log.info("balanced by tissue section: %s", balance)
        rows = balanced_rows(rows, seed=opt.seed)
    order = BatchOrder(len(rows), opt.global_batch, opt.micro_batch, opt.seed, dist_info.world_size, dist_info.rank)
    dataset = TileDataset(rows, config.augmentations(), config.data.mean, config.data.std,
                          config.model.class_labels, seed=opt.seed)
    if dist_info.is_main:
        log.info("%s; %d samples, %d steps per epoch", layout.describe(), len(rows), order.steps_per_epoch)

    torch.manual_seed(opt.seed)
    model = build_model(config.model).to(dev)
    optimizer = torch.optim.SGD(parameter_groups(model, opt.weight_decay), lr=opt.start_lr,
                                momentum=opt.momentum, nesterov=opt.nesterov)
    use_amp = opt.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_step = 0
    checkpoint_path = run / CHECKPOINT
    if resume and checkpoint_path.exists():
        content = read_checkpoint(checkpoint_path)
        if content["model_config"] != config.model.to_dict():
            raise InvalidArgumentError(f"{checkpoint_path}: the run folder holds a checkpoint of another "
                                       "model config; use a new --out or the same config")
        load_weights(model, content["state_dict"], checkpoint_path)
        if content.get("optimizer"):
            optimizer.load_state_dict(content["optimizer"])
        if content.get("scaler") and use_amp:
            scaler.load_state_dict(content["scaler"])
        _set_rng_state(content.get("rng", {}))
        start_step = int(content["step"])
        log.info("resuming %s at step %d", run, start_step)
    ddp = dist_info.world_size > 1
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[dist_info.local_rank] if dev.type == "cuda" else None)
    criterion = SegmentationLoss(opt.top_fraction)
    stop = opt.steps if stop_after is None else min(opt.steps, start_step + stop_after)
    # The loader gets its own generator: its iterator draws a base seed at start, which must not
    # consume the global RNG (dropout's), or a resumed run would diverge from an uninterrupted one.
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=StepBatches(order, start_step, stop), num_workers=config.data.num_workers,
        pin_memory=dev.type == "cuda", persistent_workers=False, generator=torch.Generator().manual_seed(opt.seed))
    index_hash = file_sha256(index)
    provenance = {"index": str(Path(index).resolve()), "index_sha256": index_hash, "world_size": dist_info.world_size,
                  "accumulation": layout.accumulation, "micro_batch": layout.micro_batch,
                  "global_batch": layout.global_batch, "device": str(dev), "amp": use_amp, "samples": len(rows),
                  "balance": balance}

    def checkpoint(step_done: int, name: str = CHECKPOINT) -> Path:
        return save_checkpoint(run / name, model, config.model, mean=config.data.mean, std=config.data.std,
                               mpp=config.data.mpp, tile_size=config.data.tile_size, step=step_done,
                               train_config=config.to_dict(), optimizer=optimizer,
                               scaler=scaler if use_amp else None, rng=_rng_state(),
                               provenance={**provenance, "step": step_done})

    log_path = run / LOG
    if dist_info.is_main and not log_path.exists():
        with open(log_path, "w", newline="") as fh:
            csv.writer(fh).writerow(LOG_COLUMNS)
    bar = None
    if progress and dist_info.is_main:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                       TimeRemainingColumn())
        bar.start()
        task = bar.add_task("train", total=opt.steps, completed=start_step, info="")
    losses: list[float] = []
    last = None
    model.train()
    step = start_step
    t_last = time.perf_counter()
    micro_batches = iter(loader)
    try:
        while step < stop:
            lr = step_length(step, opt.steps, opt.peak_lr, opt.start_lr, opt.warmup_steps, opt.warmup_every)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            totals = torch.zeros(3, dtype=torch.float64, device=dev)  # loss, dice, ce
            for k in range(layout.accumulation):
                images, targets = next(micro_batches)
                images = images.to(dev, non_blocking=True)
                targets = targets.to(dev, non_blocking=True)
                torch.manual_seed(micro_batch_seed(opt.seed, step, order.micro_index(k)))
                # Under DDP the gradients are averaged over processes after the last micro-batch only.
                sync = model.no_sync() if ddp and k < layout.accumulation - 1 else nullcontext()
                with sync:
                    with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                        logits = model(images)
                    loss, dice, ce = criterion(logits, targets)
                    scaler.scale(loss / layout.accumulation).backward()
                totals += torch.stack([loss.detach(), dice.detach(), ce.detach()]).double()
            scaler.step(optimizer)
            scaler.update()
            if ddp:
                import torch.distributed as dist

                dist.all_reduce(totals)
            totals /= layout.micro_batches
            last, dice_mean, ce_mean = (float(v) for v in totals)
            losses.append(last)
            step += 1
            now = time.perf_counter()
            s_per_step = now - t_last
            t_last = now
            if on_step:
                on_step(step, last)
            if dist_info.is_main and (step % opt.log_every == 0 or step == stop):
                with open(log_path, "a", newline="") as fh:
                    csv.writer(fh).writerow([step, order.epoch_of(step - 1), f"{last:.6f}", f"{dice_mean:.6f}",
                                             f"{ce_mean:.6f}", f"{lr:.8g}", f"{layout.global_batch / s_per_step:.3f}",
                                             f"{s_per_step:.4f}"])
            if bar is not None:
                bar.update(task, completed=step, info=f"loss {last:.4f} lr {lr:.2e}")
            if dist_info.is_main and step % opt.checkpoint_every == 0 and step < opt.steps:
                checkpoint(step)
    finally:
        if bar is not None:
            bar.stop()
    final_path = checkpoint_path
    if dist_info.is_main and step > start_step:
        checkpoint(step)
        if step >= opt.steps:
            final_path = checkpoint(step, FINAL)
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()  # the other processes wait for rank 0's checkpoint
        dist.destroy_process_group()
    return FitResult(run, step, last, final_path, losses)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the tumour segmentation network (tseg-rt train fit).")
    parser.add_argument("--config", required=True, help="TOML config, or a bundled one: paper, tiny, demo")
    parser.add_argument("--index", required=True, help="tile index CSV from `tseg-rt train prepare`")
    parser.add_argument("--out", required=True, help="run folder (resumes if it holds a checkpoint)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        result = fit(load_config(args.config), args.index, args.out, args.device, resume=not args.no_resume)
    except TsegError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    print(f"trained to step {result.steps_done}; checkpoint {result.checkpoint}")


if __name__ == "__main__":
    main()
