"""What ``tseg-rt info`` prints for people (``--json`` is for machines): pure text from the
dictionaries that :func:`tseg.runtime.wsi.slide.describe_slide` and the model and engine
readers return."""

from __future__ import annotations

from typing import Any

from tseg.runtime.util.display import printable


def _num(value: float) -> str:
    return f"{value:.4g}"


def _words(value: Any) -> str:
    """A value in words: no Python ``None``, brackets or quotes."""
    if value is None or value == [] or value == {}:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_words(v) for v in value)
    return printable(str(value))


def _tree(data: dict, indent: str = "") -> list[str]:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines.extend(_tree(value, indent + "  "))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{indent}{key}:")
            for item in value:
                lines.extend(_tree(item, indent + "  - "))
        else:
            lines.append(f"{indent}{key}: {_words(value)}")
    return lines


def _levels(data: dict) -> list[str]:
    mpp = data.get("mpp")
    lines = []
    for level in data.get("levels", []):
        w, h = level["dimensions"]
        dx, dy = level["downsample"]
        res = (f"{_num(mpp[0] * dx)} µm/px" if mpp and abs(mpp[0] * dx - mpp[1] * dy) < 1e-6 * mpp[0] * dx
               else f"{_num(mpp[0] * dx)} x {_num(mpp[1] * dy)} µm/px" if mpp else "µm/px unknown")
        lines.append(f"    {level['level']:>2}  {w} x {h} px  {res}  (downsample {_num(dx)})")
    return lines


def _slide(data: dict) -> list[str]:
    w0, h0 = data["dimensions"]
    mpp = data.get("mpp")
    lines = [f"slide         {printable(str(data['path']))}",
             f"vendor        {_words(data.get('vendor'))}"
             + (f" (pixels decoded by {data['decoder']})" if data.get("decoder") else "")]
    if mpp:
        source = {"metadata": "from the slide's metadata", "override": "given with --mpp"}.get(
            data.get("mpp_source"), _words(data.get("mpp_source")))
        lines.append(f"resolution    {_num(mpp[0])} x {_num(mpp[1])} µm/px at level 0 ({source})")
        w_mm, h_mm = data["size_mm"]
        lines.append(f"size          {_num(w_mm)} x {_num(h_mm)} mm ({w0} x {h0} px at level 0)")
    else:
        lines.append(f"resolution    {_words(data.get('resolution'))}")
        lines.append(f"size          {w0} x {h0} px at level 0 (mm unknown)")
    lines.append(f"levels        {len(data.get('levels', []))}")
    lines.extend(_levels(data))
    for key, mpp_word in (("size_at_1mpp", "1"), ("size_at_5mpp", "5")):
        if data.get(key):
            lines.append(f"at {mpp_word} µm/px     {data[key][0]} x {data[key][1]} px")
    lines.append(f"associated    {_words(data.get('associated_images'))}")
    if data.get("colour_correction"):
        lines.append(f"colours       {_words(data['colour_correction'])}")
    for warning in data.get("warnings") or []:
        lines.append(f"warning       {_words(warning)}")
    limits = data.get("limits")
    if limits:
        lines.append(f"memory        {_num(limits['memory_needed_gb'])} GB needed to segment it, "
                     f"{_num(limits['memory_available_gb'])} GB available; at most "
                     f"{_num(limits['max_slide_mm'])} mm a side (--max-slide-mm)")
        if limits.get("memory_model"):
            lines.append(f"              model's memory: {limits['memory_model']}")
    problems = list((limits or {}).get("problems", []))
    lines.append(f"problems      {'; '.join(_words(p) for p in problems) if problems else 'none'}")
    return lines


def describe(data: dict) -> list[str]:
    """The lines ``tseg-rt info`` prints: a slide's summary (vendor, levels with size and µm/px,
    size in mm, associated images, problems), or any other description as an indented list."""
    if "levels" in data and "dimensions" in data and "path" in data:
        return _slide(data)
    return _tree(data)
