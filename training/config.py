"""Training configuration as TOML (``training/configs/*.toml``); no PyTorch needed to read it.

``[model]`` is what :func:`tseg.training.model.build_model` takes and what checkpoints and the
exported ONNX record; ``[data]`` and ``[optim]`` drive :func:`tseg.training.train.fit`. Values
not given take the paper's (*Method development*, *Network optimisation*).
"""

from __future__ import annotations

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
        """Input sides must divide by this: the encoder's output stride x the decoder's x4."""
        return max(self.encoder_output_stride * 2, 2 ** self.encoder_depth)

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
    balance: bool = True  # oversample cancer types at slide level (paper)
    augment: bool = True
    num_workers: int = 4


@dataclass(frozen=True)
class OptimConfig:
    batch_size: int = 3  # per process; 8 GPUs x 3 = 24 in the paper
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
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    name: str = "paper"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model.to_dict(), "data": _plain(asdict(self.data)),
                "optim": asdict(self.optim)}


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
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


def config_from_dict(data: Mapping[str, Any], where: str = "config") -> TrainConfig:
    unknown = sorted(set(data) - {"name", "model", "data", "optim"})
    if unknown:
        raise InvalidArgumentError(f"{where}: unknown sections {unknown}")
    return TrainConfig(
        model=_build(ModelConfig, data.get("model", {}), f"{where} [model]"),
        data=_build(DataConfig, data.get("data", {}), f"{where} [data]"),
        optim=_build(OptimConfig, data.get("optim", {}), f"{where} [optim]"),
        name=str(data.get("name", Path(where).stem)),
    )


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
