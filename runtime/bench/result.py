"""The benchmark result file: one JSON object of schema :data:`SCHEMA`.

Every result (``tseg-rt bench``, ``--check``) carries ``schema``, ``kind`` (``bench`` or
``check``), the tseg-rt version, when it was made and the machine it ran on; the rest depends on
the kind (:mod:`tseg.runtime.bench.run`, :mod:`tseg.runtime.bench.check`). A later, incompatible
layout gets a new schema name, and ``--compare`` refuses what it cannot read.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tseg.runtime.bench.machine import machine_info
from tseg.runtime.errors import InvalidArgumentError

SCHEMA = "tseg-rt-bench/1"


def new_result(kind: str) -> dict[str, Any]:
    """The envelope every benchmark result shares."""
    from tseg.runtime import __version__

    return {"schema": SCHEMA, "kind": kind, "tseg_rt": __version__, "created": datetime.now(timezone.utc).isoformat(),
            "machine": machine_info()}


def write_result(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``result`` as JSON, atomically."""
    from tseg.runtime.util.atomic import write_text

    return write_text(path, json.dumps(result, indent=1, default=str) + "\n")


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``tseg-rt bench --json`` file, checked to be one."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"{p}: not a readable benchmark result ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else None
        raise InvalidArgumentError(f"{p}: not a tseg-rt bench result of schema {SCHEMA} (found {found!r}); "
                                   "write one with `tseg-rt bench --json FILE`")
    return data
