"""DICOMweb sessions: credentials from a file or the environment (never a URL), retries, timeouts."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.util.http import (
    CREDENTIALS_ENV,
    PASSWORD_ENV,
    TOKEN_ENV,
    USER_ENV,
    check_no_userinfo,
    find_credentials,
    http_session,
)

pytest.importorskip("requests")


def _file(tmp_path, data, mode=0o600):
    p = tmp_path / "credentials.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    p.chmod(mode)
    return p


def test_credentials_from_a_file_per_server_longest_prefix_wins(tmp_path):
    p = _file(tmp_path, {"https://pacs.example.org": {"token": "t-any"},
                         "https://pacs.example.org/dicom-web/studies": {"username": "u", "password": "pw"},
                         "http://127.0.0.1:8042": {"username": "local", "password": "x"}})
    got = find_credentials("https://pacs.example.org/dicom-web/studies/1/series/2", p, env={})
    assert (got.username, got.password, got.token) == ("u", "pw", None)
    assert find_credentials("https://pacs.example.org/other", p, env={}).token == "t-any"
    assert find_credentials("https://elsewhere.org/x", p, env={}) is None
    assert "pw" not in repr(got) and "t-any" not in repr(find_credentials("https://pacs.example.org/o", p, env={}))


def test_single_credential_file_and_environment_order(tmp_path):
    p = _file(tmp_path, {"token": "from-file"})
    env = {TOKEN_ENV: "from-env", CREDENTIALS_ENV: str(p)}
    assert find_credentials("https://h/x", None, env=env).token == "from-file"  # the file first
    assert find_credentials("https://h/x", None, env={TOKEN_ENV: "from-env"}).token == "from-env"
    basic = find_credentials("https://h/x", None, env={USER_ENV: "u", PASSWORD_ENV: "p"})
    assert (basic.username, basic.password) == ("u", "p")
    assert find_credentials("https://h/x", None, env={}) is None


def test_bad_credentials_files_name_the_file_not_the_secret(tmp_path):
    p = _file(tmp_path, '{"token": "s3cret"')
    with pytest.raises(InvalidArgumentError) as bad:
        find_credentials("https://h/x", p, env={})
    assert str(p) in str(bad.value) and "line" in str(bad.value) and "s3cret" not in str(bad.value)
    for data, words in (({"token": "a", "username": "b"}, "not both"), ({"password": "p"}, "give 'token'"),
                        ({"pacs": {"token": "a"}}, "server URLs"), ({"token": 5}, "must be a string"),
                        ({"token": "a", "apikey": "x"}, "unknown credential field")):
        with pytest.raises(InvalidArgumentError, match=words):
            find_credentials("https://h/x", _file(tmp_path, data), env={})
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        find_credentials("https://h/x", tmp_path / "missing.json", env={})


def test_a_file_others_can_read_is_used_with_a_warning(tmp_path, caplog):
    p = _file(tmp_path, {"token": "t"}, mode=0o644)
    with caplog.at_level(logging.WARNING):
        assert find_credentials("https://h/x", p, env={}).token == "t"
    assert "chmod 600" in caplog.text


def test_urls_with_credentials_are_refused():
    with pytest.raises(InvalidArgumentError, match="never put credentials in a URL") as bad:
        check_no_userinfo("https://alice:s3cret@pacs.example.org/dicom-web")
    assert "s3cret" not in str(bad.value)
    check_no_userinfo("https://pacs.example.org:8443/dicom-web")


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first ``fail`` requests, then 200; records the Authorization headers."""

    fail = 2
    seen: list = []

    def do_GET(self):  # noqa: N802
        type(self).seen.append(self.headers.get("Authorization"))
        if len(type(self).seen) <= type(self).fail:
            self.send_response(503)
            self.end_headers()
            return
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_server():
    _Flaky.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_session_retries_server_errors_and_sends_the_token(flaky_server, tmp_path, monkeypatch):
    monkeypatch.delenv(CREDENTIALS_ENV, raising=False)
    monkeypatch.setenv(TOKEN_ENV, "tok")
    session = http_session(flaky_server, backoff_s=0.01)
    response = session.get(f"{flaky_server}/studies")
    assert response.status_code == 200 and len(_Flaky.seen) == 3  # two 503s retried
    assert set(_Flaky.seen) == {"Bearer tok"}
    _Flaky.seen, _Flaky.fail = [], 10
    try:
        assert http_session(flaky_server, retries=2, backoff_s=0.01).get(f"{flaky_server}/x").status_code == 503
        assert len(_Flaky.seen) == 3  # 1 + 2 retries, then the error is the caller's
    finally:
        _Flaky.fail = 2


def test_a_readable_credentials_file_is_warned_about_once(tmp_path, caplog):
    """Issue 29, defect 9: the file is read for every session (slide, metadata, STOW): one warning."""
    from tseg.runtime.util.http import find_credentials

    creds = tmp_path / "open.json"
    creds.write_text('{"token": "t"}')
    creds.chmod(0o644)
    with caplog.at_level("WARNING"):
        for _ in range(5):
            assert find_credentials("http://127.0.0.1:1/dicom-web", creds, env={}).token == "t"
    assert sum("can be read by other users" in r.getMessage() for r in caplog.records) == 1
