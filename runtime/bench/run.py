"""``tseg-rt bench``: the engine alone, then whole slides, on this machine, as one JSON result.

:func:`run_bench` loads the model once, measures it alone (:mod:`tseg.runtime.bench.engine`),
then runs slides end to end on the same, warm backend (:mod:`tseg.runtime.bench.end_to_end`),
and returns one result (:mod:`tseg.runtime.bench.result`) with the machine it ran on. ``--check``
(:mod:`tseg.runtime.bench.check`) and ``--compare`` (:mod:`tseg.runtime.bench.compare`) produce
results of the same schema.

Decisions where the issue is silent: without ``--engine`` the bundled demonstration model runs
(its figures measure the pipeline and the machine, not the paper's network: the result says so);
without slides, a generated 10 x 8 mm slide at 0.25 µm/px (2 x 2 tiles); slides run one at a
time, as ``tseg-rt run`` without ``--workers`` does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from tseg.runtime.bench.engine import EngineSettings, bench_engine, default_model
from tseg.runtime.bench.result import new_result
from tseg.runtime.errors import InvalidArgumentError

log = logging.getLogger(__name__)


#: Printed with every run of the bundled model.
DEMO_NOTE = ("The bundled demonstration model (0.11 TFLOP per 7680² tile, against 42 for the paper's network): "
             "these figures measure the pipeline and the machine, not the network. Pass --engine to measure "
             "your own model.")


def run_bench(model: str | os.PathLike[str] | None = None, slides: Sequence[Path] = (), *,
              engine: EngineSettings | None = EngineSettings(), end_to_end: bool = True,
              providers: str | None = None, device: int = 0, generated_mm: tuple[float, float] | None = None,
              generated_mpp: float | None = None, reader_threads: int | None = None,
              level_tolerance: float = 0.0, work: Path | None = None,
              on_stage: Callable[[str], None] | None = None,
              on_slide: Callable[[Path, Any], None] | None = None) -> dict[str, Any]:
    """Measure ``model`` (default: the bundled one) alone (unless ``engine`` is None) and on
    ``slides`` (default: a generated slide; none with ``end_to_end=False``)."""
    from tseg.runtime.bench.end_to_end import GENERATED_MM, GENERATED_MPP, bench_end_to_end, generated_slide
    from tseg.runtime.execution.backends import load_backend
    from tseg.runtime.execution.segmenter import Segmenter

    if engine is None and not end_to_end:
        raise InvalidArgumentError("nothing to measure: the engine benchmark and the end-to-end run are both off")
    path = Path(model) if model is not None else default_model()
    result = new_result("bench")
    if model is None:
        result["note"] = DEMO_NOTE
    backend = None
    try:
        if engine is not None:
            if on_stage:
                on_stage("engine")
            result["engine"], backend = bench_engine(path, engine, providers=providers, device=device)
        else:
            backend = load_backend(path, providers=providers, device_id=device)
            result["engine"] = {"model": backend.describe()}
        if end_to_end:
            if on_stage:
                on_stage("end_to_end")
            chosen = list(slides)
            if not chosen:
                mm = generated_mm or GENERATED_MM
                mpp = generated_mpp or GENERATED_MPP
                chosen = [generated_slide(mm[0], mm[1], mpp)]
                result["generated_slide"] = {"path": str(chosen[0]), "size_mm": list(mm), "mpp": mpp}
            segmenter = Segmenter(backend, reader_threads=reader_threads, level_tolerance=level_tolerance)
            warm_side = result["engine"]["tile"][0] if engine is not None else None
            result["end_to_end"] = bench_end_to_end(segmenter, chosen, work=work, warm_side=warm_side,
                                                    on_slide=on_slide)
    finally:
        if backend is not None:
            backend.close()
    return result
