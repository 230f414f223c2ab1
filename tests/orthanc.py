"""A real Orthanc DICOMweb server for tests, started on a free loopback port with its own storage.

Orthanc and its DICOMweb plugin come from Debian (``apt-get install orthanc orthanc-dicomweb``,
which ``.ci/run`` does). Without them the tests that need a server skip with the reason, except
on CI (``$CI`` set), where that is a failure. The DICOMweb plugin runs with its defaults, as an
archive in the field does: no ``DicomWeb.Host``, so it builds bulk-data URIs from the request's
``Host`` header, on a port other than 80 (issue 29, defect 1).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from requirements import require

ORTHANC = Path("/usr/sbin/Orthanc")
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_orthanc() -> None:
    """Skip (fail on CI: tests/requirements.py) unless Orthanc and its DICOMweb plugin are installed."""
    missing = [str(p) for p in (ORTHANC, PLUGIN) if not p.exists()]
    require("orthanc", f"Orthanc is not installed ({', '.join(missing)} missing): apt-get install orthanc "
                       "orthanc-dicomweb" if missing else None)


class Orthanc:
    """One Orthanc process: ``root`` is its DICOMweb root URL; ``users`` enables basic auth."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None) -> None:
        require_orthanc()
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = f"{self.url}/dicom-web"
        self.users = users
        config = {
            "Name": "tseg-rt-tests", "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
            "HttpPort": self.port, "RemoteAccessAllowed": False, "DicomServerEnabled": False,
            "AuthenticationEnabled": bool(users), "RegisteredUsers": users or {},
            "Plugins": [str(PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},  # Debian's defaults: no "Host" (issue 29)
        }
        (folder / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
        self.log = folder / "orthanc.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([str(ORTHANC), str(folder / "orthanc.json")], stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/system", timeout=1)
                return
            except urllib.error.HTTPError:  # 401 with authentication: it is up
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("Orthanc did not answer within 20 s")

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM (Orthanc takes ~3 s), or SIGKILL for a throwaway server (``graceful=False``)."""
        if self.process.poll() is None and not graceful:
            self.process.kill()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, **kwargs):  # noqa: ANN003, ANN201
        from dicomweb_client import DICOMwebClient

        return DICOMwebClient(self.root, **kwargs)

    def store_files(self, files) -> None:  # noqa: ANN001
        import pydicom

        self.client().store_instances([pydicom.dcmread(str(f)) for f in files])

    def series_url(self, study: str, series: str) -> str:
        return f"{self.root}/studies/{study}/series/{series}"


def generated_dicom_wsi(folder: Path, width_um: int = 4000, height_um: int = 3000, mpp: float = 1.0,
                        hole: bool = True) -> tuple[list[Path], Path]:
    """A DICOM WSI made the way a site would: a generated pyramidal TIFF (the test slide of
    ``helpers``: glass, pink tissue, a dark "tumour" square, here with a pink hole in it) written
    as DICOM by wsidicomizer. Returns the DICOM files and the TIFF."""
    import numpy as np

    from dicomwsi import square_slide_image
    from tseg.runtime.outputs.dicom_source import wsidicomizer_class
    from tseg.runtime.outputs.pyramid_tiff import pyramid_from_array, write_pyramid

    WsiDicomizer = wsidicomizer_class()  # noqa: N806 - without its process-wide strict mode, as tseg-rt imports it

    img = square_slide_image(width_um, height_um, mpp, square_um=(1000, 800, 2000, 1600))
    if hole:  # a 700 µm hole: larger than the 10,000 px (at 5 µm/px) that post-processing fills
        y0, x0, side = int(1300 / mpp), int(1600 / mpp), int(700 / mpp)
        img[y0 : y0 + side, x0 : x0 + side] = np.array([228, 150, 196], np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    tiff = folder / "slide.tiff"
    write_pyramid(tiff, pyramid_from_array(img, min_size=256, factor=2), mpp)
    out = folder / "dicom"
    out.mkdir()
    files = WsiDicomizer.convert(tiff, out, include_label=False, include_overview=False, include_thumbnail=False,
                                 tile_size=256)
    return sorted(Path(f) for f in files), tiff
