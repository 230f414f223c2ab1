"""DICOM whole-slide images read from a DICOMweb server (WADO-RS), as a slide source.

A slide is one series of VL Whole Slide Microscopy images on a server, named by a URL:

* ``https://HOST[:PORT]/PREFIX/studies/STUDY_UID/series/SERIES_UID`` (or ``http://``), as most
  archives show it (``PREFIX`` is the server's DICOMweb root, e.g. ``/dicom-web``);
* ``dicomweb://HOST/...`` for the same over HTTPS, ``dicomweb+http://HOST/...`` over plain HTTP.

:class:`DicomWebSource` implements the slide-source interface of :mod:`tseg.runtime.wsi.slide`,
so :func:`~tseg.runtime.wsi.slide.open_slide` takes such a URL like a file and the rest of the
pipeline (the paper's level choice, block-wise reading and resizing, tiling, ...) is unchanged.
Nothing is downloaded up front: opening reads the series' instance list (QIDO-RS) and each
instance's metadata; :meth:`DicomWebSource.read_level` fetches only the frames (tiles) a region
covers, in one multipart WADO-RS request per region, through `wsidicom`_ (SECTRA / BigPicture's
reader of DICOM WSI, which handles TILED_FULL and TILED_SPARSE instances, concatenations and the
frame codecs), so the 5 µm/px overview and the 1 µm/px tiles read the pyramid levels the paper's
rule picks and no other.

Connection, credentials, retries and timeouts: :mod:`tseg.runtime.util.http`. A series that is
not there, or a server that refuses access, fails with a message naming the URL and the fix
(:class:`~tseg.runtime.errors.SlideNotFoundError`, :class:`~tseg.runtime.errors.DicomWebError`).

.. _wsidicom: https://github.com/imi-bigpicture/wsidicom
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlsplit

import numpy as np

from tseg.runtime.errors import (
    DicomWebError,
    InvalidArgumentError,
    SlideNotFoundError,
    TsegError,
    UnsupportedSlideError,
)
from tseg.runtime.wsi.dicom_source import WSI_SOP_CLASS

log = logging.getLogger(__name__)

_SCHEMES = {"http": "http", "https": "https", "dicomweb": "https", "dicomweb+https": "https",
            "dicomweb+http": "http"}
_URL = re.compile(r"^(?P<scheme>[a-z+]+)://(?P<rest>.+)$", re.IGNORECASE)
_PATH = re.compile(r"^(?P<prefix>.*?)/studies/(?P<study>[0-9.]+)/series/(?P<series>[0-9.]+)/?$")
T = TypeVar("T")


def is_dicomweb_url(text: Any) -> bool:
    """Whether ``text`` is a URL this module reads (a string with one of its schemes)."""
    if not isinstance(text, str):
        return False
    match = _URL.match(text.strip())
    return bool(match) and match.group("scheme").lower() in _SCHEMES


@dataclass(frozen=True)
class DicomWebLocation:
    """Where a series is: the server's DICOMweb root (``base``), study and series UIDs."""

    base: str
    study: str
    series: str

    @property
    def url(self) -> str:
        """The canonical URL of the series (http or https): the slide's identity and name."""
        return f"{self.base}/studies/{self.study}/series/{self.series}"

    @property
    def server(self) -> str:
        parts = urlsplit(self.base)
        return f"{parts.scheme}://{parts.netloc}"

    @classmethod
    def parse(cls, text: str) -> "DicomWebLocation":
        """Parse a series URL; InvalidArgumentError with the expected form otherwise."""
        from tseg.runtime.util.http import check_no_userinfo

        form = "https://HOST[:PORT]/DICOMWEB-ROOT/studies/STUDY_UID/series/SERIES_UID"
        raw = str(text).strip()
        match = _URL.match(raw)
        if not match or match.group("scheme").lower() not in _SCHEMES:
            raise InvalidArgumentError(f"{raw!r} is not a DICOMweb series URL; expected {form} (or dicomweb://, "
                                       "dicomweb+http://)")
        scheme = _SCHEMES[match.group("scheme").lower()]
        url = f"{scheme}://{match.group('rest')}"
        check_no_userinfo(url)
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise InvalidArgumentError(f"{raw!r}: a DICOMweb series URL has no query or fragment; expected {form}")
        path = _PATH.match(parts.path)
        if not parts.netloc or not path:
            raise InvalidArgumentError(f"{raw!r} does not name a series; expected {form}")
        from tseg.runtime.wsi.dicom_attributes import uid_problem

        for what, tag in (("Study", "0020,000D"), ("Series", "0020,000E")):
            problem = uid_problem(path.group(what.lower()), f"{what} Instance UID", tag)
            if problem:
                raise InvalidArgumentError(f"{raw!r}: {problem.removeprefix('its ')}; check the URL")
        base = f"{parts.scheme}://{parts.netloc}{path.group('prefix').rstrip('/')}"
        return cls(base, path.group("study"), path.group("series"))


def _fail(location: DicomWebLocation, what: str, exc: Exception, session: Any = None) -> Exception:
    """The TsegError for an exception raised while talking to the server."""
    import requests

    url = location.url
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            from tseg.runtime.util.http import credentials_sent

            sent = credentials_sent(session)
            return DicomWebError(url, f"the server refused access ({status} {exc.response.reason}) {sent} while "
                                      f"{what}. Give credentials in a file (--dicomweb-credentials FILE, or "
                                      "TSEG_DICOMWEB_CREDENTIALS) or in TSEG_DICOMWEB_TOKEN / TSEG_DICOMWEB_USER + "
                                      "TSEG_DICOMWEB_PASSWORD, and check that they may read this study", status)
        if status == 404:
            return SlideNotFoundError(url, f"the server has no such study or series (404 while {what}); check "
                                           "the UIDs and the server's DICOMweb root in the URL")
        return DicomWebError(url, f"{what} failed: HTTP {status} {exc.response.reason} (after retries)", status)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return DicomWebError(url, f"cannot reach the server while {what} ({type(exc).__name__}, after retries): "
                                  "is it running, and are the host, port and scheme of the URL right?")
    return DicomWebError(url, f"{what} failed: {exc}")


@dataclass
class Connection:
    """A DICOMweb client for one series' server, with the session that carries its credentials."""

    location: DicomWebLocation
    client: Any  # dicomweb_client.DICOMwebClient
    session: Any  # requests.Session

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` with HTTP errors turned into TsegErrors naming the URL."""
        import requests

        try:
            return fn(*args, **kwargs)
        except requests.RequestException as exc:
            raise _fail(self.location, what, exc, self.session) from exc

    def close(self) -> None:
        self.session.close()


def connect(location: DicomWebLocation, credentials_file: str | os.PathLike[str] | None = None,
            retries: int | None = None) -> Connection:
    """A :class:`Connection` to the location's server (credentials, retries: util/http)."""
    try:
        from dicomweb_client import DICOMwebClient
    except ImportError:
        raise InvalidArgumentError("reading from DICOMweb needs the dicom extra: pip install 'tseg-rt[dicom]'") from None
    from tseg.runtime.util.http import http_session

    session = http_session(location.base, credentials_file, **({"retries": retries} if retries is not None else {}))
    client = DICOMwebClient(location.base, session=session)
    client.set_http_retry_params(retry=False)  # one retry policy: util/http's
    return Connection(location, client, session)


def list_instances(connection: Connection) -> list[dict[str, Any]]:
    """The series' instances (QIDO-RS, DICOM JSON); SlideNotFoundError when there are none."""
    location = connection.location
    found = connection.call("listing the series' instances", connection.client.search_for_instances,
                            location.study, location.series, fields=["SOPClassUID", "SOPInstanceUID", "ImageType"])
    if not found:
        raise SlideNotFoundError(location.url, "the server has no instances in this series (wrong UIDs, or not "
                                               "stored yet)")
    return list(found)


def _tag(item: dict[str, Any], tag: str) -> str:
    value = (item.get(tag) or {}).get("Value") or [""]
    return str(value[0])


def check_instances(connection: Connection, instances: list[dict[str, Any]]) -> None:
    """Refuse the series, naming the instance, the attribute and the fix, when a WSI instance's
    header has a problem a local series is refused for (:func:`~tseg.runtime.wsi.dicom_attributes.
    attribute_problem`): wsidicom skips an instance without Image Type without a word, or fails
    with "object has no attribute '_base_dataset'" when none has one. Only the instances whose
    search answer lacks a three-valued Image Type (asked for; a server may leave it out) have their
    metadata read."""
    from pydicom import Dataset

    from tseg.runtime.wsi.dicom_attributes import attribute_problem, refusal

    location = connection.location
    for item in instances:
        image_type = (item.get("00080008") or {}).get("Value") or []
        if _tag(item, "00080016") != WSI_SOP_CLASS or len(image_type) >= 3:
            continue
        uid = _tag(item, "00080018")
        meta = connection.call("reading instance metadata", connection.client.retrieve_instance_metadata,
                               location.study, location.series, uid)
        problem = attribute_problem(Dataset.from_json(meta, bulk_data_uri_handler=lambda *args: b""))
        if problem:
            raise UnsupportedSlideError(location.url, f"instance {uid} {refusal(problem)}")


def fingerprint(connection: Connection) -> str:
    """``sha256:`` over the series' UIDs and its sorted SOP Instance UIDs: DICOM gives changed
    pixels a new SOP Instance UID, so this changes when the slide does (cf. resume's files)."""
    location = connection.location
    uids = sorted(_tag(i, "00080018") for i in list_instances(connection))
    h = hashlib.sha256(f"dicomweb\0{location.study}\0{location.series}\0".encode())
    for uid in uids:
        h.update(uid.encode() + b"\0")
    return "sha256:" + h.hexdigest()


def series_datasets(connection: Connection) -> list[Any]:
    """The metadata of every instance of the series as pydicom Datasets (bulk data left out):
    what DICOM outputs copy patient, study, specimen and geometry from."""
    from pydicom import Dataset

    location = connection.location
    items = connection.call("reading the series' metadata", connection.client.retrieve_series_metadata,
                            location.study, location.series)
    return [Dataset.from_json(item, bulk_data_uri_handler=lambda *args: b"") for item in items]


#: Bulk data a slide is read without when the server cannot deliver it (with one warning):
#: the ICC profile (0028,2000) only changes colour management, never the segmentation's input
#: as the paper's method reads it (RGB as stored).
OPTIONAL_BULK_DATA = {"00282000": "ICC profile"}


def _client_with_bulk_data(base: Any, connection: Connection) -> Any:
    """wsidicom's web client, with the bulk data of instance metadata (ICC profiles, ...)
    fetched from the server instead of dropped with a warning per instance. An optional item
    (:data:`OPTIONAL_BULK_DATA`) the server cannot deliver is left out with one warning per slide."""
    warned: set[str] = set()

    def bulk(tag: Any, vr: str, uri: str) -> Any:
        what = OPTIONAL_BULK_DATA.get(str(tag).upper())
        try:
            parts = connection.call(f"reading bulk data ({what or tag})", connection.client.retrieve_bulkdata, uri,
                                    media_types=("application/octet-stream",))
        except TsegError as exc:
            if what is None:
                raise
            if what not in warned:
                warned.add(what)
                log.warning("%s: the server did not deliver the %s (%s); read without it (colours as stored)",
                            connection.location.url, what, getattr(exc, "message", exc))
            return None
        return bytes(parts[0]) if parts else None

    class _Client(base):  # type: ignore[misc, valid-type]
        def get_instance(self, study_uid: Any, series_uid: Any, instance_uid: Any) -> Any:
            from pydicom import Dataset

            item = connection.call("reading instance metadata", connection.client.retrieve_instance_metadata,
                                   study_uid, series_uid, instance_uid)
            return Dataset.from_json(item, bulk_data_uri_handler=bulk)

    return _Client(connection.client)


_WSIDICOM_SETTINGS = threading.Lock()


@contextlib.contextmanager
def every_level() -> Iterator[None]:
    """wsidicom keeping every pyramid level of a series while it opens one: by default it leaves
    out levels whose tile size differs from the base level's (a scanner's small levels stored as
    one frame of their own size), which OpenSlide reads from the same files; the 5 µm/px
    overview would then come from another level than a local read's (issue 29, defect 8).
    wsidicom's settings are process-wide: set and restored under a lock."""
    from wsidicom import settings

    with _WSIDICOM_SETTINGS:
        before = settings.strict_tile_size_check
        settings.strict_tile_size_check = False
        try:
            yield
        finally:
            settings.strict_tile_size_check = before


class DicomWebSource:
    """A DICOM WSI series on a DICOMweb server (see the module docstring). Implements the
    slide-source interface of :mod:`tseg.runtime.wsi.slide`; thread-safe reads."""

    vendor = "dicomweb"
    decoder = "wsidicom"

    def __init__(self, url: str | DicomWebLocation, credentials_file: str | os.PathLike[str] | None = None,
                 retries: int | None = None) -> None:
        self.location = url if isinstance(url, DicomWebLocation) else DicomWebLocation.parse(url)
        try:
            import wsidicom  # noqa: F401
        except ImportError:
            raise InvalidArgumentError("reading from DICOMweb needs the dicom extra: pip install "
                                       "'tseg-rt[dicom]'") from None
        self._connection = connect(self.location, credentials_file, retries)
        try:
            self._open()
        except BaseException:
            self._connection.close()
            raise
        log.debug("%s: %d levels, level 0 %s px", self.location.url, len(self._levels), self.level_dimensions[0])

    def _open(self) -> None:
        from wsidicom import WsiDicom, WsiDicomWebClient

        instances = list_instances(self._connection)
        classes = sorted({_tag(i, "00080016") for i in instances})
        if WSI_SOP_CLASS not in classes:
            raise UnsupportedSlideError(self.location.url, f"the series holds no VL Whole Slide Microscopy images "
                                                           f"(SOP classes: {', '.join(classes) or 'none'})")
        check_instances(self._connection, instances)
        try:
            with every_level():
                self._wsi = WsiDicom.open_web(_client_with_bulk_data(WsiDicomWebClient, self._connection),
                                              self.location.study, self.location.series)
        except TsegError:
            raise  # our client's own errors (a refused or failing request while wsidicom reads metadata)
        except Exception as exc:
            import requests

            if isinstance(exc, requests.RequestException):
                raise _fail(self.location, "opening the series", exc, self._connection.session) from exc
            raise UnsupportedSlideError(self.location.url, f"wsidicom cannot open the series: {str(exc)[:300]}") from exc
        self._levels = sorted(self._wsi.pyramid, key=lambda lv: -lv.size.width * lv.size.height)
        self.level_dimensions = [(int(lv.size.width), int(lv.size.height)) for lv in self._levels]
        self.background = (255, 255, 255)
        base = self._levels[0]
        self._mpp = (float(base.mpp.width), float(base.mpp.height)) if base.mpp is not None else (None, None)
        self.properties = {
            "tseg.reader": "dicomweb",
            "tseg.decoder": self.decoder,
            "dicomweb.url": self.location.url,
            "dicom.study_instance_uid": self.location.study,
            "dicom.series_instance_uid": self.location.series,
            "dicom.levels": str(len(self._levels)),
            "dicom.transfer_syntax": str(base.default_instance.image_data.transfer_syntax),
        }

    @property
    def path(self) -> str:
        return self.location.url

    def base_dataset(self) -> Any:
        """The DICOM attributes of the full-resolution level (for the H&E-only check of
        :mod:`tseg.runtime.wsi.brightfield`)."""
        return self._levels[0].default_instance.dataset

    def mpp(self) -> tuple[float | None, float | None]:
        return self._mpp

    def dct_scales(self, level: int) -> tuple[int, ...]:
        return ()

    def read_level(self, level: int, x: int, y: int, width: int, height: int, scale: int = 1) -> np.ndarray:
        """RGB uint8 pixels of a region of ``level`` (level coordinates): the frames it covers,
        fetched in one WADO-RS request and decoded."""
        from wsidicom.geometry import Point, Region, Size

        region = Region(Point(int(x), int(y)), Size(int(width), int(height)))
        image = self._connection.call(f"reading frames of level {level}", self._levels[level].get_region, region)
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))

    def associated_images(self) -> list[str]:
        names = []
        for name in ("labels", "overviews", "thumbnails"):
            group = getattr(self._wsi, name, None)
            if group:
                names.append(name[:-1])
        return names

    def origin(self) -> dict[str, Any]:
        """What the summary records about where the slide came from."""
        return {"path": self.location.url, "name": self.location.series, "size_bytes": 0, "modified": None,
                "dicomweb": {"base": self.location.base, "study_instance_uid": self.location.study,
                             "series_instance_uid": self.location.series}}

    def close(self) -> None:
        try:
            self._wsi.close()
        finally:
            self._connection.close()
