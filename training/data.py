"""Training data: a deterministic batch order and the tile dataset with augmentations.

Batch order (paper, *Network optimisation*): each epoch is a random permutation of the
(balanced) tile list; batches of ``global_batch`` tiles are taken from it without replacement;
an epoch ends when the list is exhausted (a last incomplete batch is dropped) and the selection
is reset. Each global batch is cut into micro-batches of ``micro_batch`` tiles, numbered
0 .. global_batch / micro_batch - 1; process ``rank`` of ``world_size`` runs micro-batches
``rank * accumulation .. (rank + 1) * accumulation - 1``, one per accumulation step. The paper's
8 GPUs x 3 tiles and one GPU with 8 accumulation steps of 3 therefore see the same micro-batches.
The order is a pure function of (seed, step), which also makes resuming exact.

Each sample's randomness (crop position, augmentations) is seeded from (seed, epoch, position
in the epoch), so it is independent of workers, processes and interruptions. The augmentations
are the config's ordered albumentations list (:mod:`tseg.training.augmentations`), training only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch

from tseg.runtime.errors import InvalidArgumentError


@dataclass(frozen=True)
class BatchOrder:
    """Which samples make up each micro-batch of each step, for one process of ``world_size``."""

    n_samples: int
    global_batch: int
    micro_batch: int
    seed: int = 0
    world_size: int = 1
    rank: int = 0

    def __post_init__(self) -> None:
        if self.global_batch % (self.micro_batch * self.world_size):
            raise InvalidArgumentError(f"global batch {self.global_batch} does not split into {self.world_size} "
                                       f"process(es) x micro-batches of {self.micro_batch}")
        if self.n_samples < self.global_batch:
            raise InvalidArgumentError(
                f"the dataset has {self.n_samples} samples, fewer than one global batch of {self.global_batch}")

    @property
    def accumulation(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.n_samples // self.global_batch

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_samples)

    def micro_index(self, accumulation_step: int) -> int:
        """Number of this process's ``accumulation_step``-th micro-batch within the global batch."""
        return self.rank * self.accumulation + accumulation_step

    def keys(self, step: int, accumulation_step: int = 0) -> list[tuple[int, int, int]]:
        """``(epoch, position in epoch, sample index)`` of one micro-batch of this process."""
        epoch, within = divmod(step, self.steps_per_epoch)
        perm = self.permutation(epoch)
        start = within * self.global_batch + self.micro_index(accumulation_step) * self.micro_batch
        return [(epoch, start + i, int(perm[start + i])) for i in range(self.micro_batch)]


class StepBatches(torch.utils.data.Sampler):
    """A batch sampler yielding this process's micro-batches of steps ``start .. stop - 1``, in order."""

    def __init__(self, order: BatchOrder, start: int, stop: int) -> None:
        self.order, self.start, self.stop = order, start, stop

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start, self.stop):
            for k in range(self.order.accumulation):
                yield self.order.keys(step, k)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.order.accumulation


class TileDataset(torch.utils.data.Dataset):
    """Samples are addressed by ``(epoch, position, index)`` keys (see :class:`BatchOrder`).

    Returns the standardised image (float32 CHW: ``(x / 255 - mean) / std``, *Image value
    standardisation*) and the class-index mask (long HW, labels mapped through ``class_labels``).
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], augmentations: Sequence[Mapping[str, Any]],
                 mean: Sequence[float], std: Sequence[float], class_labels: Sequence[int], seed: int = 0) -> None:
        self.rows = list(rows)
        self.augmentations = [dict(e) for e in augmentations]
        self.mean = np.asarray(mean, np.float32) * 255.0
        self.std = np.asarray(std, np.float32) * 255.0
        self.seed = seed
        self.lut = np.zeros(256, np.int64)
        known = np.zeros(256, bool)
        for index, label in enumerate(class_labels):
            self.lut[label] = index
            known[label] = True
        self.known = known
        self._transform: Any = None

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.rows[index]
        bgr = cv2.imread(str(row["ImagePath"]), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(row["MaskPath"]), cv2.IMREAD_GRAYSCALE)
        if bgr is None or mask is None:
            raise InvalidArgumentError(f"cannot read tile {row['ImagePath']} or its mask {row['MaskPath']}")
        if not self.known[mask].all():
            raise InvalidArgumentError(f"{row['MaskPath']}: labels {sorted(set(np.unique(mask)) - set(np.flatnonzero(self.known)))} "
                                       "are not among the configured class labels")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), mask

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position, index = key
        if self._transform is None:  # built lazily: one per worker process
            from .augmentations import build_pipeline

            self._transform = build_pipeline(self.augmentations)
        image, mask = self.load(index)
        seed = int(np.random.default_rng([self.seed, epoch, position]).integers(0, 2**31 - 1))
        self._transform.set_random_seed(seed)
        out = self._transform(image=image, mask=mask)
        x = (out["image"].astype(np.float32) - self.mean) / self.std
        y = self.lut[out["mask"]]
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), torch.from_numpy(y)
