"""Storing a result's DICOM objects on a DICOMweb server (STOW-RS), once.

:func:`stow_folder` sends the objects listed in ``dicom/manifest.json`` (a converted slide's
instances first, so that an archive never holds results whose images are missing) to
``URL/studies``, a few instances per request (at most :data:`BATCH_BYTES`; a bigger instance
goes alone), and checks the server's answer for failed instances. What was stored where is kept
in ``dicom/stow.json`` after each request; instances a server already holds (by SOP Instance UID)
are not sent again, so an interrupted or failed store is finished by running it again.
Connection, credentials, retries and timeouts: :mod:`tseg.runtime.util.http`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from tseg.runtime.errors import DicomWebError, InvalidArgumentError, OutputError

log = logging.getLogger(__name__)

STOW_RECORD = "stow.json"
BATCH_BYTES = 64 * 2**20
_FAILED_SOP_SEQUENCE = "00081198"
_FAILURE_REASON = "00081197"
_REFERENCED_SOP_INSTANCE = "00081155"


def check_stow_url(url: str) -> str:
    """A DICOMweb root URL (``http(s)://HOST[:PORT]/ROOT``), without credentials or a query."""
    from urllib.parse import urlsplit

    from tseg.runtime.util.http import check_no_userinfo

    text = str(url).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise InvalidArgumentError(f"--stow takes the DICOMweb root of a server, http(s)://HOST[:PORT]/ROOT (e.g. "
                                   f"http://127.0.0.1:8042/dicom-web), got {url!r}")
    check_no_userinfo(text)
    return text


def _batches(entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        n = int(entry.get("bytes", 0))
        if batch and size + n > BATCH_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += n
    if batch:
        yield batch


def _failures(response: Any) -> list[str]:
    """``"<SOP Instance UID> (reason <code>)"`` for each instance the server refused."""
    if response is None:
        return []
    data = response.to_json_dict() if hasattr(response, "to_json_dict") else response
    failed = ((data or {}).get(_FAILED_SOP_SEQUENCE) or {}).get("Value") or []
    out = []
    for item in failed:
        uid = ((item.get(_REFERENCED_SOP_INSTANCE) or {}).get("Value") or ["?"])[0]
        reason = ((item.get(_FAILURE_REASON) or {}).get("Value") or ["?"])[0]
        out.append(f"{uid} (reason {reason})")
    return out


def stow_folder(folder: str | os.PathLike[str], objects: list[dict[str, Any]], url: str,
                credentials_file: str | None = None, name: str = "") -> dict[str, Any]:
    """Store the DICOM ``objects`` (manifest entries: ``file`` relative to ``folder``,
    ``sop_instance_uid``, ``kind``, ``bytes``) at the DICOMweb root ``url``; returns the record
    (``url``, ``stored``: instances the server holds from this folder, ``time``)."""
    import pydicom
    from dicomweb_client import DICOMwebClient

    from tseg.runtime.util.atomic import write_text
    from tseg.runtime.util.http import http_session

    root = check_stow_url(url)
    folder = Path(folder)
    missing = [o["file"] for o in objects if not (folder / o["file"]).is_file()]
    if missing:
        raise OutputError(folder, f"missing DICOM file(s) {', '.join(missing[:3])}; write the objects again "
                                  "(--dicom-out)")
    record_path = folder / STOW_RECORD
    try:
        records = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    except (OSError, ValueError):
        records = {}
    record = dict(records.get(root) or {"url": root, "stored": []})
    held = set(record["stored"])
    objects = sorted(objects, key=lambda o: o.get("kind") != "slide")
    todo = [o for o in objects if o["sop_instance_uid"] not in held]
    if not todo:
        return record
    session = http_session(root, credentials_file)
    client = DICOMwebClient(root, session=session)
    client.set_http_retry_params(retry=False)  # retries: util/http's policy, once
    t0 = time.perf_counter()
    try:
        for batch in _batches(todo):
            datasets = [pydicom.dcmread(str(folder / o["file"])) for o in batch]
            try:
                response = client.store_instances(datasets)
            except Exception as exc:
                raise _stow_error(root, exc, session) from exc
            failed = _failures(response)
            if failed:
                raise DicomWebError(root, f"the server refused {len(failed)} of {len(batch)} instance(s) of "
                                          f"{name or folder}: {', '.join(failed[:5])}")
            record["stored"] = sorted(held.union(o["sop_instance_uid"] for o in batch))
            held = set(record["stored"])
            record["time"] = datetime.now(timezone.utc).isoformat()
            records[root] = record
            write_text(record_path, json.dumps(records, indent=2, sort_keys=True) + "\n")
    finally:
        session.close()
    log.info("%s: stored %d DICOM instance(s) at %s in %.1f s", name or folder, len(todo), root,
             time.perf_counter() - t0)
    return record


def _stow_error(root: str, exc: Exception, session: Any) -> Exception:
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            from tseg.runtime.util.http import credentials_sent

            sent = credentials_sent(session)
            return DicomWebError(root, f"the server refused to store ({status} {exc.response.reason}) {sent}; give "
                                       "credentials that may store (--dicomweb-credentials FILE, "
                                       "TSEG_DICOMWEB_CREDENTIALS, or TSEG_DICOMWEB_TOKEN / TSEG_DICOMWEB_USER + "
                                       "TSEG_DICOMWEB_PASSWORD)", status)
        return DicomWebError(root, f"storing failed: HTTP {status} {exc.response.reason} (after retries); is "
                                   f"{root} the server's DICOMweb root?", status)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return DicomWebError(root, f"cannot reach the server to store ({type(exc).__name__}, after retries)")
    return DicomWebError(root, f"storing failed: {exc}")
