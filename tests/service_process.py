"""A real `tseg-rt serve` or `tseg-rt watch` in a subprocess, for tests and benchmarks: on a free
loopback port (port 0: the service binds it and writes the address to
OUT/.tseg-service/service.json), its log in a file, stopped by SIGTERM as systemd does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

FINAL = ("success", "failure", "cancelled")
#: How long the clients of :meth:`ServiceProcess.client` keep an idle connection for the next
#: request. The service closes a connection idle for KEEP_ALIVE_S (5 s,
#: :mod:`tseg.runtime.service.transport`); httpx's default expiry is also 5 s, so a request sent on a
#: connection idle ~5 s could meet the service closing it (httpx.RemoteProtocolError: "Server
#: disconnected without sending a response"). Well under the service's limit, the client always
#: drops an idle connection first (a new connection on loopback costs well under a millisecond).
CLIENT_KEEPALIVE_S = 2.0

class ServiceProcess:
    """A `tseg-rt serve` or `watch` subprocess with its log in a file."""

    def __init__(self, command: str, out: Path, args: Iterable[Any], log: Path, user: int | None = None,
                 cwd: Path | None = None) -> None:
        self.user = user  # run as this user id (and its group id), e.g. nobody: a user without root's rights
        self.command = command
        self.cwd = cwd  # the folder the command runs in (relative arguments are relative to it)
        self.out = Path(out)
        self.args = [str(a) for a in args]
        self.log_path = log
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.token: str | None = None

    def start(self, ready: bool = True, timeout: float = 90.0) -> "ServiceProcess":
        argv = [sys.executable, "-m", "tseg.runtime.cli", self.command, *self.args, "--out", str(self.out)]
        if self.command == "serve":
            argv += ["--port", "0"]
        self._log = open(self.log_path, "ab")
        as_user = {"user": self.user, "group": self.user, "extra_groups": []} if self.user is not None else {}
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.cwd, **as_user)
        deadline = time.monotonic() + timeout
        info = self.out / ".tseg-service" / "service.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"`tseg-rt {self.command}` exited with {self.proc.returncode}:\n{self.log()}")
            if self.command == "watch":
                if "tseg-rt watch:" in self.log():
                    return self
            else:
                try:
                    data = json.loads(info.read_text())
                except (OSError, ValueError):
                    data = {}
                if data.get("pid") == self.proc.pid:
                    self.url = data["url"]
                    if not ready or self.wait_ready(deadline - time.monotonic()):
                        return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"`tseg-rt {self.command}` did not start in {timeout} s:\n{self.log()}")

    def client(self, token: str | None = None, **kwargs: Any):  # noqa: ANN201 - httpx.Client
        import httpx

        token = token if token is not None else self.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Longer than the API's longest long poll (GET /v1/jobs/{id}?wait=60): a client that gave up
        # first would fail a test on a loaded machine while the service was still keeping its word.
        kwargs.setdefault("limits", httpx.Limits(keepalive_expiry=CLIENT_KEEPALIVE_S))
        return httpx.Client(base_url=self.url, headers=headers, timeout=75.0, **kwargs)

    def wait_ready(self, timeout: float = 60.0) -> bool:
        import httpx

        deadline = time.monotonic() + timeout
        with self.client() as c:
            while time.monotonic() < deadline:
                try:
                    if c.get("/v1/health/ready").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(60)
        finally:
            self._log.close()

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, as systemd stops a service; SIGKILL if it does not end in ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"`tseg-rt {self.command}` ignored SIGTERM for {timeout} s:\n{self.log()}")
        finally:
            self._log.close()


def wait_job(client: Any, job_id: str, states: Iterable[str] = FINAL, timeout: float = 120.0,
             until: Any = None) -> dict:
    """Poll a job until it is in ``states`` (or ``until(job)`` is true)."""
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if (until(job) if until is not None else job["state"] in states):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}")


def no_temporary_outputs(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
