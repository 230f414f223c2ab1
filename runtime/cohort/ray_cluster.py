"""Connecting to Ray for a batch (``--ray auto | ADDRESS``); Ray is imported here only, and only
when a batch asks for it (``pip install 'tseg-rt[ray]'``, ``ray>=2.40``).

``auto`` joins the cluster that ``RAY_ADDRESS`` names or that ``ray start`` started on this
machine, and otherwise starts a local Ray instance for this batch (stopped at its end), so one
command works on a laptop and on a cluster. An address (``HOST:6379``, ``ray://HOST:10001``)
joins that cluster. A process that has called ``ray.init`` itself keeps its connection (the
batch neither starts nor stops Ray).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from contextlib import contextmanager
from typing import Any, Iterator

from tseg.runtime.errors import BackendUnavailableError, ClusterError

log = logging.getLogger(__name__)

MIN_RAY = (2, 40)
#: Object store of a local instance started for a batch: outcomes are small.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024


def import_ray() -> Any:
    """The ``ray`` module, or BackendUnavailableError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError(f"--ray needs Ray: pip install 'tseg-rt[ray]' ({exc})") from None
    version = tuple(int(p) for p in re.findall(r"\d+", str(getattr(ray, "__version__", "0")))[:2])
    if version < MIN_RAY:
        raise BackendUnavailableError(f"Ray {ray.__version__} is too old for tseg-rt (needs >= "
                                      f"{'.'.join(map(str, MIN_RAY))}): pip install -U 'tseg-rt[ray]'")
    return ray


def route_ray_logs(level: int) -> None:
    """Send Ray's own log messages through this process's logging (the command line's format) at
    ``level`` and above; Ray installs a handler of its own at import. For the command line."""
    import_ray()
    logger = logging.getLogger("ray")
    logger.handlers[:] = []
    logger.propagate = True
    logger.setLevel(level)


#: How long to wait for a TCP connection to a cluster's address before saying nothing answers
#: (Ray itself retries a dead address for minutes).
CONNECT_TIMEOUT_S = 10.0


def unreachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why nothing answers at ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``), or None when a
    TCP connection opens (or the address is not of that form: Ray judges it)."""
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _recorded_cluster() -> str | None:
    """The cluster ``ray start`` recorded on this machine (Ray's own record), if any."""
    try:
        from ray._private.services import find_bootstrap_address

        return find_bootstrap_address(None) or None
    except Exception:  # a Ray without this helper: no record
        return None


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, connected as the module docstring says; disconnects (or stops the local instance it
    started) on exit, and only then. An address where nothing answers is refused within
    :data:`CONNECT_TIMEOUT_S` (:class:`~tseg.runtime.errors.ClusterError`)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    common = dict(configure_logging=False, log_to_driver=False)
    target = (address or "auto").strip()
    fix = ("Start one with `ray start --head`, give its address (HOST:6379 or ray://HOST:10001), or use --ray auto "
           "(without RAY_ADDRESS) for a local instance")
    if target == "auto":
        env = os.environ.get("RAY_ADDRESS", "").strip()
        join = env or _recorded_cluster()
        if join:
            why = unreachable(join)
            if why and env:
                raise ClusterError(f"cannot connect to the Ray cluster at {env} (RAY_ADDRESS): {why}. {fix}")
            if why:
                log.warning("the Ray cluster `ray start` recorded on this machine (%s) does not answer (%s); "
                            "starting a local instance", join, why)
                join = None
    else:
        why = unreachable(target)
        if why:
            raise ClusterError(f"cannot connect to the Ray cluster at {target}: {why}. {fix}")
        join = target
    try:
        if join:
            ray.init(address=join, **common)
            log.info("joined the Ray cluster at %s", join)
        else:
            ray.init(address="local", include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **common)
            log.info("started a local Ray instance (%s CPUs, %s GPUs)",
                     int(ray.cluster_resources().get("CPU", 0)), int(ray.cluster_resources().get("GPU", 0)))
    except Exception as exc:  # Ray's own errors vary by version: one line, the fix
        raise ClusterError(f"cannot connect to the Ray cluster at {join or 'a new local instance'}: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. {fix}") from None
    try:
        yield ray
    finally:
        ray.shutdown()
