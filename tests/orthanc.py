"""A real Orthanc DICOMweb server for tests, started on a free loopback port with its own storage.

Orthanc and its DICOMweb plugin come from Debian (``apt-get install orthanc orthanc-dicomweb``,
which ``.ci/run`` does). Without them the tests that need a server skip with the reason, except
on CI (``$CI`` set), where that is a failure. The DICOMweb plugin runs with its defaults, as an
archive in the field does: no ``DicomWeb.Host``, so it builds bulk-data URIs from the request's
``Host`` header, on a port other than 80 (issue 29, defect 1). A server that lost its free port
to another process before it bound it is started again on a new one (:class:`Orthanc`).
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
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


#: Starts (each on a new free port) before a port taken by another process fails.
START_TRIES = 5
#: What Orthanc logs, then exits, when its HTTP port was taken meanwhile.
PORT_TAKEN = "already in use"


class Orthanc:
    """One Orthanc process: ``root`` is its DICOMweb root URL; ``users`` enables basic auth.

    The free port is found by binding port 0 and closing the socket, so another process may take
    it before Orthanc binds it: Orthanc then exits ("... privileged or already in use"), and it
    is started again on a new port (:data:`START_TRIES` times in all). It counts as up only when
    ``/system`` answers with this server's own name (another server on the port does not) and
    its process is still running."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None) -> None:
        require_orthanc()
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.users = users
        self.name = f"tseg-rt-tests-{uuid.uuid4().hex[:12]}"
        self.log = folder / "orthanc.log"
        for attempt in range(1, START_TRIES + 1):
            if self._start():
                return
            self.log.rename(folder / f"orthanc.log.{attempt}")  # kept, for a failure's message
        raise RuntimeError(f"Orthanc found its port taken {START_TRIES} times: "
                           f"{(folder / f'orthanc.log.{START_TRIES}').read_text(errors='replace')[-1000:]}")

    def _start(self) -> bool:
        """Start Orthanc on a new free port: True when up, False when it lost the port."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = f"{self.url}/dicom-web"
        folder, users = self.folder, self.users
        config = {
            "Name": self.name, "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
            "HttpPort": self.port, "RemoteAccessAllowed": False, "DicomServerEnabled": False,
            "AuthenticationEnabled": bool(users), "RegisteredUsers": users or {},
            "Plugins": [str(PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},  # Debian's defaults: no "Host" (issue 29)
        }
        (folder / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([str(ORTHANC), str(folder / "orthanc.json")], stdout=log,
                                            stderr=subprocess.STDOUT)
        request = urllib.request.Request(f"{self.url}/system")
        if users:
            user, password = next(iter(users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                text = self.log.read_text(errors="replace")
                if PORT_TAKEN in text:
                    return False
                raise RuntimeError(f"Orthanc exited at start: {text[-2000:]}")
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    mine = json.loads(answer.read()).get("Name") == self.name
            except (OSError, ValueError):  # not up yet, or another server on this port: wait
                mine = False
            if mine and self.process.poll() is None:
                return True
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer as {self.name} within 60 s: "
                           f"{self.log.read_text(errors='replace')[-2000:]}")

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
