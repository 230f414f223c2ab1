"""Small DICOM whole-slide images for tests, written with pydicom (VL Whole Slide Microscopy,
TILED_FULL, baseline-JPEG frames, one file per pyramid level, one series per folder).

``colour`` chooses how the frames are encoded and labelled:

* ``"ycbcr"`` — JFIF YCbCr frames labelled ``YBR_FULL_422`` (correct; what most scanners write);
* ``"mislabelled"`` — the same YCbCr frames labelled ``RGB`` (the converter bug: libdicom #80);
* ``"rgb"`` — frames encoded in RGB (Adobe APP14 transform 0) labelled ``RGB`` (correct).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"


def _jpeg(tile: np.ndarray, colour: str, quality: int = 95) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if colour == "rgb":
        Image.fromarray(tile).save(buf, "JPEG", quality=quality, keep_rgb=True, subsampling=0)
    else:
        Image.fromarray(tile).save(buf, "JPEG", quality=quality)  # JFIF, YCbCr 4:2:0
    return buf.getvalue()


def _write_level(path: Path, img: np.ndarray, mpp: float, tile: int, uids: dict, colour: str,
                 image_type: str = "VOLUME", slice_thickness: bool = True) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, generate_uid

    h, w = img.shape[:2]
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    frames = []
    for y in range(0, h, th):
        for x in range(0, w, tw):
            t = np.full((th, tw, 3), 255, np.uint8)
            part = img[y : y + th, x : x + tw]
            t[: part.shape[0], : part.shape[1]] = part
            frames.append(_jpeg(t, colour))
    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = WSI
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = WSI
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.Modality = "SM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "NONE"]
    ds.PatientName = "Test^Slide"
    ds.PatientID = "1"
    ds.StudyDate, ds.StudyTime = "20260101", "000000"
    ds.Manufacturer = "tseg-rt tests"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422" if colour == "ycbcr" else "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.Rows, ds.Columns = th, tw
    ds.NumberOfFrames = len(frames)
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = w, h
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    path_item = Dataset()
    path_item.OpticalPathIdentifier = "1"
    ds.OpticalPathSequence = [path_item]
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.ImagedVolumeWidth, ds.ImagedVolumeHeight, ds.ImagedVolumeDepth = w * mpp / 1000, h * mpp / 1000, 0.001
    measures = Dataset()
    measures.PixelSpacing = [mpp / 1000, mpp / 1000]
    if slice_thickness:
        measures.SliceThickness = 0.001
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def write_dicom_wsi(folder: Path, img: np.ndarray, mpp: float, colour: str = "ycbcr", tile: int = 256,
                    prefix: str = "level", scanner_like: bool = False) -> list[Path]:
    """Write ``img`` (RGB uint8, level 0 at ``mpp`` µm/px) as a DICOM WSI series into ``folder``:
    one file per level, each level half the previous, down to one tile.

    ``scanner_like``: as the real 12-level series of issue 29 is: levels down to 1 x 1 px, a
    level smaller than a tile stored as one frame of its own size, no Slice Thickness, and a
    Frame of Reference per level."""
    import cv2
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    files = []
    level, m, i = img, mpp, 0
    while True:
        path = folder / f"{prefix}-{i}.dcm"
        h, w = level.shape[:2]
        if scanner_like:
            uids = dict(uids, frame=generate_uid())
        _write_level(path, level, m, (min(tile, h), min(tile, w)) if scanner_like else tile, uids, colour,
                     slice_thickness=not scanner_like)
        files.append(path)
        if (max(h, w) <= tile and not scanner_like) or max(h, w) == 1:
            break
        size = (max(1, w // 2), max(1, h // 2))
        level = cv2.resize(level, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], 3)
        m, i = m * 2, i + 1
    return files


def square_slide_image(width_um: int = 1600, height_um: int = 1200, mpp: float = 0.5,
                       square_um: tuple[int, int, int, int] = (600, 400, 500, 400), seed: int = 0) -> np.ndarray:
    """The same picture as ``helpers.make_square_slide`` (glass, pink tissue, a dark square), as an array."""
    import cv2

    w, h = int(width_um / mpp), int(height_um / mpp)
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 244, np.uint8)
    texture = rng.normal(0, 14, (int(height_um // 10) + 1, int(width_um // 10) + 1, 1)).astype(np.float32)
    texture = cv2.resize(texture, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    tx, ty, tw, th = (int(v / mpp) for v in (150, 100, 1300, 1000))
    img[ty : ty + th, tx : tx + tw] = np.clip(np.array([228, 150, 196], np.float32)
                                              + texture[ty : ty + th, tx : tx + tw], 150, 255).astype(np.uint8)
    sx, sy, sw, sh = (int(v / mpp) for v in square_um)
    img[sy : sy + sh, sx : sx + sw] = np.clip(np.array([80, 40, 120], np.float32)
                                              + texture[sy : sy + sh, sx : sx + sw], 0, 120).astype(np.uint8)
    return img
