"""A real single-node Slurm for tests: munged, slurmctld and slurmd with a private configuration.

As docs/cohorts.md (*A Slurm of one machine*) describes (Debian's ``slurm-wlm`` and ``munge``), but nothing shared
with any other Slurm or munge on the machine, so that two test runs (or a site's own Slurm) never
meet: munged gets its own key, socket, pid and log files (``AuthInfo=socket=...`` points Slurm at
it); the controller and node daemons listen on free loopback ports, keep state, spool, pid and
log files in a temporary folder, and the node is this machine as ``slurmd -C`` describes it,
addressed as 127.0.0.1. Clients (sbatch, squeue, scancel) find the cluster through
``SLURM_CONF`` in :meth:`SlurmCluster.env`. Job states and exit codes come from the
``jobcomp/filetxt`` file (there is no accounting database).

Daemons are started as root (slurmd must be root to start jobs as their user) and stopped by the
PIDs in their pid files: SIGTERM, then SIGKILL after a grace period. Jobs still running are
cancelled first (a stopped slurmd would leave their steps behind).

The free ports are found by binding port 0 and closing the socket, so another process may take
one before a daemon binds it: a daemon that then exits with "Address already in use" in its log
is stopped with its partner and both are started again on new ports (:data:`START_TRIES` times
in all); the node counts as up only when this cluster's own controller, reached with this
cluster's munge key, says so.

:func:`unavailable` says why this cannot run here (no Slurm, not root), for a skip, or a failure
on CI (``$CI``), where ``.ci/run`` installs the packages.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "munge")
#: Starts of slurmctld and slurmd (new ports each time) before a port taken by another process fails.
START_TRIES = 5
#: What slurmctld and slurmd log when their port was taken meanwhile ("Error binding slurm stream
#: socket: Address already in use", then "fatal: ...").
PORT_TAKEN = re.compile(r"Address already in use")


def _find(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name)
                                       if p.is_file() and os.access(p, os.X_OK)), None)


def unavailable() -> str | None:
    """Why a test Slurm cannot start here, or None."""
    missing = [n for n in DAEMONS + CLIENTS if _find(n) is None]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing; Debian: apt-get install slurm-wlm munge, "
                "as .ci/run does)")
    if os.geteuid() != 0:
        return "starting slurmd needs root (it starts jobs as their user); run the Slurm tests as root"
    return None


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_line(name: str) -> str:
    """This machine's node line from ``slurmd -C`` (CPUs, sockets, cores, memory), named ``name``."""
    text = subprocess.run([_find("slurmd"), "-C"], capture_output=True, text=True, check=True, timeout=30).stdout
    line = next(ln for ln in text.splitlines() if ln.startswith("NodeName="))
    fields = [f for f in line.split()[1:] if f.split("=")[0] in
              ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")]
    return f"NodeName={name} NodeAddr=127.0.0.1 {' '.join(fields)} State=UNKNOWN"


class SlurmCluster:
    """One node, one partition (``debug``), started by :meth:`start`, stopped by :meth:`stop`."""

    def __init__(self, root: Path | None = None) -> None:
        # munged wants every folder above its socket searchable by all (0755): not pytest's 0700 tmp.
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="tseg-slurm-"))
        self.root.chmod(0o755)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.jobcomp = self.root / "jobcomp.txt"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.submitted: list[str] = []
        self._started: list[tuple[str, Path]] = []

    # --- configuration ---------------------------------------------------------------------

    def node_memory_mb(self) -> int:
        m = re.search(r"RealMemory=(\d+)", self.conf.read_text())
        return int(m.group(1)) if m else 0

    def node_cpus(self) -> int:
        m = re.search(r"\bCPUs=(\d+)", self.conf.read_text())
        return int(m.group(1)) if m else 1

    def _write_conf(self) -> None:
        ctld_port, node_port = _free_ports(2)
        r = self.root
        for d in ("state", "spool", "log"):
            (r / d).mkdir(exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=tsegtest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={node_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.jobcomp}",
            "MpiDefault=none",
            "ReturnToService=2",
            "SwitchType=switch/none",
            "KillWait=10",  # SIGTERM, then SIGKILL 10 s later (Slurm's default is 30)
            "MinJobAge=600",
            "SchedulerParameters=sched_interval=2",
            _node_line(self.node),
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose Slurm commands talk to this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SQUEUE_", "SALLOC_")) and k != "SLURM_CONF"]:
            del env[key]  # a test run inside a Slurm job must not submit into that job's cluster
        return env

    # --- daemons -----------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> "SlurmCluster":
        munge_dir = self.munge_socket.parent
        munge_dir.mkdir(mode=0o755, exist_ok=True)
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        self._daemon("munged", munge_dir / "munged.pid",
                     [_find("munged"), f"--socket={self.munge_socket}", f"--key-file={key}",
                      f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
                      f"--seed-file={munge_dir / 'munged.seed'}"])
        taken = ""
        for attempt in range(1, START_TRIES + 1):
            self._write_conf()  # new free ports each time
            try:
                self._daemon("slurmctld", self.root / "slurmctld.pid", [_find("slurmctld"), "-f", str(self.conf)])
                self._daemon("slurmd", self.root / "slurmd.pid",
                             [_find("slurmd"), "-f", str(self.conf), "-N", self.node])
                taken = self._wait_for_node(timeout_s)
            except _PortTaken as exc:
                taken = str(exc)
            if not taken:
                return self
            self._restart_slurm(attempt)
        raise RuntimeError(f"the test Slurm's daemons found their port taken {START_TRIES} times (last: {taken})")

    def _wait_for_node(self, timeout_s: float) -> str:
        """Wait until this cluster's node is up (""), or a daemon exited because its port was
        taken (that log line). Raises when a daemon exited for another reason, or on timeout."""
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            for name in ("slurmctld", "slurmd"):
                if not _alive_by_pid_file(self.root / f"{name}.pid"):
                    line = self._port_taken(name)
                    if line:
                        return line
                    raise RuntimeError(f"{name} exited while the test Slurm started\n" + self.logs())
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env(), timeout=30)
            state = r.stdout.strip() or r.stderr.strip()
            if state in ("idle", "mixed", "allocated"):
                return ""
            time.sleep(0.3)
        raise RuntimeError(f"the test Slurm's node did not come up in {timeout_s:.0f} s (sinfo: {state!r})\n" + self.logs())

    def _port_taken(self, name: str) -> str:
        """The line of daemon ``name``'s log that says its port was taken ("" if none)."""
        log = self.root / "log" / f"{name}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        line = next((ln for ln in text.splitlines() if PORT_TAKEN.search(ln)), "")
        return f"{name}: {line.strip()}" if line else ""

    def _restart_slurm(self, attempt: int) -> None:
        """Stop slurmd and slurmctld after a start that lost a port (munged stays); their logs are
        kept as ``*.log.<attempt>``, their state and spool emptied for the next start."""
        for name in ("slurmd", "slurmctld"):
            pid_file = self.root / f"{name}.pid"
            _stop_pid(pid_file)  # one that wrote no pid file exited (slurmd binds first)
            pid_file.unlink(missing_ok=True)
            if (name, pid_file) in self._started:
                self._started.remove((name, pid_file))
            log = self.root / "log" / f"{name}.log"
            if log.exists():
                log.rename(log.with_name(f"{log.name}.{attempt}"))
        for d in ("state", "spool"):
            shutil.rmtree(self.root / d, ignore_errors=True)

    def _daemon(self, name: str, pid_file: Path, argv: list[str | None]) -> None:
        r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=self.env(), timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"{name} did not start (exit {r.returncode}): {r.stderr.strip()}\n" + self.logs())
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
            taken = self._port_taken(name) if name != "munged" else ""
            if taken:  # slurmd binds its port before it writes its pid file
                raise _PortTaken(taken)
            time.sleep(0.05)
        if not pid_file.exists():
            raise RuntimeError(f"{name} wrote no pid file {pid_file}\n" + self.logs())
        self._started.append((name, pid_file))

    def logs(self, lines: int = 30) -> str:
        """The last lines of every daemon's log (for failure messages)."""
        out = []
        for log in (self.munge_socket.parent / "munged.log", self.root / "log" / "slurmctld.log",
                    self.root / "log" / "slurmd.log"):
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel this cluster's jobs, then stop slurmd, slurmctld and munged by their pid files."""
        if self.submitted and any(name == "slurmctld" for name, _ in self._started):
            subprocess.run(["scancel", *self.submitted], capture_output=True, env=self.env(), timeout=30)
            self.wait(self.submitted, timeout_s=30, check=False)
        for name, pid_file in reversed(self._started):
            _stop_pid(pid_file)
        self._started.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- jobs --------------------------------------------------------------------------------

    def sbatch(self, args: Iterable[str], cwd: Path, env: dict[str, str]) -> str:
        """Submit as a user would; returns the job ID (``--parsable``)."""
        r = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, capture_output=True, text=True,
                           env=self.env(env), timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} failed: {r.stderr.strip()}\n" + self.logs())
        job = r.stdout.strip().split(";")[0]
        self.submitted.append(job)
        return job

    def active(self, jobs: Iterable[str]) -> list[str]:
        """The pending or running jobs (and array tasks) among ``jobs``."""
        r = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(jobs)], capture_output=True, text=True,
                           env=self.env(), timeout=30)
        return [ln for ln in r.stdout.splitlines() if ln.strip()]

    def wait(self, jobs: Iterable[str], timeout_s: float = 120.0, check: bool = True) -> None:
        jobs = list(jobs)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.active(jobs):
                return
            time.sleep(0.25)
        if check:
            raise TimeoutError(f"jobs {jobs} still pending or running after {timeout_s:.0f} s: "
                               f"{self.active(jobs)}\n" + self.logs())

    def scancel(self, job: str) -> None:
        subprocess.run(["scancel", job], check=True, capture_output=True, env=self.env(), timeout=30)

    def requeue(self, job: str) -> None:
        """``scontrol requeue`` (as preemption does), then start it now: Slurm holds a requeued
        job back for about two minutes before it is eligible again."""
        for args in (["requeue", job], ["update", f"JobId={job}", "StartTime=now"]):
            subprocess.run(["scontrol", *args], check=True, capture_output=True, env=self.env(), timeout=30)

    def finished(self) -> dict[str, dict[str, str]]:
        """Finished jobs from the jobcomp file, keyed ``ARRAYJOB_TASK`` for array tasks, else the job ID:
        each a dict of its fields (JobState, ExitCode, NodeList, ...)."""
        jobs: dict[str, dict[str, str]] = {}
        if not self.jobcomp.exists():
            return jobs
        for line in self.jobcomp.read_text().splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if fields.get("ArrayJobId") and fields.get("ArrayTaskId"):
                jobs[f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"] = fields
            elif fields.get("JobId"):
                jobs[fields["JobId"]] = fields
        return jobs


class _PortTaken(Exception):
    """A daemon exited because another process took its port first (the log line)."""


def _stop_pid(pid_file: Path, grace_s: float = 10.0) -> None:
    """SIGTERM the process named by ``pid_file``, SIGKILL it if it outlives ``grace_s``."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if not _alive(pid):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive_by_pid_file(pid_file: Path) -> bool:
    """Whether the process named by ``pid_file`` runs (no pid file: not started, or gone)."""
    try:
        return _alive(int(pid_file.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return False


def _alive(pid: int) -> bool:
    """Running (a zombie, ended but not yet reaped by its parent, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
