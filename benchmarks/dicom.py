"""DICOM: reading a slide over DICOMweb from a local Orthanc against the same pixels from local
files, and the time and size of writing (and storing) a result's DICOM objects.

1. **Reading.** A generated slide (TIFF, 0.5 µm/px) is written as DICOM WSI by wsidicomizer
   (256 px JPEG tiles, a halving pyramid) and stored in an Orthanc started for the run on a free
   loopback port. The same reads go through ``open_slide(URL)`` (WADO-RS, wsidicom),
   ``open_slide(FOLDER)`` (the same DICOM files through OpenSlide, what tseg-rt uses for local
   series) and wsidicom on the local files (the DICOMweb path's decoder without the server),
   alternating, best of ``--rounds``: opening, the 5 µm/px overview and the slide at 1 µm/px
   (what the network reads), with the pixels compared.
2. **Writing.** A result of a 20 x 15 mm slide at 0.25 µm/px (the paper's scale: 4000 x 3000 px
   maps at 5 µm/px) is built from a synthetic tissue and tumour layout, and its DICOM objects are
   written for a stand-in source (no pixels needed): time, size and peak memory of each kind,
   probability JPEG 2000 lossless and uncompressed; then annotations of ``--regions`` small
   regions (tens of thousands, as on a slide with scattered tumour), and storing everything in
   Orthanc (STOW-RS).

    python -m benchmarks.dicom [--quick] [--rounds 3] [--regions 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, cached_slide, peak_rss_mb, rss_mb, write_json


class _Orthanc:
    """Orthanc on a free loopback port with its own storage (see tests/orthanc.py)."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root = f"http://127.0.0.1:{self.port}/dicom-web"
        config = {"StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
                  "HttpPort": self.port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
                  "DicomServerEnabled": False, "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
                  "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{self.port}"}}
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.process = subprocess.Popen(["/usr/sbin/Orthanc", str(folder / "orthanc.json")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(400):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/system", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("Orthanc did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=20)


def _dicom_slide(quick: bool) -> tuple[list[Path], float]:
    from tseg.runtime.outputs.dicom_source import wsidicomizer_class

    WsiDicomizer = wsidicomizer_class()  # noqa: N806 - a class
    size = (4.0, 3.0) if quick else (10.0, 7.5)
    tiff = cached_slide("dicom", seed=22, width_mm=size[0], height_mm=size[1], mpp=0.5, n_tumours=2,
                        level_factor=2)
    out = CACHE / f"{tiff.stem}-dicom"
    if not any(out.glob("*.dcm")):
        out.mkdir(parents=True, exist_ok=True)
        WsiDicomizer.convert(tiff, out, include_label=False, include_overview=False, include_thumbnail=False,
                             tile_size=256)
    files = sorted(out.glob("*.dcm"))
    return files, sum(f.stat().st_size for f in files) / 1e6


class _LocalWsidicom:
    """The same DICOM files read by wsidicom (the DICOMweb path's decoder) without a server: splits
    the DICOMweb cost into transport and decoding."""

    def __init__(self, folder: Path) -> None:
        from wsidicom import WsiDicom

        self._wsi = WsiDicom.open(folder)
        self._levels = sorted(self._wsi.pyramid, key=lambda lv: -lv.size.width * lv.size.height)
        self.level_dimensions = [(lv.size.width, lv.size.height) for lv in self._levels]
        self.vendor, self.background, self.properties = "wsidicom", (255, 255, 255), {}
        self._mpp = (float(self._levels[0].mpp.width), float(self._levels[0].mpp.height))

    def mpp(self) -> tuple[float, float]:
        return self._mpp

    def dct_scales(self, level: int) -> tuple:
        return ()

    def read_level(self, level: int, x: int, y: int, width: int, height: int, scale: int = 1) -> np.ndarray:
        from wsidicom.geometry import Point, Region, Size

        return np.asarray(self._levels[level].get_region(Region(Point(x, y), Size(width, height))).convert("RGB"))

    def associated_images(self) -> list:
        return []

    def close(self) -> None:
        self._wsi.close()


def _open(name: str, where: str):  # noqa: ANN202
    from tseg.runtime.wsi.slide import Slide, open_slide

    if name == "local_wsidicom":
        source = _LocalWsidicom(Path(where))
        return Slide(Path(where), source, source.mpp(), "metadata")
    return open_slide(where)


def bench_read(orthanc: _Orthanc, quick: bool, rounds: int) -> dict:
    import pydicom
    from dicomweb_client import DICOMwebClient

    files, mb = _dicom_slide(quick)
    DICOMwebClient(orthanc.root).store_instances([pydicom.dcmread(str(f)) for f in files])
    first = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    url = f"{orthanc.root}/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}"
    readers = (("dicomweb", url), ("local_openslide", str(files[0].parent)),
               ("local_wsidicom", str(files[0].parent)))
    out: dict = {"slide_mb": round(mb, 1), "instances": len(files)}
    opened = {name: float("inf") for name, _ in readers}
    for _ in range(rounds):
        for name, where in readers:
            t0 = time.perf_counter()
            _open(name, where).close()
            opened[name] = min(opened[name], time.perf_counter() - t0)
    out["open_s"] = {k: round(v, 3) for k, v in opened.items()}
    for what, mpp in (("overview_5um", 5.0), ("slide_1um", 1.0)):
        best = {name: float("inf") for name, _ in readers}
        images = {}
        for _ in range(rounds):
            for name, where in readers:
                with _open(name, where) as slide:
                    t0 = time.perf_counter()
                    images[name] = slide.read(mpp)
                    best[name] = min(best[name], time.perf_counter() - t0)
                    level = slide.read_plan(mpp).level
        mp = images["dicomweb"].shape[0] * images["dicomweb"].shape[1] / 1e6
        out[what] = {"size": list(images["dicomweb"].shape[:2][::-1]), "level": level,
                     **{f"{name}_s": round(best[name], 3) for name, _ in readers},
                     "dicomweb_mp_per_s": round(mp / best["dicomweb"], 1),
                     "ratio_dicomweb_to_local_openslide": round(best["dicomweb"] / best["local_openslide"], 2),
                     "ratio_dicomweb_to_local_wsidicom": round(best["dicomweb"] / best["local_wsidicom"], 2),
                     "identical": all(np.array_equal(images["dicomweb"], images[n]) for n, _ in readers)}
    return out


def _result_folder(folder: Path, width_mm: float, height_mm: float, mpp: float) -> Path:
    """A finished result folder of a synthetic slide (stand-in source: no slide file needed)."""
    import cv2

    from tseg.runtime.evaluation.synthetic import SyntheticSlide
    from tseg.runtime.method.polygons import mask_to_geojson

    syn = SyntheticSlide(7, width_mm * 1000.0, height_mm * 1000.0, 2, 3)
    w0, h0 = int(width_mm * 1000 / mpp), int(height_mm * 1000 / mpp)
    size5 = (int(w0 * mpp / 5.0), int(h0 * mpp / 5.0))
    mask = syn.tumour_mask(size5).astype(bool)
    tissue = syn.tissue_mask(size5).astype(bool) | mask
    probability = cv2.GaussianBlur(mask.astype(np.uint8) * 255, (31, 31), 8)
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "mask.png"), mask.astype(np.uint8) * 255)
    cv2.imwrite(str(folder / "foreground.png"), tissue.astype(np.uint8) * 255)
    cv2.imwrite(str(folder / "probability.png"), probability)
    f = 5.0 / mpp
    (folder / "tumour.geojson").write_text(json.dumps(mask_to_geojson(mask, (f, f))))
    summary = {"slide": {"path": str(folder / "slide.svs"), "dimensions_level0": [w0, h0], "mpp_level0": [mpp, mpp]},
               "model": {"contract": {"name": "benchmark", "mpp": 1.0}, "backend": {"sha256": "0" * 64}},
               "settings": {"low": 85, "high": 229, "prune": True}, "versions": {"tseg-rt": "bench"}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def _kinds(manifest: dict) -> dict:
    out: dict = {}
    for o in manifest["objects"]:
        entry = out.setdefault(o["kind"], {"instances": 0, "mb": 0.0})
        entry["instances"] += 1
        entry["mb"] = round(entry["mb"] + o["bytes"] / 1e6, 3)
    return out


def bench_write(orthanc: _Orthanc, quick: bool, regions: int, work: Path) -> dict:
    import cv2

    from tseg.runtime.method.polygons import mask_to_geojson
    from tseg.runtime.outputs.dicom_export import DicomOptions, write_dicom
    from tseg.runtime.outputs.stow import stow_folder

    size = (5.0, 4.0) if quick else (20.0, 15.0)
    out: dict = {"slide_mm": list(size), "level0_mpp": 0.25}
    write_dicom(_result_folder(work / "warm", 2.0, 1.5, 0.25), DicomOptions())  # imports and caches, once
    for name, compress in (("jpeg2000", True), ("uncompressed", False)):
        folder = _result_folder(work / f"r-{name}", *size, 0.25)
        base = rss_mb()
        t0 = time.perf_counter()
        manifest = write_dicom(folder, DicomOptions(compress=compress))
        out[f"probability_{name}"] = {"write_s": round(time.perf_counter() - t0, 2),
                                      "peak_extra_mb": round(peak_rss_mb() - base), "objects": _kinds(manifest),
                                      "map_size_5um": list(cv2.imread(str(folder / "mask.png"), 0).shape[::-1])}
    t0 = time.perf_counter()
    record = stow_folder(work / "r-jpeg2000" / "dicom", manifest_objects(work / "r-jpeg2000"), orthanc.root)
    out["stow_s"] = round(time.perf_counter() - t0, 2)
    out["stow_instances"] = len(record["stored"])
    # Many small regions: a grid of 60 µm blobs on the 5 µm/px map.
    folder = _result_folder(work / "many", *size, 0.25)
    mask = np.zeros_like(cv2.imread(str(folder / "mask.png"), 0))
    step = 24
    ys, xs = np.mgrid[8 : mask.shape[0] - 16 : step, 8 : mask.shape[1] - 16 : step]
    for y, x in list(zip(ys.ravel(), xs.ravel()))[:regions]:
        cv2.circle(mask, (int(x), int(y)), 6, 255, -1)
    cv2.imwrite(str(folder / "mask.png"), mask)
    (folder / "tumour.geojson").write_text(json.dumps(mask_to_geojson(mask > 0, (20.0, 20.0))))
    n = len(json.loads((folder / "tumour.geojson").read_text())["features"])
    t0 = time.perf_counter()
    manifest = write_dicom(folder, DicomOptions())
    out["many_regions"] = {"regions": n, "write_all_s": round(time.perf_counter() - t0, 2),
                           "annotations_mb": _kinds(manifest)["annotations"]["mb"]}
    return out


def manifest_objects(folder: Path) -> list:
    from tseg.runtime.outputs.dicom_export import read_manifest

    return read_manifest(folder)["objects"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small slides (a smoke run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--regions", type=int, default=20000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tseg-bench-dicom-"))
    orthanc = _Orthanc(work)
    try:
        result = {"read": bench_read(orthanc, args.quick, args.rounds),
                  "write": bench_write(orthanc, args.quick, args.regions, work)}
    finally:
        orthanc.stop()
        shutil.rmtree(work, ignore_errors=True)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
