"""HTTP sessions for DICOMweb servers: credentials from a file or the environment, retries, timeouts.

**Credentials never come from the command line, a URL or a log line.** In this order:

1. a credentials file given by the caller (``--dicomweb-credentials FILE``) or named by the
   environment variable ``TSEG_DICOMWEB_CREDENTIALS``: a JSON object, either one credential or a
   map from server URL prefixes to credentials (the longest prefix of the request's URL wins)::

       {"token": "eyJ..."}                                   # OAuth bearer token, any server
       {"https://pacs.example.org/dicom-web": {"token": "eyJ..."},
        "http://127.0.0.1:8042": {"username": "tseg", "password": "..."}}

   A file that other users can read is used, with a warning (``chmod 600`` it);
2. ``TSEG_DICOMWEB_TOKEN`` (a bearer token), or ``TSEG_DICOMWEB_USER`` and
   ``TSEG_DICOMWEB_PASSWORD`` (HTTP basic authentication), for every server.

A URL with a user name or password in it (``https://user:pw@host``) is refused: it would end up in
process lists, shell histories, logs and ``summary.json``.

**Retries.** Connection errors, read timeouts and the answers 429, 500, 502, 503 and 504 are retried
(5 times, exponential back-off from 0.5 s, honouring ``Retry-After``), for every method: DICOMweb
reads are idempotent, and a STOW-RS request stores the same SOP instances again (servers keep one
copy per SOP Instance UID). Every request has a timeout (10 s to connect, 300 s to read), so a
stalled server fails the slide instead of hanging the batch.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from tseg.runtime.errors import InvalidArgumentError

log = logging.getLogger(__name__)

CREDENTIALS_ENV = "TSEG_DICOMWEB_CREDENTIALS"
TOKEN_ENV = "TSEG_DICOMWEB_TOKEN"
USER_ENV = "TSEG_DICOMWEB_USER"
PASSWORD_ENV = "TSEG_DICOMWEB_PASSWORD"
RETRY_STATUS = (429, 500, 502, 503, 504)
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT_S = (10.0, 300.0)  # connect, read


@dataclass(frozen=True)
class Credentials:
    """A bearer token or a user name and password; ``repr`` never shows the secret."""

    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    origin: str = ""  # where they came from (a file name or an environment variable), for messages

    def apply(self, session: Any) -> None:
        if self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        elif self.username is not None:
            session.auth = (self.username, self.password or "")


def check_no_userinfo(url: str) -> None:
    """Refuse URLs that carry credentials (they would be logged and recorded)."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or "?"
        raise InvalidArgumentError(
            f"the URL for {host} contains a user name or password; never put credentials in a URL (they end up "
            f"in process lists, logs and summaries). Put them in a credentials file (--dicomweb-credentials FILE "
            f"or {CREDENTIALS_ENV}) or in {TOKEN_ENV} / {USER_ENV} + {PASSWORD_ENV}")


def _parse_entry(entry: Any, where: str) -> Credentials:
    if not isinstance(entry, Mapping):
        raise InvalidArgumentError(f"{where}: a credential must be a JSON object with 'token', or 'username' "
                                   "and 'password'")
    unknown = sorted(set(entry) - {"token", "username", "password"})
    if unknown:
        raise InvalidArgumentError(f"{where}: unknown credential field(s) {', '.join(unknown)}; use 'token', or "
                                   "'username' and 'password'")
    token, user, password = entry.get("token"), entry.get("username"), entry.get("password")
    if token is not None and (user is not None or password is not None):
        raise InvalidArgumentError(f"{where}: give either 'token' or 'username' + 'password', not both")
    if token is None and user is None:
        raise InvalidArgumentError(f"{where}: give 'token', or 'username' and 'password'")
    for name, value in (("token", token), ("username", user), ("password", password)):
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentError(f"{where}: '{name}' must be a string")
    return Credentials(token=token, username=user, password=password, origin=where)


@functools.lru_cache(maxsize=64)
def _warn_readable(path: str, mode: int) -> None:
    """The warning about a credentials file others can read: once per file and mode in a process
    (the file is read for every request's session, issue 29)."""
    log.warning("%s: the credentials file can be read by other users; restrict it with `chmod 600 %s`", path, path)


def read_credentials_file(path: str | os.PathLike[str], url: str) -> Credentials | None:
    """The credentials a file holds for ``url`` (None when the file has none for it)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
        mode = p.stat().st_mode
    except OSError as exc:
        raise InvalidArgumentError(f"{p}: cannot read the DICOMweb credentials file ({exc.strerror or exc})") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        _warn_readable(str(p), mode)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # The message names the position only: the file's content is secret.
        raise InvalidArgumentError(f"{p}: the DICOMweb credentials file is not valid JSON (line {exc.lineno}, "
                                   f"column {exc.colno})") from None
    if not isinstance(data, Mapping):
        raise InvalidArgumentError(f"{p}: the DICOMweb credentials file must hold a JSON object")
    if set(data) & {"token", "username", "password"}:
        return _parse_entry(data, str(p))
    best: tuple[int, Credentials] | None = None
    for prefix, entry in data.items():
        if not isinstance(prefix, str) or not prefix.lower().startswith(("http://", "https://")):
            raise InvalidArgumentError(f"{p}: keys must be server URLs (http://... or https://...), got {prefix!r}")
        credentials = _parse_entry(entry, f"{p} [{prefix}]")
        if url.startswith(prefix.rstrip("/")) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), credentials)
    return best[1] if best else None


def check_credentials_file(path: str | os.PathLike[str]) -> None:
    """Read and check a credentials file now (InvalidArgumentError naming it, never its content),
    so that a bad file stops a run before any slide is read."""
    read_credentials_file(path, "")


def find_credentials(url: str, credentials_file: str | os.PathLike[str] | None = None,
                     env: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials for ``url``, by the rules in the module docstring (None: anonymous)."""
    env = os.environ if env is None else env
    file = credentials_file or env.get(CREDENTIALS_ENV)
    if file:
        found = read_credentials_file(file, url)
        if found is not None:
            return found
    if env.get(TOKEN_ENV):
        return Credentials(token=env[TOKEN_ENV], origin=TOKEN_ENV)
    if env.get(USER_ENV):
        return Credentials(username=env[USER_ENV], password=env.get(PASSWORD_ENV, ""), origin=USER_ENV)
    return None


def host_header(url: str, host: str) -> str:
    """The ``Host`` header for a request to ``url`` when a client set it to ``host``: with the
    port when the URL names a port other than its scheme's default (RFC 7230 §5.4).
    dicomweb-client sets ``Host`` to the bare host name; a server that builds URLs from it (a
    default Orthanc's bulk-data URIs) then points to port 80 (issue 29)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return host
    default = {"http": 80, "https": 443}.get(parts.scheme)
    has_port = "]:" in host if host.startswith("[") else host.count(":") == 1
    if port is None or port == default or has_port:
        return host
    if parts.hostname and host.strip("[]").lower() != parts.hostname.lower():
        return host  # set on purpose to another name: leave it
    return f"[{parts.hostname}]:{port}" if ":" in (parts.hostname or "") else f"{parts.hostname}:{port}"


def http_session(url: str, credentials_file: str | os.PathLike[str] | None = None,
                 retries: int = DEFAULT_RETRIES, timeout_s: tuple[float, float] = DEFAULT_TIMEOUT_S,
                 backoff_s: float = 0.5) -> Any:
    """A ``requests.Session`` for the server of ``url``: credentials, retries and timeouts."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    check_no_userinfo(url)

    class _TimeoutAdapter(HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:  # noqa: ANN401
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout_s
            host = request.headers.get("Host")
            if host is not None:
                request.headers["Host"] = host_header(request.url, host)
            return super().send(request, **kwargs)

    retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=backoff_s,
                  status_forcelist=RETRY_STATUS, allowed_methods=None, raise_on_status=False,
                  respect_retry_after_header=True)
    session = requests.Session()
    adapter = _TimeoutAdapter(max_retries=retry, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    credentials = find_credentials(url, credentials_file)
    if credentials is not None:
        credentials.apply(session)
        log.debug("DICOMweb credentials for %s from %s", urlsplit(url).netloc, credentials.origin)
    session.tseg_credentials_origin = credentials.origin if credentials else None  # for error messages
    return session


def credentials_sent(session: Any) -> str:
    """How a session of :func:`http_session` authenticated, for a refusal's message (never the secret)."""
    origin = getattr(session, "tseg_credentials_origin", None)
    return f"with the credentials from {origin}" if origin else "without credentials"
