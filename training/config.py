"""Training configuration as TOML (``training/configs/*.toml``); no PyTorch needed to read it.

``[model]`` is what :func:`tseg.training.model.build_model` takes and what checkpoints and the
exported ONNX record; ``[data]``, ``[augment]`` and ``[optim]`` drive
:func:`tseg.training.train.fit`. Values not given take the paper's (*Method development*,
*Network optimisation*). Loading validates the augmentation pipeline (albumentations, see
:mod:`tseg.training.augmentations`) and the batch layout, with errors naming the file and entry.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from tseg.runtime.errors import InvalidArgumentError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PAPER_MEAN = (0.8297992, 0.7106879, 0.8241846)
PAPER_STD = (0.1051075, 0.1543867, 0.09917571)


@dataclass(frozen=True)
class ModelConfig:
    """DeepLabV3+ with a timm encoder, BatchNorm replaced by GroupNorm (paper: eca_nfnet_l3)."""

    encoder: str = "tu-eca_nfnet_l3"
    encoder_depth: int = 5
    encoder_output_stride: int = 16
    decoder_channels: int = 256
    decoder_atrous_rates: tuple[int, int, int] = (12, 24, 36)
    upsampling: int = 4
    classes: tuple[str, ...] = ("background", "tissue", "tumour")
    class_labels: tuple[int, ...] = (0, 127, 255)
    tumour_index: int = 2
    group_channels: int = 8  # GroupNorm with groups of 8 channels
    # The paper replaces every BatchNorm (its NFNet encoder has none, so only the decoder's).
    # Small encoders built around BatchNorm (MobileNet, EfficientNet) may keep theirs: in eval
    # mode it folds into the convolutions, while GroupNorm at high resolution is costly on a CPU.
    replace_encoder_batchnorm: bool = True
    init: str = "paper"  # "paper" (eqs. 3-4) or "default" (library defaults)

    @property
    def divisor(self) -> int:
        """Input sides must be multiples of this: 16 for the paper's network (*Method application*).

        Derived from the architecture: the encoder halves the resolution ``encoder_depth`` times
        but stops striding at ``encoder_output_stride`` (later stages are dilated), so its
        deepest features are at stride ``min(2 ** encoder_depth, encoder_output_stride)``, the
        same value segmentation_models_pytorch checks inputs against. DeepLabV3+ upsamples those
        features by ``stride / 4`` and concatenates them with the stride-4 features, which line
        up exactly when the side is a multiple of the deepest stride (and of 4); the x4 head then
        restores the input size. No layer needs more (tested: a side of 16 x odd runs, 8 x odd is
        refused; tests/training/test_divisor.py).
        """
        deepest = min(2 ** self.encoder_depth, self.encoder_output_stride)
        return math.lcm(deepest, 4)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decoder_atrous_rates"] = list(self.decoder_atrous_rates)
        d["classes"] = list(self.classes)
        d["class_labels"] = list(self.class_labels)
        return d


@dataclass(frozen=True)
class DataConfig:
    tile_size: int = 2048
    crop_size: int = 1536
    mpp: float = 1.0
    mean: tuple[float, float, float] = PAPER_MEAN
    std: tuple[float, float, float] = PAPER_STD
    balance: bool = True  # oversample cancer types by tissue section (paper, *Dataset balancing*)
    augment: bool = True  # false: only pad + random crop (no distortion), whatever [augment] says
    num_workers: int = 4


@dataclass(frozen=True)
class AugmentConfig:
    """The ordered augmentation list: ``transforms`` if given, else the built-in ``pipeline``."""

    pipeline: str = "authors"
    transforms: tuple[Mapping[str, Any], ...] = ()

    def entries(self, crop_size: int) -> list[dict[str, Any]]:
        from .augmentations import as_plain, builtin_pipeline

        return as_plain(self.transforms) if self.transforms else builtin_pipeline(self.pipeline, crop_size)

    def to_dict(self) -> dict[str, Any]:
        from .augmentations import as_plain

        return {"pipeline": self.pipeline, "transforms": as_plain(self.transforms)}


@dataclass(frozen=True)
class OptimConfig:
    # The paper's batch: 24 tiles per step, on 8 GPUs x 3. ``micro_batch`` is the number of tiles
    # in one forward pass and one loss evaluation (the Dice and top-90 cross entropy are taken
    # over these tiles, as over each GPU's 3 in the paper), so it is part of the method; the
    # processes and gradient-accumulation steps that make up the global batch are derived from
    # the world size at run time (:func:`batch_layout`).
    global_batch: int = 24
    micro_batch: int = 3
    steps: int = 500_000
    peak_lr: float = 1e-2
    start_lr: float = 1e-4
    warmup_steps: int = 1000
    warmup_every: int = 10
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 2e-5
    top_fraction: float = 0.9  # "top-90" cross entropy
    amp: bool = True  # on CUDA only
    checkpoint_every: int = 10_000
    log_every: int = 10
    seed: int = 0


@dataclass(frozen=True)
class BatchLayout:
    """How the global batch of one step is spread over processes and accumulation steps."""

    global_batch: int
    world_size: int
    micro_batch: int

    @property
    def per_process(self) -> int:
        return self.global_batch // self.world_size

    @property
    def accumulation(self) -> int:
        return self.per_process // self.micro_batch

    @property
    def micro_batches(self) -> int:
        """Micro-batches per step over all processes (8 in the paper)."""
        return self.global_batch // self.micro_batch

    def describe(self) -> str:
        return (f"global batch {self.global_batch} = {self.world_size} process(es) x {self.accumulation} "
                f"accumulation step(s) x {self.micro_batch} tile(s)")


def batch_layout(optim: OptimConfig, world_size: int) -> BatchLayout:
    """Per-process batch and accumulation for ``world_size`` processes; refuses what does not divide.

    GroupNorm has no batch statistics, so accumulating micro-batches gives the update of the
    same micro-batches on separate GPUs (tested: 1 process x 8 == 8 processes x 1).
    """
    g, m, w = optim.global_batch, optim.micro_batch, world_size
    if not (isinstance(g, int) and isinstance(m, int) and g >= 1 and m >= 1):
        raise InvalidArgumentError(f"[optim] global_batch and micro_batch must be positive integers, got {g!r}, {m!r}")
    if g % m:
        raise InvalidArgumentError(f"[optim] global_batch {g} is not a multiple of micro_batch {m}")
    if w < 1 or g % (w * m):
        ok = [n for n in range(1, g // m + 1) if (g // m) % n == 0]
        raise InvalidArgumentError(
            f"global batch {g} in micro-batches of {m} cannot be shared by {w} process(es) ({g / max(w, 1):g} tiles "
            f"each, not a multiple of {m}); run {', '.join(map(str, ok))} processes, or change [optim] "
            "global_batch / micro_batch")
    return BatchLayout(g, w, m)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    name: str = "paper"

    def augmentations(self) -> list[dict[str, Any]]:
        """The ordered list training applies (the crop only when ``data.augment`` is false)."""
        from .augmentations import crop_only

        return self.augment.entries(self.data.crop_size) if self.data.augment else crop_only(self.data.crop_size)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model.to_dict(), "data": _plain(asdict(self.data)),
                "optim": asdict(self.optim), "augment": self.augment.to_dict(),
                "augmentations_applied": self.augmentations()}


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


_RENAMED = {
    "batch_size": "batch_size was the batch of one process, which made the global batch depend on how many "
                  "GPUs ran; give global_batch (all processes together; paper 24) and micro_batch (tiles per "
                  "forward pass and loss; paper 3)",
}


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise InvalidArgumentError(f"{where}: expected a table, got {data!r}")
    known = {f.name: f for f in fields(cls)}
    for key in set(data) & set(_RENAMED):
        if key not in known:
            raise InvalidArgumentError(f"{where}: {_RENAMED[key]}")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InvalidArgumentError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
    kwargs = {}
    for key, value in data.items():
        default = getattr(cls(), key)
        kwargs[key] = tuple(value) if isinstance(default, tuple) else value
    return cls(**kwargs)


def model_config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    return _build(ModelConfig, data, "[model]")


def _augment_config(data: Mapping[str, Any], where: str) -> AugmentConfig:
    if not isinstance(data, Mapping):
        raise InvalidArgumentError(f"{where}: expected a table")
    unknown = sorted(set(data) - {"pipeline", "transforms"})
    if unknown:
        raise InvalidArgumentError(f"{where}: unknown keys {unknown} (known: pipeline, transforms)")
    transforms = data.get("transforms", [])
    if not isinstance(transforms, list) or not all(isinstance(t, Mapping) for t in transforms):
        raise InvalidArgumentError(f"{where}: 'transforms' must be a list of tables ([[augment.transforms]])")
    if "pipeline" in data and transforms:
        raise InvalidArgumentError(f"{where}: give either 'pipeline' (a built-in list) or 'transforms', not both")
    return AugmentConfig(pipeline=str(data.get("pipeline", AugmentConfig.pipeline)),
                         transforms=tuple(dict(t) for t in transforms))


def config_from_dict(data: Mapping[str, Any], where: str = "config") -> TrainConfig:
    """Build and validate a config (augmentations need albumentations, the ``train`` extra)."""
    unknown = sorted(set(data) - {"name", "model", "data", "optim", "augment"})
    if unknown:
        raise InvalidArgumentError(f"{where}: unknown sections {unknown}")
    config = TrainConfig(
        model=_build(ModelConfig, data.get("model", {}), f"{where} [model]"),
        data=_build(DataConfig, data.get("data", {}), f"{where} [data]"),
        optim=_build(OptimConfig, data.get("optim", {}), f"{where} [optim]"),
        augment=_augment_config(data.get("augment", {}), f"{where} [augment]"),
        name=str(data.get("name", Path(where).stem)),
    )
    validate(config, where)
    return config


def validate(config: TrainConfig, where: str = "config") -> None:
    """Checks that need more than the types: crop vs tile, the batch, the augmentation list."""
    d = config.data
    if not (0 < d.crop_size and 0 < d.tile_size):
        raise InvalidArgumentError(f"{where} [data]: tile_size and crop_size must be positive")
    if d.crop_size % config.model.divisor:
        raise InvalidArgumentError(f"{where} [data]: crop_size {d.crop_size} must be a multiple of the network's "
                                   f"divisor {config.model.divisor}")
    batch_layout(config.optim, 1)
    try:
        from .augmentations import validate_pipeline
    except ModuleNotFoundError as exc:
        raise InvalidArgumentError(f"{where}: reading the augmentation list needs {exc.name}: "
                                   "pip install 'tseg-rt[train]'") from None
    name = "[[augment.transforms]]" if config.augment.transforms else f"[augment] pipeline {config.augment.pipeline!r}"
    validate_pipeline(config.augmentations(), d.tile_size, d.crop_size, f"{where} {name}")


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML config; a bare name (``paper``, ``tiny``, ``demo``) means a bundled one."""
    p = Path(path)
    if not p.exists() and p.suffix == "" and (Path(__file__).parent / "configs" / f"{p.name}.toml").exists():
        p = Path(__file__).parent / "configs" / f"{p.name}.toml"
    try:
        with open(p, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise InvalidArgumentError(f"{p}: no such config file (bundled: paper, tiny, demo)") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgumentError(f"{p}: not valid TOML: {exc}") from None
    return config_from_dict(data, str(p))
