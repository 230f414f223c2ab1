"""Training data: a deterministic batch order and the tile dataset with augmentations.

Batch order (paper, *Network optimisation*): each epoch is a random permutation of the
(balanced) tile list; batches are taken from it without replacement; an epoch ends when the
list is exhausted (a last incomplete batch is dropped) and the selection is reset. The order is
a pure function of (seed, step), which is what makes resuming exact: the batch of step ``s`` is
the same whether the run was interrupted or not. Under DistributedDataParallel each process
takes its slice of the global batch.

Each sample's randomness (crop position, augmentations) is seeded from (seed, epoch, position),
so it too is independent of workers and interruptions. Augmentations (albumentations, training
only): random crop 2048 -> 1536, flips, 90-degree rotations, a mild affine transform, and
colour distortions (hue/saturation/value, brightness/contrast, gamma), blur, noise and JPEG
compression, in the spirit of the paper's Protocol Listing 2.
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
    """Which samples make up the batch of each step, for one process of ``world_size``."""

    n_samples: int
    batch_size: int  # per process
    seed: int = 0
    world_size: int = 1
    rank: int = 0

    def __post_init__(self) -> None:
        if self.n_samples < self.global_batch:
            raise InvalidArgumentError(
                f"the dataset has {self.n_samples} samples, fewer than one global batch of {self.global_batch}")

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.n_samples // self.global_batch

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_samples)

    def keys(self, step: int) -> list[tuple[int, int, int]]:
        """``(epoch, position in epoch, sample index)`` of this process's part of the batch."""
        epoch, within = divmod(step, self.steps_per_epoch)
        perm = self.permutation(epoch)
        start = within * self.global_batch + self.rank * self.batch_size
        return [(epoch, start + i, int(perm[start + i])) for i in range(self.batch_size)]


class StepBatches(torch.utils.data.Sampler):
    """A batch sampler yielding the keys of steps ``start .. stop - 1``."""

    def __init__(self, order: BatchOrder, start: int, stop: int) -> None:
        self.order, self.start, self.stop = order, start, stop

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start, self.stop):
            yield self.order.keys(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def augmentations(crop: int, augment: bool) -> Any:
    import albumentations as A

    ops: list[Any] = [A.PadIfNeeded(crop, crop, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
                      A.RandomCrop(crop, crop)]
    if augment:
        ops += [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(scale=(0.9, 1.1), rotate=(-15, 15), p=0.3, border_mode=cv2.BORDER_REFLECT_101),
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=25, val_shift_limit=15, p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
            A.RandomGamma(gamma_limit=(80, 120), p=0.3),
            A.GaussianBlur(blur_limit=(3, 5), p=0.15),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.15),
            A.ImageCompression(quality_range=(70, 100), p=0.2),
        ]
    return A.Compose(ops, seed=0)


class TileDataset(torch.utils.data.Dataset):
    """Samples are addressed by ``(epoch, position, index)`` keys (see :class:`BatchOrder`).

    Returns the standardised image (float32 CHW: ``(x / 255 - mean) / std``, *Image value
    standardisation*) and the class-index mask (long HW, labels mapped through ``class_labels``).
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], crop: int, mean: Sequence[float],
                 std: Sequence[float], class_labels: Sequence[int], augment: bool = True, seed: int = 0) -> None:
        self.rows = list(rows)
        self.crop = crop
        self.mean = np.asarray(mean, np.float32) * 255.0
        self.std = np.asarray(std, np.float32) * 255.0
        self.seed = seed
        self.augment = augment
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
            self._transform = augmentations(self.crop, self.augment)
        image, mask = self.load(index)
        seed = int(np.random.default_rng([self.seed, epoch, position]).integers(0, 2**31 - 1))
        self._transform.set_random_seed(seed)
        out = self._transform(image=image, mask=mask)
        x = (out["image"].astype(np.float32) - self.mean) / self.std
        y = self.lut[out["mask"]]
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), torch.from_numpy(y)
