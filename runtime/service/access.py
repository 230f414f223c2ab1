"""Who may call the service: a dependency of every route (as MONAI Label does it), not code in them.

* **Token.** With ``--token-file``, every request needs ``Authorization: Bearer <token>`` (compared
  in constant time); 401 with ``WWW-Authenticate: Bearer`` otherwise. Binding to an address other
  than loopback requires a token (:func:`check_binding`).
* **Loopback without a token** still refuses what a web page in a local browser could send:
  a ``Host`` header other than ``localhost``/``127.0.0.1``/``[::1]`` (DNS rebinding) and any
  ``Origin`` other than the service's own (cross-site requests; scanner software and curl send
  none). The service sends no CORS headers, so browsers never let other sites read its answers.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import stat
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import Request

from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.service.problems import Problem

log = logging.getLogger(__name__)

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in ``path`` (its first line, stripped): at least 16 characters. A file that
    others may read is used, with a warning."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        mode = p.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"--token-file {p}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    token = text.splitlines()[0].strip() if text.strip() else ""
    if len(token) < MIN_TOKEN_CHARS:
        raise InvalidArgumentError(f"--token-file {p}: the token must be at least {MIN_TOKEN_CHARS} characters on its "
                                   "first line (make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("--token-file %s can be read by other users: chmod 600 it", p)
    return token


def check_binding(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if not is_loopback(host) and not token:
        raise InvalidArgumentError(f"--host {host} is reachable from other machines: give --token-file too (every "
                                   "request must then carry the token), or keep the default --host 127.0.0.1")


def _host_name(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Access:
    """The dependency that checks every request (see the module docstring)."""

    def __init__(self, token: str | None = None) -> None:
        self._token = token.encode() if token else None

    async def __call__(self, request: Request) -> None:
        if self._token is not None:
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
                raise Problem("unauthorized", "this service needs 'Authorization: Bearer <token>' with the token of "
                                              "its --token-file", {"WWW-Authenticate": 'Bearer realm="tseg-rt"'})
            return
        host = request.headers.get("host", "")
        if host and _host_name(host) not in LOOPBACK_NAMES:
            raise Problem("forbidden_host", f"Host {host!r} is not allowed: without a token this service answers only "
                                            "requests addressed to localhost, 127.0.0.1 or [::1]")
        origin = request.headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            if not parts.netloc or parts.netloc.lower() != host.lower():
                raise Problem("forbidden_origin", f"requests from web pages of other origins ({origin}) are refused")


#: Query parameters whose values are never logged (a token sent in the URL is refused, and must
#: not end up in the access log either).
SECRET_PARAMETERS = ("token", "key", "secret", "password", "auth", "credential", "signature")


def redact_query(path: str) -> str:
    """``path`` (with its query) with the values of parameters that look like secrets replaced."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(word in name.lower() for name, _ in pairs for word in SECRET_PARAMETERS):
        return path
    return base + "?" + urlencode([(n, "REDACTED" if any(w in n.lower() for w in SECRET_PARAMETERS) else v)
                                   for n, v in pairs])


class RedactSecrets(logging.Filter):
    """A filter for uvicorn's access log: secrets in a request's query are not written."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True
