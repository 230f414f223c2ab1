"""The paper's network in PyTorch on a GPU (the check's PyTorch rows), from the repository.

The code is installed with tseg-rt (:mod:`tseg.runtime.bench.torch_network`, run by
``tseg-rt bench --check``); this is the same measurement with its options exposed:

    python -m benchmarks.network_gpu [--size 7680] [--config paper] [--modes fp32,fp16,bf16,fp16-cl,fp16-compile]
                                     [--repeats 3] [--compile-timeout 150] [--json out.json]

``--device cpu --size 256 --config tiny --modes fp32,bf16`` is a smoke run for machines without a GPU.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from benchmarks.common import write_json
from tseg.runtime.bench.torch_network import ALL_MODES, CARRIED_TILES, agreement, he_tile, network_rows  # noqa: F401


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=7680)
    parser.add_argument("--config", default="paper", help="paper, or a training config name (tiny for smoke runs)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--modes", default=",".join(ALL_MODES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile-timeout", type=float, default=150.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = set(modes) - set(ALL_MODES)
    if unknown:
        raise SystemExit(f"benchmarks.network_gpu: unknown modes {sorted(unknown)} (choose from {ALL_MODES})")
    result = network_rows(args.size, args.config, args.device, modes, args.repeats, args.compile_timeout)
    if "skipped" in result:
        raise SystemExit(f"benchmarks.network_gpu: {result['skipped']}; skipped")
    result["benchmark"] = "network_gpu"
    write_json(args.json, result)
    for k, v in result["modes"].items():
        line = {kk: v.get(kk) for kk in ("seconds_per_tile", "tflop_per_s", "peak_gpu_memory_gb", "compile_seconds", "error")}
        print(k, json.dumps(line, default=str), json.dumps(v.get("agreement_with_fp32", {})))
    return result


if __name__ == "__main__":
    main()
