"""``report.html``: one self-contained static page for a cohort (see :mod:`tseg.runtime.cohort.report`).

What the page holds, and why:

* the cohort's totals, the failed slides with their reasons and the slides to review first are
  written as HTML by Python (readable with JavaScript off); at most :data:`LISTED` of each are
  listed, the rest are one click away in the table;
* the table is built by the inline script from the rows embedded as JSON (columns once, then
  one array per slide: a few hundred bytes a slide, a few MB for 10,000 slides), and is sorted
  (click a column), filtered (text, status) and paged in the browser, so only one page of rows
  and thumbnails is ever in the document;
* the view (filter, status, sort, page, page size) is kept in the address's ``#`` fragment, so a
  view can be bookmarked or sent, and opening ``report.html#status=failed`` shows the failures;
* a Content-Security-Policy allows inline code and style and images from the report's own
  folder only: the page can fetch nothing from a network.
"""

from __future__ import annotations

import html
import json
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from tseg.runtime.util.display import printable

#: How many failed / to-review slides the page lists above the table.
LISTED = 100

#: Columns the table shows (key, heading, kind), in order; ``thumb`` and ``name`` are links.
TABLE_COLUMNS = (
    ("thumb", "", "thumb"),
    ("name", "slide", "text"),
    ("status", "status", "text"),
    ("review", "review first", "text"),
    ("verdict", "verdict", "text"),
    ("tissue_area_mm2", "tissue mm²", "num"),
    ("tumour_area_mm2", "tumour mm²", "num"),
    ("tumour_fraction", "tumour fraction", "num"),
    ("regions", "regions", "num"),
    ("tiles_run", "tiles run", "num"),
    ("tiles_skipped_background", "tiles skipped", "num"),
    ("total_s", "seconds", "num"),
    ("failure_reason", "failure reason", "text"),
)

#: Row fields embedded in the page (the table's columns plus what the filter searches).
FIELDS = ("name", "status", "review", "verdict", "tissue_area_mm2", "tumour_area_mm2", "tumour_fraction", "regions",
          "tiles_run", "tiles_skipped_background", "total_s", "failure_reason", "folder", "thumb", "slide",
          "warnings", "mpp_source", "model_sha256")

CSP = ("default-src 'none'; img-src 'self' data: file:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")

STYLE = """
:root { --fg:#1d2330; --muted:#5d6575; --line:#d9dde5; --bg:#f6f7f9; --bad:#b3261e; --warn:#8a5a00; --ok:#1e6b34; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); margin: 0;
       background: #fff; }
header, section { padding: 12px 24px; }
header { background: var(--bg); border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 8px 0; }
.muted { color: var(--muted); }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 10px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; min-width: 120px; }
.card b { display: block; font-size: 18px; }
.card.bad b { color: var(--bad); } .card.warn b { color: var(--warn); }
ul.list { margin: 4px 0; padding-left: 20px; max-height: 260px; overflow: auto; }
ul.list li { margin: 2px 0; }
.reason { color: var(--bad); } .flag { color: var(--warn); }
.controls { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 8px 0; }
.controls input[type=search] { width: 280px; padding: 4px 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 6px; text-align: left; vertical-align: middle; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
th button { all: unset; cursor: pointer; font-weight: 600; }
th button:focus-visible { outline: 2px solid #4a7; }
th[aria-sort=ascending] button::after { content: " ▲"; } th[aria-sort=descending] button::after { content: " ▼"; }
td.thumb { width: 132px; } td.thumb img { display: block; max-width: 120px; max-height: 96px; }
tr.failed td, tr.unreadable td, tr.not-run td { background: #fdf1f0; } tr.running td { background: #fdf8ea; }
.status-done { color: var(--ok); } .status-failed, .status-unreadable, .status-not-run { color: var(--bad); font-weight: 600; }
.status-running { color: var(--warn); font-weight: 600; }
.pager button { min-width: 32px; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tseg-data").textContent);
  var cols = data.columns, index = {};
  cols.forEach(function (c, i) { index[c] = i; });
  var rows = data.rows.map(function (r) {
    var o = {};
    cols.forEach(function (c, i) { o[c] = r[i]; });
    o._text = [o.name, o.slide, o.status, o.review, o.failure_reason, o.warnings, o.mpp_source,
               o.model_sha256].join(" ").toLowerCase();
    return o;
  });
  var table = data.table, kinds = {};
  table.forEach(function (t) { kinds[t[0]] = t[2]; });
  var state = { q: "", status: "all", sort: "name", dir: "asc", page: 1, size: 50 };
  var SIZES = [25, 50, 100, 250];
  var $ = function (id) { return document.getElementById(id); };

  function readHash() {
    var h = location.hash.replace(/^#/, "");
    var p = new URLSearchParams(h);
    state.q = p.get("q") || "";
    state.status = ["all", "done", "failed", "unreadable", "running", "not run", "review"].indexOf(p.get("status")) >= 0 ? p.get("status") : "all";
    state.sort = kinds[p.get("sort")] && kinds[p.get("sort")] !== "thumb" ? p.get("sort") : "name";
    state.dir = p.get("dir") === "desc" ? "desc" : "asc";
    var size = parseInt(p.get("size"), 10);
    state.size = SIZES.indexOf(size) >= 0 ? size : 50;
    var page = parseInt(p.get("page"), 10);
    state.page = page > 0 ? page : 1;
  }
  function writeHash() {
    var p = new URLSearchParams();
    if (state.q) p.set("q", state.q);
    if (state.status !== "all") p.set("status", state.status);
    if (state.sort !== "name" || state.dir !== "asc") { p.set("sort", state.sort); p.set("dir", state.dir); }
    if (state.size !== 50) p.set("size", String(state.size));
    if (state.page !== 1) p.set("page", String(state.page));
    var h = p.toString();
    history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
  }
  function compare(key, dir) {
    var sign = dir === "desc" ? -1 : 1, num = kinds[key] === "num";
    return function (a, b) {
      var x = a[key], y = b[key];
      var xm = x === null || x === undefined || x === "", ym = y === null || y === undefined || y === "";
      if (xm || ym) { return xm && ym ? 0 : xm ? 1 : -1; }  // empty cells last, either direction
      if (num) { return sign * (x - y); }
      return sign * String(x).localeCompare(String(y), undefined, { numeric: true, sensitivity: "base" });
    };
  }
  function selected() {
    var q = state.q.trim().toLowerCase(), st = state.status;
    var out = rows.filter(function (r) {
      if (st === "review" ? !r.review : st !== "all" && r.status !== st) return false;
      return !q || r._text.indexOf(q) >= 0;
    });
    out.sort(compare(state.sort, state.dir));
    return out;
  }
  function fmt(value, key) {
    if (value === null || value === undefined || value === "") return "";
    if (key === "tumour_fraction") return (100 * value).toFixed(1) + " %";
    if (key === "tissue_area_mm2" || key === "tumour_area_mm2") return Number(value).toFixed(2);
    if (key === "total_s") return Number(value).toFixed(1);
    return String(value);
  }
  // served by `tseg-rt view` (over HTTP), a row leads to the slide's viewer; as a file, to its folder
  function href(folder) { return (location.protocol.indexOf("http") === 0 ? "slides/" : "") + encodeURIComponent(folder) + "/"; }
  function cell(tr, cls) { var td = document.createElement("td"); if (cls) td.className = cls; tr.appendChild(td); return td; }
  function render() {
    var list = selected();
    var pages = Math.max(1, Math.ceil(list.length / state.size));
    if (state.page > pages) state.page = pages;
    var start = (state.page - 1) * state.size, shown = list.slice(start, start + state.size);
    var body = $("rows");
    var fragment = document.createDocumentFragment();
    shown.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.className = String(r.status).replace(/ /g, "-");
      tr.dataset.name = r.name;
      table.forEach(function (t) {
        var key = t[0], kind = t[2];
        var td = cell(tr, kind === "num" ? "num" : kind === "thumb" ? "thumb" : "");
        if (kind === "thumb") {
          if (r.thumb && r.folder) {
            var a = document.createElement("a"); a.href = href(r.folder); a.title = "open " + r.folder;
            var img = document.createElement("img"); img.loading = "lazy"; img.alt = "overlay of " + r.name;
            img.src = r.thumb.split("/").map(encodeURIComponent).join("/");
            a.appendChild(img); td.appendChild(a);
          }
        } else if (key === "name") {
          if (r.folder) { var l = document.createElement("a"); l.href = href(r.folder); l.textContent = r.name; td.appendChild(l); }
          else { td.textContent = r.name; }
          td.title = r.slide || "";
        } else if (key === "status") {
          td.textContent = r.status; td.className = "status-" + String(r.status).replace(/ /g, "-");
        } else if (key === "review") {
          td.textContent = r.review || ""; td.className = "flag";
        } else if (key === "failure_reason") {
          td.textContent = r.failure_reason || ""; td.className = "reason";
        } else {
          td.textContent = fmt(r[key], key);
        }
      });
      fragment.appendChild(tr);
    });
    body.replaceChildren(fragment);
    document.querySelectorAll("#table th[data-key]").forEach(function (th) {
      var key = th.dataset.key;
      th.setAttribute("aria-sort", key === state.sort ? (state.dir === "asc" ? "ascending" : "descending") : "none");
    });
    $("count").textContent = list.length === 0 ? "no slide matches" :
      "slides " + (start + 1) + "-" + (start + shown.length) + " of " + list.length +
      (list.length !== rows.length ? " (of " + rows.length + ")" : "");
    $("page").textContent = "page " + state.page + " of " + pages;
    $("first").disabled = $("prev").disabled = state.page <= 1;
    $("next").disabled = $("last").disabled = state.page >= pages;
    $("q").value = state.q; $("status").value = state.status; $("size").value = String(state.size);
    document.body.dataset.ready = "1";
  }
  function update(changes, keepPage) {
    Object.keys(changes).forEach(function (k) { state[k] = changes[k]; });
    if (!keepPage) state.page = 1;
    writeHash();
    render();
  }
  var head = $("head");
  table.forEach(function (t) {
    var th = document.createElement("th");
    if (t[2] === "num") th.className = "num";
    if (t[2] !== "thumb") {
      th.dataset.key = t[0];
      var b = document.createElement("button"); b.type = "button"; b.textContent = t[1];
      b.addEventListener("click", function () {
        update({ sort: t[0], dir: state.sort === t[0] && state.dir === "asc" ? "desc" : (state.sort === t[0] ? "asc" : (t[2] === "num" ? "desc" : "asc")) });
      });
      th.appendChild(b);
    }
    head.appendChild(th);
  });
  var typing = null;
  $("q").addEventListener("input", function (e) {
    clearTimeout(typing);
    var value = e.target.value;
    typing = setTimeout(function () { update({ q: value }); }, 120);
  });
  $("status").addEventListener("change", function (e) { update({ status: e.target.value }); });
  $("size").addEventListener("change", function (e) { update({ size: parseInt(e.target.value, 10) }); });
  $("first").addEventListener("click", function () { update({ page: 1 }, true); });
  $("prev").addEventListener("click", function () { update({ page: state.page - 1 }, true); });
  $("next").addEventListener("click", function () { update({ page: state.page + 1 }, true); });
  $("last").addEventListener("click", function () { update({ page: 1e9 }, true); });
  window.addEventListener("hashchange", function () { readHash(); render(); });
  readHash();
  render();
})();
"""


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such values become empty cells."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def _json_for_script(data: Any) -> str:
    """JSON that cannot close its ``<script>`` element (``<`` written as ``\\u003c``)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _fmt(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


#: Columns whose text comes from file names or messages naming them: shown with control
#: characters, bidirectional overrides and bytes that are not UTF-8 escaped (``\\u202e``), as the logs do.
SHOWN_ESCAPED = ("name", "slide", "failure_reason", "warnings")


def _shown(field: str, value: Any) -> Any:
    return printable(value) if field in SHOWN_ESCAPED and isinstance(value, str) else value


def _link(folder: str, text: str) -> str:
    if not folder:
        return html.escape(printable(text))
    return f'<a href="{html.escape(quote(folder, errors="surrogateescape"))}/">{html.escape(printable(text))}</a>'


def render_page(rows: Sequence[Mapping[str, Any]], totals: Mapping[str, Any], thumbs: Mapping[str, str],
                title: str, generated: str, review_margin: float, demo_model: bool = False) -> str:
    """The HTML text of ``report.html``."""
    e = html.escape
    failed = [r for r in rows if r["status"] in ("failed", "unreadable")]
    unfinished = [r for r in rows if r["status"] in ("running", "not run")]
    review = [r for r in rows if r["review"]]
    data = {
        "columns": list(FIELDS),
        "rows": [[(thumbs.get(r["folder"], "") if f == "thumb" else _shown(f, _finite(r.get(f)))) for f in FIELDS]
                 for r in rows],
        "table": [list(t) for t in TABLE_COLUMNS],
    }
    t = totals
    models = t["models"]
    cards = [
        ("slides", f"{t['slides']:,}", ""),
        ("finished", f"{t['done']:,}", ""),
        ("failed", f"{t['failed'] + t['unreadable']:,}", "bad" if failed else ""),
        *([("not run", f"{t['not_run']:,}", "bad" if t["not_run"] else ""),
           ("running", f"{t['running']:,}", "warn" if t["running"] else "")] if t.get("cohort") else []),
        ("to review first", f"{t['review']:,}", "warn" if review else ""),
        ("tissue mm²", _fmt(t["tissue_area_mm2"], 1), ""),
        ("tumour mm²", _fmt(t["tumour_area_mm2"], 1), ""),
        ("tumour / tissue (pooled)", "n/a" if t["tumour_fraction_pooled"] is None
         else f"{100 * t['tumour_fraction_pooled']:.1f} %", ""),
        ("median tumour fraction", "n/a" if t["tumour_fraction_median"] is None
         else f"{100 * t['tumour_fraction_median']:.1f} %", ""),
        ("tiles run / skipped", f"{t['tiles_run']:,} / {t['tiles_skipped_background']:,}", ""),
        ("compute hours", f"{t['compute_s'] / 3600:,.2f}", ""),
        ("models", f"{len(models)}", "warn" if len(models) > 1 else ""),
    ]
    card_html = "".join(f'<div class="card {cls}" data-total="{e(label)}"><b>{e(value)}</b>'
                        f'<span class="muted">{e(label)}</span></div>' for label, value, cls in cards)
    notes = []
    if len(models) > 1:
        notes.append(f"results were made with {len(models)} different model files: "
                     + ", ".join(m[:12] + "…" for m in models))
    if len(t["thresholds"]) > 1:
        notes.append("results were made with different thresholds (low/high): " + ", ".join(t["thresholds"]))
    if t.get("outside"):
        notes.append(f"{t['outside']:,} result(s) in this folder are for slides outside the cohort, not listed")
    notes_html = "".join(f'<p class="flag">{e(n)}</p>' for n in notes)
    demo_html = ('<p class="flag">Some results were made with the bundled demonstration model, which is NOT a '
                 'diagnostic model.</p>' if demo_model else "")

    def listing(items: Sequence[Mapping[str, Any]], what: str, status: str) -> str:
        if not items:
            return ""
        lis = []
        for r in items[:LISTED]:
            text = r["review"] if what == "review" else r["failure_reason"] or r["status"]
            cls = "flag" if what == "review" else "reason"
            lis.append(f"<li>{_link(r['folder'], r['name'])} — <span class=\"{cls}\">{e(printable(str(text)))}</span></li>")
        more = (f'<p>… and {len(items) - LISTED:,} more: <a href="#status={status}">show them all in the table</a></p>'
                if len(items) > LISTED else f'<p><a href="#status={status}">show them in the table</a></p>')
        heading = (f"Failed slides ({len(items):,})" if what == "failed"
                   else f"Not finished ({len(items):,}): not run, or still running" if what == "unfinished"
                   else f"Review first ({len(items):,}): no tissue, tumour fraction within "
                        f"{100 * review_margin:g} % of 0 or 1, resolution overridden, colours corrected")
        return (f'<section id="{what}"><h2>{e(heading)}</h2><ul class="list">{"".join(lis)}</ul>{more}</section>')

    statuses = (("all", "all slides"), ("done", "finished"), ("failed", "failed"), ("unreadable", "unreadable"),
                *((("not run", "not run"), ("running", "running")) if t.get("cohort") else ()),
                ("review", "review first"))
    options = "".join(f'<option value="{e(v)}">{e(label)}</option>' for v, label in statuses)
    sizes = "".join(f'<option value="{n}"{" selected" if n == 50 else ""}>{n} a page</option>' for n in (25, 50, 100, 250))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="tseg-rt">
<title>{e(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>{e(title)}</h1>
<div class="muted">generated {e(generated)} · every row is also in <a href="cohort.csv">cohort.csv</a></div>
{demo_html}
<div class="cards" id="totals">{card_html}</div>
{notes_html}
</header>
{listing(failed, "failed", "failed")}
{listing(unfinished, "unfinished", "not%20run")}
{listing(review, "review", "review")}
<section id="table-section">
<h2>All slides</h2>
<noscript><p class="flag">The table needs JavaScript; cohort.csv holds every row.</p></noscript>
<div class="controls">
<input type="search" id="q" placeholder="filter: name, status, reason, review…" aria-label="filter">
<select id="status" aria-label="status">{options}</select>
<select id="size" aria-label="rows a page">{sizes}</select>
<span class="pager"><button type="button" id="first" aria-label="first page">«</button>
<button type="button" id="prev" aria-label="previous page">‹</button>
<span id="page"></span>
<button type="button" id="next" aria-label="next page">›</button>
<button type="button" id="last" aria-label="last page">»</button></span>
<span id="count" class="muted"></span>
</div>
<table id="table"><thead><tr id="head"></tr></thead><tbody id="rows"></tbody></table>
</section>
<script type="application/json" id="tseg-data">{_json_for_script(data)}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""
