"""The viewer's pages: the list of slides, and one slide's viewer (BokehJS, served from the
installed ``bokeh`` package: no CDN, no npm, no build step).

The viewer is a Bokeh plot in µm (so Bokeh's scale bar reads µm/mm) whose layers are Bokeh tile
renderers over the library's padded 256 px tiles (``view/{layer}/{z}/{x}/{y}``; every URL of the
pages is relative, so the viewer works at ``/`` and under ``serve``'s ``/viewer/``):
tile zoom ``z`` is Deep Zoom level ``z``, so at zoom 0 a tile spans ``256 * 2**(levels - 1)``
level-0 pixels (Bokeh's ``initial_resolution``), and WMTS rows count down from the slide's top
edge (y = 0; the slide lies at negative y). The page around it is plain HTML: layers with opacity
sliders, the cursor's position, the legend, the verdict form.
"""

from __future__ import annotations

import html
import json
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from tseg.runtime.service.viewer.deepzoom import DeepZoom
from tseg.runtime.service.viewer.library import OVERZOOM

VIEW_TILE = 256
BOKEH_JS = "../../static/bokeh/js/bokeh.min.js"  # relative: the viewer also runs under serve's /viewer/
#: layer -> (label, default opacity, shown at first)
LAYER_TEXT = {"slide": ("Slide", 1.0, True), "mask": ("Tumour mask (fill + contour)", 1.0, True),
              "probability": ("Tumour probability (cividis)", 0.6, False), "tissue": ("Tissue mask", 0.6, False)}
VERDICT_TEXT = {"accept": "Accept", "reject": "Reject", "needs_correction": "Needs correction"}

STYLE = """
body{margin:0;font:14px system-ui,sans-serif;color:#222;display:flex;flex-direction:column;height:100vh}
header{padding:6px 12px;background:#f3f3f3;border-bottom:1px solid #ccc;display:flex;gap:16px;align-items:center}
.banner{background:#b00020;color:#fff;padding:4px 12px;font-weight:bold}
main{flex:1;display:flex;min-height:0} #plot{flex:1;min-width:0;position:relative}
aside{width:300px;overflow:auto;padding:8px 12px;border-left:1px solid #ccc}
aside h2{font-size:14px;margin:12px 0 4px} .layer{margin:4px 0} .layer input[type=range]{width:120px}
table{border-collapse:collapse} td,th{padding:2px 6px;text-align:left;border-bottom:1px solid #eee}
.swatch{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px}
.stale{color:#b00020}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def review_text(review: Mapping[str, Any] | None) -> str:
    if not review or not review.get("verdict"):
        return "not reviewed"
    text = VERDICT_TEXT.get(review["verdict"], review["verdict"])
    return text + (" (stale: given on an earlier result)" if review.get("stale") else "")


def _state(review: Mapping[str, Any] | None) -> str:
    if not review or not review.get("verdict"):
        return "none"
    return "stale" if review.get("stale") else str(review["verdict"])


INDEX_SCRIPT = """
const q = document.getElementById("q"), st = document.getElementById("state");
function apply() {
  const text = q.value.toLowerCase(), want = st.value;
  let shown = 0;
  document.querySelectorAll("#rows tr").forEach(tr => {
    const ok = tr.textContent.toLowerCase().includes(text) && (want === "all" ||
      (want === "first" ? tr.dataset.flags !== "" : tr.dataset.state === want));
    tr.hidden = !ok; shown += ok;
  });
  document.getElementById("count").textContent = shown;
}
q.addEventListener("input", apply); st.addEventListener("change", apply); apply();
document.body.dataset.ready = "1";
"""


def index_page(rows: Sequence[Mapping[str, Any]]) -> str:
    """``/``: every result with its areas, the cohort report's "review first" flags and the
    verdict, filtered by text and by review state."""
    body = []
    for row in rows:
        name = row["name"]
        if "error" in row:
            body.append(f'<tr data-name="{_e(name)}" data-state="error" data-flags="error"><td>{_e(name)}</td>'
                        f"<td colspan=5>{_e(row['error'])}</td></tr>")
            continue
        areas = row["summary"].get("areas") or {}
        body.append(f'<tr data-name="{_e(name)}" data-state="{_state(row["review"])}" data-flags="{_e(row["flags"])}">'
                    f'<td><a href="slides/{quote(name)}/">{_e(name)}</a></td>'
                    f'<td>{_num(areas.get("tumour_area_mm2"), ".2f")}</td>'
                    f'<td>{_num(areas.get("tumour_fraction_of_tissue"), ".3f")}</td>'
                    f'<td>{_num(areas.get("regions"), "d")}</td><td class=flag>{_e(row["flags"])}</td>'
                    f'<td class="{"stale" if (row["review"] or {}).get("stale") else ""}">'
                    f'{_e(review_text(row["review"]))}</td></tr>')
    states = "".join(f"<option value={v}>{t}</option>" for v, t in (
        ("all", "all"), ("first", "review first"), ("none", "not reviewed"), ("stale", "stale verdict"),
        *VERDICT_TEXT.items()))
    return (f"<!doctype html><html><head><meta charset=utf-8><title>tseg-rt viewer</title>"
            f'<link rel=icon href="data:,"><style>{STYLE}</style></head><body><header><b>tseg-rt viewer</b>'
            f"<span><span id=count>{len(rows)}</span> of {len(rows)} result(s)</span><a href=report.html>cohort report</a>"
            '<input type=search id=q placeholder="filter: name, flags, verdict…" aria-label=filter>'
            f"<select id=state aria-label='review state'>{states}</select></header>"
            "<main><div style='padding:12px'><table><thead><tr><th>slide</th><th>tumour mm²</th>"
            "<th>tumour fraction</th><th>regions</th><th>review first</th><th>verdict</th></tr></thead><tbody id=rows>"
            + "".join(body) + f"</tbody></table></div></main><script>{INDEX_SCRIPT}</script></body></html>")


def plot_json(name: str, dz: DeepZoom, mpp: float, layers: Sequence[str]) -> dict[str, Any]:
    """The Bokeh document of one slide (see the module docstring), as ``bokeh.embed.json_item``."""
    from bokeh.embed import json_item
    from bokeh.models import MetricLength, Range1d, ScaleBar, WMTSTileSource
    from bokeh.plotting import figure

    w_um, h_um = dz.width * mpp, dz.height * mpp
    zoom0 = VIEW_TILE * 2 ** (dz.level_count - 1) * mpp  # µm spanned by the one tile of zoom 0
    margin = 0.05 * max(w_um, h_um)
    p = figure(x_range=Range1d(0, w_um, bounds=(-margin, w_um + margin), name="x"),
               y_range=Range1d(-h_um, 0, bounds=(-h_um - margin, margin), name="y"),
               match_aspect=True, sizing_mode="stretch_both", tools="pan,wheel_zoom,reset",
               active_scroll="wheel_zoom", active_drag="pan", toolbar_location="above", name="plot")
    p.axis.visible = False
    p.grid.visible = False
    p.background_fill_color = "#ffffff"
    for layer in layers:
        _, alpha, shown = LAYER_TEXT[layer]
        fmt = "jpeg" if layer == "slide" else "png"
        source = WMTSTileSource(url=f"view/{layer}/{{Z}}/{{X}}/{{Y}}.{fmt}",
                                tile_size=VIEW_TILE, min_zoom=0, max_zoom=dz.level_count - 1 + OVERZOOM,
                                initial_resolution=zoom0 / VIEW_TILE, x_origin_offset=0, y_origin_offset=zoom0,
                                wrap_around=False, attribution="")
        renderer = p.add_tile(source, retina=False)
        renderer.name, renderer.alpha, renderer.visible = f"layer-{layer}", alpha, shown
    p.add_layout(ScaleBar(range=p.x_range, unit="µm", dimensional=MetricLength(), location="bottom_left",
                          bar_length=0.2, name="scale"))
    return json_item(p, "plot")


def _legend(summary: Mapping[str, Any]) -> str:
    areas, settings = summary.get("areas") or {}, summary.get("settings") or {}
    backend = (summary.get("model") or {}).get("backend") or {}
    rows = [("tissue", f"{_num(areas.get('tissue_area_mm2'), '.2f')} mm²"),
            ("tumour", f"{_num(areas.get('tumour_area_mm2'), '.2f')} mm²"),
            ("tumour / tissue", _num(areas.get("tumour_fraction_of_tissue"), ".3f")),
            ("regions", _num(areas.get("regions"), "d")),
            ("thresholds (low / high)", f"{settings.get('low', '–')} / {settings.get('high', '–')}"),
            ("pruning", str(settings.get("prune", "–"))),
            ("model", f"{backend.get('path', '–')} ({str(backend.get('sha256', ''))[:12]}…)")]
    swatches = ('<p><span class=swatch style="background:rgb(230,159,0)"></span>tumour (fill and contour) '
                '<span class=swatch style="background:rgb(0,114,178)"></span>tissue '
                '<span class=swatch style="background:linear-gradient(90deg,#00204d,#7c7b78,#ffea46)"></span>'
                'probability 0 → 1</p>')
    return swatches + "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def viewer_page(name: str, summary: Mapping[str, Any], dz: DeepZoom, demo_model: bool,
                review: Mapping[str, Any] | None, layers: Sequence[str] = tuple(LAYER_TEXT)) -> str:
    """``/slides/{name}/``."""
    mpp = float(((summary.get("slide") or {}).get("mpp_level0") or [1.0])[0])
    item = json.dumps(plot_json(name, dz, mpp, layers)).replace("</", "<\\/")
    banner = ('<div class=banner id=banner>Results of the bundled demonstration model, which is NOT a diagnostic '
              'model.</div>' if demo_model else "")
    controls = "".join(
        f'<div class=layer><label><input type=checkbox data-layer="{layer}"{" checked" if LAYER_TEXT[layer][2] else ""}>'
        f' {_e(LAYER_TEXT[layer][0])}</label><br><input type=range min=0 max=1 step=0.05 value="{LAYER_TEXT[layer][1]}"'
        f' data-opacity="{layer}" aria-label="opacity of {_e(layer)}"></div>' for layer in layers)
    verdict = (review or {}).get("verdict")
    radios = "".join(f'<label><input type=radio name=verdict value="{v}"{" checked" if v == verdict else ""}> '
                     f'{_e(t)}</label><br>' for v, t in VERDICT_TEXT.items())
    config = json.dumps({"name": name, "mpp": mpp, "width": dz.width, "height": dz.height})
    return f"""<!doctype html><html><head><meta charset=utf-8><title>{_e(name)} · tseg-rt viewer</title>
<link rel=icon href="data:,"><style>{STYLE}</style><script src="{BOKEH_JS}"></script></head><body>
{banner}<header><a href="../../">all slides</a><b>{_e(name)}</b><a href="tumour.geojson" download>GeoJSON for QuPath</a>
<span id=cursor>cursor: –</span><span>keys: + − zoom, Home: whole slide</span></header>
<main><div id=plot></div><aside><h2>Layers</h2>{controls}<h2>Legend</h2>{_legend(summary)}
<h2>Verdict</h2><form id=review>{radios}<textarea name=note rows=3 style="width:100%" placeholder="note"
>{_e((review or {}).get("note", ""))}</textarea><input name=reviewer placeholder="reviewer (optional)"
value="{_e((review or {}).get("reviewer", ""))}"><button type=submit>Save</button></form>
<p id=review-state>{_e(review_text(review))}</p></aside></main>
<script>
const CONFIG = {config};
const ITEM = {item};
function model(n) {{ return Bokeh.documents[0].get_model_by_name(n); }}
Bokeh.embed.embed_item(ITEM, "plot").then(() => {{
  const plot = model("plot"), x = model("x"), y = model("y");
  const home = [x.start, x.end, y.start, y.end];
  document.querySelectorAll("input[data-layer]").forEach(box => box.addEventListener("change", () => {{
    model("layer-" + box.dataset.layer).visible = box.checked; }}));
  document.querySelectorAll("input[data-opacity]").forEach(s => s.addEventListener("input", () => {{
    model("layer-" + s.dataset.opacity).alpha = Number(s.value); }}));
  function zoom(f) {{ const cx = (x.start + x.end) / 2, cy = (y.start + y.end) / 2;
    const hw = (x.end - x.start) / 2 * f, hh = (y.end - y.start) / 2 * f;
    x.setv({{start: cx - hw, end: cx + hw}}); y.setv({{start: cy - hh, end: cy + hh}}); }}
  document.addEventListener("keydown", ev => {{
    if (ev.target.tagName === "TEXTAREA" || ev.target.tagName === "INPUT") return;
    if (ev.key === "+" || ev.key === "=") zoom(0.5);
    else if (ev.key === "-") zoom(2);
    else if (ev.key === "Home") {{ x.setv({{start: home[0], end: home[1]}}); y.setv({{start: home[2], end: home[3]}}); }}
  }});
  plot.on_event("mousemove", ev => {{
    const px = ev.x / CONFIG.mpp, py = -ev.y / CONFIG.mpp;
    document.getElementById("cursor").textContent = (px < 0 || py < 0 || px > CONFIG.width || py > CONFIG.height)
      ? "cursor: outside the slide" : `cursor: x ${{Math.round(px)}} px, y ${{Math.round(py)}} px ` +
        `(${{(ev.x / 1000).toFixed(3)}} mm, ${{(-ev.y / 1000).toFixed(3)}} mm)`;
  }});
  document.body.dataset.ready = "1";
}});
document.getElementById("review").addEventListener("submit", async ev => {{
  ev.preventDefault();
  const form = new FormData(ev.target);
  const state = document.getElementById("review-state");
  const reply = await fetch("review", {{method: "PUT", headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{verdict: form.get("verdict"), note: form.get("note") || "",
                          reviewer: form.get("reviewer") || ""}})}});
  const body = await reply.json();
  state.textContent = reply.ok ? "saved: " + body.verdict + " at " + body.time : "not saved: " + body.detail;
  state.dataset.saved = reply.ok ? body.verdict : "";
}});
</script></body></html>"""
