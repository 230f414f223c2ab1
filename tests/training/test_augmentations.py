"""The augmentation list: the authors' operations in order, from the config, validated at load."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("albumentations")

from tseg.runtime.errors import InvalidArgumentError  # noqa: E402
from tseg.training.augmentations import LegacyGaussNoise, build_pipeline, builtin_pipeline  # noqa: E402
from tseg.training.config import config_from_dict, load_config  # noqa: E402

AUTHORS_ORDER = ["HorizontalFlip", "RandomRotate90", "PadIfNeeded", "RandomResizedCrop", "LegacyGaussNoise", "Blur",
                 "RandomBrightnessContrast", "HueSaturationValue"]


def test_paper_config_ships_the_authors_list_in_order():
    cfg = load_config("paper")
    entries = cfg.augmentations()
    assert [e["transform"] for e in entries] == AUTHORS_ORDER
    assert entries == builtin_pipeline("authors", 1536)
    by = {e["transform"]: e for e in entries}
    # The values the issue quotes from the authors' get_training_transform.
    assert by["RandomResizedCrop"]["size"] == [1536, 1536]
    assert by["RandomResizedCrop"]["scale"] == [0.675, 0.825] and by["RandomResizedCrop"]["ratio"] == [0.8, 1.25]
    assert by["LegacyGaussNoise"] == {"transform": "LegacyGaussNoise", "var_limit": [0.0, 10.0], "p": 0.5}
    assert by["Blur"]["blur_limit"] == [3, 7] and by["Blur"]["p"] == 0.5
    assert (by["RandomBrightnessContrast"]["brightness_limit"], by["RandomBrightnessContrast"]["contrast_limit"],
            by["RandomBrightnessContrast"]["p"]) == (0.2, 0.2, 1.0)
    hsv = by["HueSaturationValue"]
    assert (hsv["hue_shift_limit"], hsv["sat_shift_limit"], hsv["val_shift_limit"], hsv["p"]) == (26, 26, 26, 1.0)
    # The checkpoint records what was applied.
    assert cfg.to_dict()["augmentations_applied"] == entries


def test_named_alternatives():
    crop = [e["transform"] for e in builtin_pipeline("authors-random-crop", 1536)]
    assert crop == ["HorizontalFlip", "RandomRotate90", "PadIfNeeded", "RandomCrop", "RandomBrightnessContrast",
                    "HueSaturationValue"]
    old = [e["transform"] for e in builtin_pipeline("tseg-v0", 256)]
    assert old[:2] == ["PadIfNeeded", "RandomCrop"] and "ImageCompression" in old
    # The demonstration model's config keeps the list it was trained with.
    assert [e["transform"] for e in load_config("demo").augmentations()] == old
    cfg = config_from_dict({"data": {"tile_size": 256, "crop_size": 128}, "augment": {"pipeline": "authors-random-crop"}})
    assert cfg.augmentations() == builtin_pipeline("authors-random-crop", 128)
    off = config_from_dict({"data": {"tile_size": 256, "crop_size": 128, "augment": False}})
    assert [e["transform"] for e in off.augmentations()] == ["PadIfNeeded", "RandomCrop"]


@pytest.mark.slow
def test_random_resized_crop_trains_at_about_1_1_to_1_2_um_per_px():
    """Area 0.675-0.825 of a 2048 px tile at 1 µm/px, resized to 1536 px: 1.095-1.211 µm/px."""
    entry = builtin_pipeline("authors", 1536)[3]
    pipeline = build_pipeline([entry])
    yy, xx = np.mgrid[:2048, :2048].astype(np.float32)
    tile = np.dstack([xx, yy, np.zeros_like(xx)])  # each pixel holds its own coordinates
    scales, aspects = [], []
    for seed in range(40):
        pipeline.set_random_seed(seed)
        out = pipeline(image=tile, mask=np.zeros((2048, 2048), np.uint8))
        img, mask = out["image"], out["mask"]
        assert img.shape == (1536, 1536, 3) and mask.shape == (1536, 1536)
        width = (img[0, -1, 0] - img[0, 0, 0]) * 1536 / 1535  # source px spanned by the output
        height = (img[-1, 0, 1] - img[0, 0, 1]) * 1536 / 1535
        scales.append(math.sqrt(width * height) / 1536)
        aspects.append(width / height)
    assert min(scales) >= math.sqrt(0.675) * 2048 / 1536 - 0.005
    assert max(scales) <= math.sqrt(0.825) * 2048 / 1536 + 0.005
    assert min(aspects) >= 0.8 - 0.01 and max(aspects) <= 1.25 + 0.01
    assert max(scales) - min(scales) > 0.05  # really random


def test_legacy_gauss_noise_draws_the_variance_uniformly():
    """Variance 0-10 (pixel units), drawn uniformly: P(var < 2.5) = 1/4 (a uniform std would give 1/2)."""
    noise = LegacyGaussNoise(var_limit=(0.0, 10.0), p=1.0)
    grey = np.full((64, 64, 3), 128, np.uint8)
    variances = []
    for seed in range(400):
        noise.set_random_seed(seed)
        out = noise(image=grey)["image"].astype(np.float64) - 128
        variances.append(out.var())
    v = np.array(variances)
    assert v.max() < 10 * 1.15 and v.min() >= 0
    assert v.mean() == pytest.approx(5.0, abs=0.5)
    assert np.mean(v < 2.5) == pytest.approx(0.25, abs=0.07)
    # Values are clipped to 0..255 and truncated to uint8, as albumentations 1.x did.
    noise.set_random_seed(0)
    assert noise(image=np.full((8, 8, 3), 255, np.uint8))["image"].max() == 255


def test_the_whole_authors_pipeline_keeps_masks_and_images_aligned():
    pipeline = build_pipeline(builtin_pipeline("authors", 96))
    rng = np.random.default_rng(0)
    labels = np.zeros((128, 128), np.uint8)
    labels[20:70, 30:100] = 127
    labels[40:60, 50:80] = 255
    image = np.dstack([labels] * 3)
    for seed in range(10):
        pipeline.set_random_seed(seed)
        out = pipeline(image=image + rng.integers(0, 2, image.shape, dtype=np.uint8), mask=labels)
        assert out["image"].shape == (96, 96, 3) and out["image"].dtype == np.uint8
        assert set(np.unique(out["mask"])) <= {0, 127, 255}  # nearest neighbour for masks
        # Geometry is shared: the mask's tumour lies where the image is brightest.
        if (out["mask"] == 255).any() and (out["mask"] == 0).any():
            grey = out["image"].astype(float).mean(axis=2)
            assert grey[out["mask"] == 255].mean() > grey[out["mask"] == 0].mean()


def _config(transforms, **data):
    return {"data": {"tile_size": 256, "crop_size": 128, **data}, "augment": {"transforms": transforms}}


CROP = {"transform": "RandomCrop", "height": 128, "width": 128}
PAD = {"transform": "PadIfNeeded", "min_height": 128, "min_width": 128}


@pytest.mark.parametrize("bad, message", [
    ({"transform": "Blurr", "p": 0.5}, r"\[1\] \(Blurr\): 'Blurr' is not an albumentations transform"),
    ({"transform": "Blur", "blur_limit": [3, 7], "probability": 0.5}, r"\[1\] \(Blur\): unknown parameter\(s\) \['probability'\]"),
    ({"transform": "Blur", "p": 2.0}, r"\[1\] \(Blur\):.*less than or equal to 1"),
    ({"p": 0.5}, r"\[1\]: each entry needs a 'transform' name"),
    ({"transform": "Compose", "transforms": []}, r"'Compose' is not an albumentations transform"),
])
def test_bad_entries_are_named(bad, message):
    with pytest.raises(InvalidArgumentError, match=message):
        config_from_dict(_config([CROP, bad]), "my.toml")


def test_bad_pipelines(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"turns a 256 x 256 tile into 256 x 256, not the crop size 128"):
        config_from_dict(_config([{"transform": "HorizontalFlip"}]))
    with pytest.raises(InvalidArgumentError, match="unknown augmentation pipeline 'paper'"):
        config_from_dict({"augment": {"pipeline": "paper"}})
    with pytest.raises(InvalidArgumentError, match="either 'pipeline'"):
        config_from_dict({"augment": {"pipeline": "authors", "transforms": [CROP]}})
    with pytest.raises(InvalidArgumentError, match=r"unknown keys \['list'\]"):
        config_from_dict({"augment": {"list": []}})
    # Nested composes are built (and their entries checked) too.
    ok = config_from_dict(_config([PAD, {"transform": "OneOf", "p": 1.0, "transforms": [CROP, {
        "transform": "CenterCrop", "height": 128, "width": 128}]}]))
    assert ok.augmentations()[1]["transform"] == "OneOf"
    # Tiles smaller than the crop (small slides) must be padded first.
    with pytest.raises(InvalidArgumentError, match=r"fails on a 64 x 64 tile .* pad to the crop size"):
        config_from_dict(_config([CROP]))
    with pytest.raises(InvalidArgumentError, match=r"\[0\] \(OneOf\) transforms\[1\] \(Crop\)"):
        config_from_dict(_config([{"transform": "OneOf", "transforms": [CROP, {"transform": "Crop", "x_max": -1}]}]))
    # From a file: the message names the file and the entry.
    path = tmp_path / "mine.toml"
    path.write_text('[data]\ntile_size = 256\ncrop_size = 128\n[[augment.transforms]]\ntransform = "RandomCrop"\n'
                    'height = 128\nwidth = 128\n[[augment.transforms]]\ntransform = "HueSaturationValue"\n'
                    'hue_shift = 26\n')
    with pytest.raises(InvalidArgumentError, match=r"mine.toml \[\[augment.transforms\]\]\[1\] \(HueSaturationValue\): "
                                                   r"unknown parameter\(s\) \['hue_shift'\]"):
        load_config(path)
