"""The viewer's HTTP application (FastAPI, with ``serve``'s access rules and problem+json errors).

Routes (openslide-python's Deep Zoom URL conventions for the tiles)::

    GET /                                       the slides, with their review state
    GET /slides/{name}/                         the viewer page
    GET /slides/{name}/{layer}.dzi              Deep Zoom descriptor (layer: slide, probability, mask, tissue)
    GET /slides/{name}/{layer}_files/{level}/{col}_{row}.{jpeg|png}
    GET /slides/{name}/tumour.geojson           the polygons, for QuPath
    GET /slides/{name}/review, PUT ...          the reviewer's verdict (JSON)
    GET /static/bokeh/js/...                    BokehJS, from the installed ``bokeh`` package

Unknown slides and tiles outside the image are 404; a level or tile address that is not a number
is 400 (``bad_tile``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from fastapi import Body, FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tseg.runtime.cohort.report import REPORT_DIR, REPORT_HTML, REVIEW_TEXT, THUMBS_DIR, review_flags, row_from_summary
from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.outputs.review import read_review, write_review
from tseg.runtime.service.access import Access
from tseg.runtime.service.middleware import MAX_REQUESTS, AccessGuard, BodyLimit, ProblemsOnly, RequestLimit
from tseg.runtime.service.problems import Problem, install
from tseg.runtime.service.viewer.deepzoom import TileOutOfRange
from tseg.runtime.service.viewer.library import LAYERS, Library
from tseg.runtime.service.viewer.page import index_page, viewer_page

TILE = re.compile(r"^(?P<col>[^_]*)_(?P<row>[^_.]*)\.(?P<fmt>[a-z]+)$")
NO_STORE = {"Cache-Control": "no-store"}
TILE_CACHE = {"Cache-Control": "private, max-age=300"}


def _number(value: str, what: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise Problem("bad_tile", f"the tile {what} must be a whole number, not {value!r} (Deep Zoom URLs are "
                                  "{layer}_files/{level}/{column}_{row}.{format})")
    return int(value)


def bundled_model_sha256() -> str | None:
    """The bundled demonstration model's SHA-256 (its results get the "NOT a diagnostic model" banner)."""
    from tseg.runtime.execution.backends.base import file_sha256
    from tseg.runtime.models import default_model_path

    try:
        return file_sha256(default_model_path())
    except OSError:
        return None


def create_viewer_app(library: Library, token: str | None = None, demo_model_sha256: str | None = None) -> FastAPI:
    """The application over ``library``; ``demo_model_sha256``: the bundled model (its results get a banner)."""
    import bokeh
    from starlette.staticfiles import StaticFiles

    app = FastAPI(title="tseg-rt viewer", docs_url=None, redoc_url=None, openapi_url=None)
    install(app)
    # serve's middleware, in the same order: access checked before routing (static files too),
    # body and request limits, every error as problem+json.
    app.add_middleware(BodyLimit)
    app.add_middleware(AccessGuard, access=Access(token))
    app.add_middleware(RequestLimit, limit=MAX_REQUESTS)
    app.add_middleware(ProblemsOnly)
    app.mount("/static/bokeh", StaticFiles(directory=Path(bokeh.__file__).parent / "server" / "static"),
              name="bokeh")

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        rows = []
        for name in library.names():
            try:
                summary = library.summary(name)
                review = read_review(library.folder(name))
            except Exception as exc:  # one bad result never hides the others
                rows.append({"name": name, "error": str(exc)})
                continue
            flags = review_flags(row_from_summary(name, summary))
            rows.append({"name": name, "summary": summary, "review": review,
                         "flags": "; ".join(REVIEW_TEXT[f] for f in flags)})
        return HTMLResponse(index_page(rows), headers=NO_STORE)

    @app.get("/report.html", response_class=HTMLResponse)
    def report() -> Response:
        """The cohort report, whose rows then lead to the viewer (read without following links)."""
        return Response(_results_file(library, REPORT_HTML), media_type="text/html", headers=NO_STORE)

    @app.get(f"/{REPORT_DIR}/{THUMBS_DIR}/{{file}}")
    def thumbnail(file: str) -> Response:
        if not file.endswith(".jpg") or file.startswith(".") or "/" in file:
            raise Problem("not_found", f"no thumbnail {file!r}")
        return Response(_results_file(library, f"{REPORT_DIR}/{THUMBS_DIR}/{file}"), media_type="image/jpeg")

    @app.get("/slides/{name}")
    def slash(name: str) -> RedirectResponse:
        return RedirectResponse(f"{quote(name)}/")

    @app.get("/slides/{name}/", response_class=HTMLResponse)
    def viewer(name: str) -> HTMLResponse:
        opened = library.result(name)
        demo = demo_model_sha256 is not None and _model_sha(opened.summary) == demo_model_sha256
        return HTMLResponse(viewer_page(name, opened.summary, library.deepzoom(name, "slide"), demo,
                                        read_review(opened.folder)), headers=NO_STORE)

    @app.get("/slides/{name}/tumour.geojson")
    def geojson(name: str) -> Response:
        return Response(library.geojson(name), media_type="application/geo+json",
                        headers={"Content-Disposition": f'attachment; filename="{name}.geojson"'})

    @app.get("/slides/{name}/review")
    def get_review(name: str) -> dict[str, Any]:
        library.summary(name)
        return read_review(library.folder(name)) or {"verdict": None}

    @app.put("/slides/{name}/review")
    def put_review(name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        library.summary(name)
        try:
            return write_review(library.folder(name), body.get("verdict"), body.get("note") or "",
                                body.get("reviewer") or "")
        except InvalidArgumentError as exc:
            raise Problem("invalid_review", str(exc)) from None

    @app.get("/slides/{name}/{descriptor}.dzi")
    def dzi(name: str, descriptor: str) -> Response:
        return Response(library.deepzoom(name, descriptor).dzi(), media_type="application/xml", headers=NO_STORE)

    @app.get("/slides/{name}/{files}/{level}/{address}")
    def tile(name: str, files: str, level: str, address: str) -> Response:
        layer = files[: -len("_files")] if files.endswith("_files") else ""
        if layer not in LAYERS:
            raise Problem("not_found", f"no such resource: {files} (the layers are {', '.join(LAYERS)})")
        match = TILE.match(address)
        if match is None:
            raise Problem("bad_tile", f"{address!r} is not a tile address ({{column}}_{{row}}.{LAYERS[layer]})")
        lvl, col, row = _number(level, "level"), _number(match["col"], "column"), _number(match["row"], "row")
        if match["fmt"] != LAYERS[layer]:
            raise Problem("not_found", f"the {layer} layer's tiles are .{LAYERS[layer]}, not .{match['fmt']}")
        return _tile_response(name, LAYERS[layer], lambda: library.tile(name, layer, lvl, col, row))

    @app.get("/slides/{name}/view/{layer}/{level}/{col}/{address}")
    def view_tile(name: str, layer: str, level: str, col: str, address: str) -> Response:
        row, _, fmt = address.partition(".")
        lvl, c, r = _number(level, "level"), _number(col, "column"), _number(row, "row")
        if layer not in LAYERS or fmt != LAYERS[layer]:
            raise Problem("not_found", f"no such layer or format: {layer}, .{fmt}")
        return _tile_response(name, fmt, lambda: library.view_tile(name, layer, lvl, c, r))

    return app


def _tile_response(name: str, fmt: str, fetch: Callable[[], bytes]) -> Response:
    """A tile's bytes as a cacheable image response; a tile outside its level is a 404."""
    try:
        data = fetch()
    except TileOutOfRange as exc:
        raise Problem("not_found", f"{name}: {exc}") from None
    return Response(data, media_type=f"image/{fmt}", headers=TILE_CACHE)


def _results_file(library: Library, relative: str) -> bytes:
    """A file of the report inside the results folder, never through a link; 404 when absent."""
    from tseg.runtime.util.safeio import UnsafeFileError, read_bytes

    try:
        return read_bytes(library.root / relative, follow=False, below=library.root, limit=None)
    except (OSError, UnsafeFileError):
        raise Problem("not_found", f"{library.root / relative} is missing: make the report with `tseg-rt report "
                                   f"{library.root}`") from None


def _model_sha(summary: dict[str, Any]) -> str:
    backend = (summary.get("model") or {}).get("backend") or {}
    return str(backend.get("sha256") or "")
