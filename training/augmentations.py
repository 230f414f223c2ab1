"""Training augmentations as data (paper, *Dataset augmentations*, Protocol Listing 2).

A pipeline is an ordered list of entries ``{"transform": NAME, **parameters}``; NAME is an
albumentations transform (or compose: ``OneOf``, ``SomeOf``, ``Sequential`` with a nested
``transforms`` list), or one of this module's :data:`EXTRA_TRANSFORMS`. Pipelines are written in
the TOML config (``[[augment.transforms]]``) or named (``[augment] pipeline = "..."``), and are
validated when the config is loaded: every name must exist, every parameter must be one the
transform takes with a valid value (albumentations' ``strict`` mode), and the whole pipeline must
turn a training tile into a ``crop_size`` square. Errors name the config and the entry.

Built-in pipelines (:func:`builtin_pipeline`):

``authors``
    The authors' published ``get_training_transform`` with its optional groups switched on:
    horizontal flip and 90-degree rotation of the full tile; zero padding up to the crop size; a
    random resized crop (area 0.675-0.825 of the tile, aspect 4/5-5/4, so the network trains at
    about 1.1-1.2 µm/px) with Gaussian noise (variance 0-10, p = 0.5) and blur (kernel 3-7,
    p = 0.5); brightness and contrast ±0.2 and hue, saturation and value shifts of ±26, always.
    The paper does not say which groups its run used: that they were on is *assumed*.
``authors-random-crop``
    The same code with the scale group off: flip, rotation, padding, a plain random crop, then
    brightness/contrast and hue/saturation/value.
``tseg-v0``
    This project's earlier list "in the spirit of" Listing 2 (the bundled demonstration model was
    trained with it).
``none``
    Padding and a random crop only (what ``[data] augment = false`` applies).

*Decisions where the sources are silent*: flip and rotation use albumentations' default
p = 0.5; padding is constant zero for the image (as inference pads tiles) and background (0) for
the mask; the blur is ``Blur`` (a box filter, albumentations' ``Blur``) with odd kernels 3-7.
Gaussian noise with a *variance* range is :class:`LegacyGaussNoise` (albumentations 1.x
semantics: variance drawn uniformly, values truncated back to uint8), since albumentations 2's
``GaussNoise`` draws the standard deviation uniformly instead.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Mapping, Sequence

import albumentations as A
import cv2
import numpy as np
from albumentations.core.transforms_interface import BaseTransformInitSchema

from tseg.runtime.errors import InvalidArgumentError

Entry = Mapping[str, Any]


class LegacyGaussNoise(A.ImageOnlyTransform):
    """Additive Gaussian noise whose *variance* is drawn uniformly from ``var_limit`` (pixel units).

    The semantics of albumentations < 1.4 ``GaussNoise(var_limit=...)``, which the authors' code
    used: sigma = sqrt(U(var_limit)), noise ~ N(mean, sigma) per pixel (and per channel unless
    ``per_channel`` is false), added in float32, clipped to [0, 255] and truncated to uint8.
    """

    class InitSchema(BaseTransformInitSchema):
        var_limit: tuple[float, float]
        mean: float
        per_channel: bool

    def __init__(self, var_limit: tuple[float, float] = (10.0, 50.0), mean: float = 0.0,
                 per_channel: bool = True, p: float = 0.5) -> None:
        super().__init__(p=p)
        low, high = float(var_limit[0]), float(var_limit[1])
        if not 0 <= low <= high:
            raise ValueError(f"var_limit must satisfy 0 <= low <= high, got {var_limit!r}")
        self.var_limit = (low, high)
        self.mean = float(mean)
        self.per_channel = bool(per_channel)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        image = data["image"] if "image" in data else data["images"][0]
        sigma = self.py_random.uniform(*self.var_limit) ** 0.5
        shape = image.shape if self.per_channel or image.ndim == 2 else image.shape[:2]
        noise = self.random_generator.normal(self.mean, sigma, shape).astype(np.float32)
        if noise.ndim < image.ndim:
            noise = noise[..., None]
        return {"noise": noise}

    def apply(self, img: np.ndarray, noise: np.ndarray, **params: Any) -> np.ndarray:
        if img.dtype != np.uint8:
            raise ValueError(f"LegacyGaussNoise works on uint8 images, got {img.dtype}")
        return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("var_limit", "mean", "per_channel")


#: Transforms of this project usable by name beside albumentations' own.
EXTRA_TRANSFORMS: dict[str, type] = {"LegacyGaussNoise": LegacyGaussNoise}


def _pad(crop: int) -> dict[str, Any]:
    return {"transform": "PadIfNeeded", "min_height": crop, "min_width": crop,
            "border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}


def builtin_pipeline(name: str, crop: int) -> list[dict[str, Any]]:
    """The named pipeline for crops of ``crop`` px (see the module docstring)."""
    flips = [{"transform": "HorizontalFlip", "p": 0.5}, {"transform": "RandomRotate90", "p": 0.5}]
    colour = [{"transform": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 1.0},
              {"transform": "HueSaturationValue", "hue_shift_limit": 26, "sat_shift_limit": 26,
               "val_shift_limit": 26, "p": 1.0}]
    if name == "authors":
        return [*flips, _pad(crop),
                {"transform": "RandomResizedCrop", "size": [crop, crop], "scale": [0.675, 0.825],
                 "ratio": [0.8, 1.25], "p": 1.0},
                {"transform": "LegacyGaussNoise", "var_limit": [0.0, 10.0], "p": 0.5},
                {"transform": "Blur", "blur_limit": [3, 7], "p": 0.5},
                *colour]
    if name == "authors-random-crop":
        return [*flips, _pad(crop), {"transform": "RandomCrop", "height": crop, "width": crop, "p": 1.0}, *colour]
    if name == "tseg-v0":
        return [_pad(crop), {"transform": "RandomCrop", "height": crop, "width": crop, "p": 1.0},
                {"transform": "HorizontalFlip", "p": 0.5},
                {"transform": "VerticalFlip", "p": 0.5},
                {"transform": "RandomRotate90", "p": 0.5},
                {"transform": "Affine", "scale": [0.9, 1.1], "rotate": [-15, 15], "p": 0.3,
                 "border_mode": cv2.BORDER_REFLECT_101},
                {"transform": "HueSaturationValue", "hue_shift_limit": 10, "sat_shift_limit": 25,
                 "val_shift_limit": 15, "p": 0.5},
                {"transform": "RandomBrightnessContrast", "brightness_limit": 0.15, "contrast_limit": 0.15, "p": 0.5},
                {"transform": "RandomGamma", "gamma_limit": [80, 120], "p": 0.3},
                {"transform": "GaussianBlur", "blur_limit": [3, 5], "p": 0.15},
                {"transform": "GaussNoise", "std_range": [0.01, 0.04], "p": 0.15},
                {"transform": "ImageCompression", "quality_range": [70, 100], "p": 0.2}]
    if name == "none":
        return crop_only(crop)
    raise InvalidArgumentError(f"unknown augmentation pipeline {name!r} (built-in: {', '.join(BUILTIN)})")


BUILTIN = ("authors", "authors-random-crop", "tseg-v0", "none")


def crop_only(crop: int) -> list[dict[str, Any]]:
    """No distortion: pad up to the crop size, then a random crop (used when ``augment = false``)."""
    return [_pad(crop), {"transform": "RandomCrop", "height": crop, "width": crop, "p": 1.0}]


def _resolve(name: Any) -> type:
    if not isinstance(name, str) or not name:
        raise ValueError("each entry needs a 'transform' name")
    cls = EXTRA_TRANSFORMS.get(name) or getattr(A, name, None)
    if not (isinstance(cls, type) and issubclass(cls, (A.BasicTransform, A.BaseCompose))) or cls is A.Compose:
        raise ValueError(f"{name!r} is not an albumentations transform")
    return cls


def _check_names(cls: type, params: Mapping[str, Any]) -> None:
    """Refuse parameters the transform does not take (albumentations would only warn)."""
    signature = inspect.signature(cls.__init__)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    valid = [n for n in signature.parameters if n not in ("self", "strict")]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; {cls.__name__} takes {valid}")


def _params(value: Any) -> Any:
    """TOML arrays -> tuples (albumentations' ranges), recursively."""
    if isinstance(value, list):
        return tuple(_params(v) for v in value)
    return value


def _build_entry(entry: Entry, where: str) -> Any:
    if not isinstance(entry, Mapping):
        raise InvalidArgumentError(f"{where}: expected a table with a 'transform' key, got {entry!r}")
    params = dict(entry)
    name = params.pop("transform", None)
    label = f"{where} ({name})" if isinstance(name, str) else where
    try:
        cls = _resolve(name)
        if issubclass(cls, A.BaseCompose):
            children = params.pop("transforms", None)
            if not isinstance(children, list) or not children:
                raise ValueError("a compose needs a non-empty 'transforms' list")
            kids = [_build_entry(c, f"{label} transforms[{i}]") for i, c in enumerate(children)]
            _check_names(cls, params)
            return cls(kids, **{k: _params(v) for k, v in params.items()})
        _check_names(cls, params)
        return cls(**{k: _params(v) for k, v in params.items()})
    except InvalidArgumentError:
        raise
    except Exception as exc:  # albumentations raises ValueError/TypeError/pydantic errors
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "errors.pydantic.dev" not in ln]
        raise InvalidArgumentError(f"{label}: {' '.join(lines)[:500] or type(exc).__name__}") from None


def build_pipeline(entries: Sequence[Entry], where: str = "augmentations") -> Any:
    """An ``albumentations.Compose`` of the entries, in order (seeded per sample by the caller)."""
    return A.Compose([_build_entry(e, f"{where}[{i}]") for i, e in enumerate(entries)], seed=0)


def validate_pipeline(entries: Sequence[Entry], tile_size: int, crop_size: int, where: str) -> None:
    """Build the pipeline and check that it turns tiles into ``crop_size`` squares.

    Run on a grey tile of ``tile_size`` and on one smaller than the crop (a slide narrower than a
    training tile), with a few seeds; raises :class:`InvalidArgumentError` naming ``where``.
    """
    compose = build_pipeline(entries, where)
    for size, seed in ((tile_size, 0), (tile_size, 1), (max(1, crop_size // 2), 2)):
        image = np.full((size, size, 3), 200, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        compose.set_random_seed(seed)
        try:
            out = compose(image=image, mask=mask)
        except Exception as exc:
            raise InvalidArgumentError(f"{where}: the pipeline fails on a {size} x {size} tile "
                                       f"({type(exc).__name__}: {str(exc)[:300]}); pad to the crop size before "
                                       "cropping") from None
        got = out["image"].shape[:2]
        if got != (crop_size, crop_size) or out["mask"].shape[:2] != got:
            raise InvalidArgumentError(
                f"{where}: the pipeline turns a {size} x {size} tile into {got[0]} x {got[1]}, not the "
                f"crop size {crop_size} x {crop_size}: end it with a crop to crop_size (and pad before it)")


def as_plain(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """A JSON-able copy (for checkpoints and logs)."""
    return copy.deepcopy([dict(e) for e in entries])
