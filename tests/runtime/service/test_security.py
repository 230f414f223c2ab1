"""Who may use a service, and what stops it from starting: tokens, non-loopback addresses, one
service per results folder, an engine that cannot load; readiness before the engine is warm."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import make_square_slide
from service_process import wait_job


def cli(*args, timeout: float = 120):  # noqa: ANN001, ANN201
    return subprocess.run([sys.executable, "-m", "tseg.runtime.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_token_is_checked_on_every_request(service_factory, tmp_path):
    root = tmp_path / "slides"
    root.mkdir()
    make_square_slide(root / "a.tiff")
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-of-32-characters-xx\n")
    token_file.chmod(0o600)
    svc = service_factory("serve", tmp_path / "out", "--root", root, "--token-file", token_file, ready=False)
    routes = [("GET", "/v1/health/live"), ("GET", "/v1/health/ready"), ("GET", "/v1/info"), ("GET", "/metrics"),
              ("GET", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("POST", "/v1/jobs/x/cancel"), ("GET", "/v1/openapi.json"),
              ("GET", "/nope"), ("DELETE", "/v1/jobs"), ("PUT", "/v1/info")]  # the token before the routes
    for token in ("", "wrong", "s3cret-token-of-32-characters-x"):
        with svc.client(token=token) as c:
            for method, path in routes:
                r = c.request(method, path)
                assert r.status_code == 401, (token, path, r.text)
                assert r.json()["code"] == "unauthorized" and r.headers["www-authenticate"].startswith("Bearer")
            r = c.post("/v1/jobs", json={"path": str(root / "a.tiff")})
            assert r.status_code == 401
    svc.token = "s3cret-token-of-32-characters-xx"
    assert svc.wait_ready(60)
    with svc.client() as c:
        job = c.post("/v1/jobs", json={"path": str(root / "a.tiff")})
        assert job.status_code == 202
        assert wait_job(c, job.json()["id"])["state"] == "success"
        assert c.get("/v1/info", headers={"Host": "scanner-pc.lab:8642"}).status_code == 200  # the token decides


@pytest.mark.slow
def test_refusals_before_listening(tmp_path):
    """Exit status 2 and the reason, before any socket is opened (two through the command line,
    the rest of the checks through the library functions it calls)."""
    from tseg.runtime.errors import InvalidArgumentError
    from tseg.runtime.service.access import check_binding, read_token_file
    from tseg.runtime.service.paths import Roots

    root = tmp_path / "slides"
    root.mkdir()
    for args, message in ((("--host", "0.0.0.0"), "reachable from other machines: give --token-file"),
                          (("--low", "200", "--high", "100"), "low < high")):
        r = cli("serve", "--out", tmp_path / "out", "--port", "0", "--root", root, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in " ".join(r.stderr.split()), (args, r.stderr)
    assert not (tmp_path / "out" / ".tseg-service" / "service.json").exists()
    short = tmp_path / "short"
    short.write_text("abc\n")
    for call, message in ((lambda: check_binding("192.0.2.7", None), "give --token-file"),
                          (lambda: check_binding("::", None), "give --token-file"),
                          (lambda: read_token_file(short), "at least 16 characters"),
                          (lambda: read_token_file(tmp_path / "none"), "cannot read it"),
                          (lambda: Roots([]), "at least one root folder (--root)"),
                          (lambda: Roots([tmp_path / "nowhere"]), "no such folder")):
        with pytest.raises(InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
            call()
    check_binding("127.0.0.1", None)
    check_binding("::1", None)
    check_binding("0.0.0.0", "a-token-of-sixteen-chars")


@pytest.mark.slow
def test_one_service_per_results_folder(service_factory, tmp_path):
    root = tmp_path / "slides"
    root.mkdir()
    out = tmp_path / "out"
    service_factory("serve", out, "--root", root, ready=False)
    for command in (("serve", "--root", root, "--port", "0"), ("watch", root)):
        r = cli(*command, "--out", out)
        assert r.returncode == 2 and "already serves this results folder" in " ".join(r.stderr.split()), r.stderr


@pytest.mark.slow
def test_an_engine_that_cannot_load_stops_the_service(tmp_path):
    root = tmp_path / "slides"
    root.mkdir()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    r = cli("serve", "--root", root, "--out", tmp_path / "out", "--port", "0", "--engine", bad)
    assert r.returncode == 2, r.stderr
    assert "cannot load the engine" in r.stderr and "bad.onnx" in r.stderr
    assert not (tmp_path / "out" / ".tseg-service" / "service.lock").exists()


def test_not_ready_until_the_engine_is_warm(tmp_path):
    """Liveness and readiness apart: 503 with the reason while the engine loads (in process: the
    runner is not started, so the worker stays 'loading')."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tseg.runtime.service.app import create_app
    from tseg.runtime.service.core import Service, ServiceConfig

    root = tmp_path / "slides"
    root.mkdir()
    service = Service(ServiceConfig(out=tmp_path / "out", roots=[root], report=False))
    try:
        with TestClient(create_app(service), base_url="http://127.0.0.1") as c:
            assert c.get("/v1/health/live").status_code == 200
            r = c.get("/v1/health/ready")
            assert r.status_code == 503 and r.json()["ready"] is False and r.json()["reasons"] == ["cpu: loading"]
            assert "tseg_ready 0" in c.get("/metrics").text
    finally:
        service.stop()


def test_listening_socket():
    """asyncio sets TCP_NODELAY only on connections of sockets whose protocol is IPPROTO_TCP;
    without it each response waited ~40 ms for delayed ACKs (measured: 45 ms against 1 ms)."""
    import socket

    from tseg.runtime.errors import InvalidArgumentError
    from tseg.runtime.service.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] > 0
        with pytest.raises(InvalidArgumentError, match="choose another --port"):
            bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()
