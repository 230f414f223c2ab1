"""Benchmark results as text for a terminal (the JSON holds everything; this is the digest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from tseg.runtime.bench.machine import describe_machine
from tseg.runtime.bench.stages import STAGES


def _gb(n: Any) -> str:
    return f"{n / 1e9:.2f} GB" if isinstance(n, (int, float)) else "n/a"


def _num(v: Any, fmt: str = ".3f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "n/a"


def format_engine(e: Mapping[str, Any]) -> list[str]:
    m = e["model"]
    backend = m.get("kind", "")
    if m.get("providers"):
        backend += " " + ", ".join(p.replace("ExecutionProvider", "") for p in m["providers"])
    s = e["s_per_tile"]
    side = e["tile"][0]
    flop = e.get("flop") or {}
    lines = [f"Engine      {Path(m['path']).name} on {backend}, {side}² tiles "
             f"({e['tiles_timed']} timed after {e['warmup_tiles']} warm-up"
             + (", stopped by the time limit" if e.get("stopped_by_time_limit") else "") + ")",
             f"  s/tile    min {s['min']:.4f}  median {s['median']:.4f}  p99 {s['p99']:.4f}  (first call "
             f"{_num(e.get('first_call_s'), '.3f')} s)"]
    if e.get("streamed_s_per_tile"):
        lines.append(f"  streamed  {e['streamed_s_per_tile']:.4f} s/tile (copies overlapping compute)")
    lines.append(f"  rate      {e['megapixels_per_s']:.1f} MP/s"
                 + (f", {e['tflop_per_s']:.2f} TFLOP/s of {flop['tflop']:.4g} TFLOP a tile (1 MAC = 2 FLOP)"
                    if e.get("tflop_per_s") else f"; TFLOP/s unknown: {flop.get('error')}"))
    host = e.get("host_memory") or {}
    lines.append(f"  memory    host peak {_gb(host.get('peak_above_before_load_bytes'))} above the start"
                 + (f"; device {_gb(e['device_memory'].get('used_by_this_run_bytes'))} used by this run"
                    if e.get("device_memory") else ""))
    copies = e.get("copy_rates") or {}
    if "pinned_h2d" in copies:
        lines.append("  copies    " + ", ".join(f"{k.replace('_', ' ')} {copies[k]['gb_per_s_median']:.1f} GB/s"
                                                for k in ("pinned_h2d", "pinned_d2h", "pageable_h2d", "pageable_d2h")))
    elif copies:
        lines.append(f"  copies    {copies.get('skipped') or copies.get('error')}")
    return lines


def format_end_to_end(r: Mapping[str, Any]) -> list[str]:
    lines = []
    for f in r.get("failed") or []:
        lines.append(f"  FAILED    {f['slide']}: {f['error']}")
    if not r.get("slides"):
        return ["End to end  no slide finished"] + lines
    shares = r["stage_shares_percent"]
    lines = [f"End to end  {r['slides']} slide(s), {r['tiles_run']} tiles, {r['wall_s']:.1f} s: "
             f"{r['slides_per_hour']:.1f} slides/hour (one slide at a time, {r['reader_threads']} reader threads, "
             f"{r['usable_cores']} cores)"] + lines
    lines.append("  shares    " + "  ".join(f"{k} {shares[k]:.1f} %" for k in STAGES)
                 + f"  (sum {r['shares_sum_percent']:.1f} %)")
    lines.append(f"  backend   busy {100 * r['backend_busy']:.0f} % of the wall time; limiting stage: "
                 f"{r['limiting_stage']}")
    lines += [f"  advice    {a}" for a in r["advice"]]
    return lines


def format_result(result: Mapping[str, Any]) -> str:
    lines = [f"Machine     {describe_machine(result['machine'])}"]
    if result.get("note"):
        lines.append(f"Note        {result['note']}")
    if result.get("engine", {}).get("s_per_tile"):
        lines += format_engine(result["engine"])
    if "end_to_end" in result:
        lines += format_end_to_end(result["end_to_end"])
    return "\n".join(lines)


def format_check(check: Mapping[str, Any]) -> str:
    lines = [f"Machine     {describe_machine(check['machine'])}"]
    for step, s in check["steps"].items():
        if "skipped" in s:
            lines.append(f"{step:<11} skipped: {s['skipped']}")
        elif "error" in s:
            lines.append(f"{step:<11} ERROR: {s['error']}")
        elif step == "executor":
            lines.append(f"{step:<11} {'ok' if s['ok'] else 'FAILED'}: copies overlap compute "
                         f"{'yes' if s['overlap_ok'] else 'NO'}, bit-identical "
                         f"{'yes' if s['identical_to_tile_alone'] and s['identical_to_numpy'] else 'NO'}; "
                         f"{s['pipelined_s_per_tile']:.3f} s/tile pipelined vs {s['serial_s_per_tile']:.3f} one at a "
                         f"time; GPU busy {100 * s['gpu_busy_fraction']:.0f} %")
        elif step == "pytorch":
            modes = ", ".join(f"{m} {v['seconds_per_tile']:.3f} s" if v.get("seconds_per_tile") else
                              f"{m} {v.get('error', 'n/a')}" for m, v in s["modes"].items())
            lines.append(f"{step:<11} {s['tflop_per_tile']:.2f} TFLOP a tile: {modes}")
        elif step == "engine":
            for kind, row in s.items():
                if not isinstance(row, dict):
                    continue
                what = row.get("skipped") or row.get("error") or (
                    f"{row['timing']['s_per_tile']['median']:.3f} s/tile" if row.get("timing") else "")
                lines.append(f"{'engine':<11} {kind}: {what}")
    if check.get("rows"):
        lines.append("GPU table rows (docs/performance.md):")
        lines += check["rows"]
    return "\n".join(lines)


def format_compare(rows: Sequence[Mapping[str, Any]], a_label: str, b_label: str) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    table = [("figure", f"A: {a_label}", f"B: {b_label}", "B / A", "")]
    table += [(r["metric"], cell(r["a"]), cell(r["b"]),
               f"{r['ratio_b_over_a']:.3f}" if r["ratio_b_over_a"] is not None else "", r["change"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)
