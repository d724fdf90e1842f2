"""The page's HTTP side: Starlette routes over the catalogue, the renderer and the decisions database.

Every answer is JSON or a PNG; an error is a 4xx with a one-line ``{"error": ...}``, never a traceback.
URLs, bodies and logs name scans by ``series_key`` alone. Handlers are plain functions, which Starlette
runs in its thread pool, so a slow volume read never blocks another reader's request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline.config import Config
from pipeline.data.reasons import Reason
from pipeline.review import auth
from pipeline.review.agreement import disagreements, kappas
from pipeline.review.export import export_labels
from pipeline.review.render import Renderer, presets
from pipeline.review.store import DECISIONS, Decision, current, record
from pipeline.review.worklists import Catalogue, worklists

STATIC = Path(__file__).parent / "static"
FINDING_MAX = 2000
log = logging.getLogger(__name__)


@dataclass
class State:
    config: Config
    engine: Engine
    readers: auth.Readers
    catalogue: Catalogue
    renderer: Renderer
    export_to: Path


def _state(request: Request) -> State:
    return request.app.state.review


def _signed_in(request: Request, change: bool = False) -> tuple[auth.Reader, str]:
    """(reader, CSRF token) of the session; 401 without a live one, 403 for a state change without its token."""
    state = _state(request)
    found = auth.session(state.engine, request.cookies.get(auth.COOKIE))
    if found is None or found[0] not in state.readers.by_pseudonym:
        raise HTTPException(401, "sign in first")
    if change and not auth.csrf_ok(found[1], request.headers.get(auth.CSRF_HEADER)):
        raise HTTPException(403, f"missing or wrong {auth.CSRF_HEADER} header")
    return state.readers.by_pseudonym[found[0]], found[1]


def _reader(request: Request, change: bool = False) -> auth.Reader:
    return _signed_in(request, change)[0]


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def _scan(request: Request) -> str:
    key = request.path_params["key"]
    if key not in _state(request).catalogue.files:
        raise HTTPException(404, "no such scan")
    return key


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    try:
        return default if raw is None else int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer") from None


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def signin(request: Request) -> Response:
    """The token for a session cookie and the CSRF token the page must send back."""
    body = await _json(request)
    token = body.get("token")
    state = _state(request)
    reader = state.readers.find(token) if isinstance(token, str) and token else None
    if reader is None:
        raise HTTPException(401, "unknown token")
    cookie, csrf = auth.open_session(state.engine, reader, state.config.review.session_hours)
    response = JSONResponse({"reader": reader.name, "pseudonym": reader.pseudonym, "role": reader.role, "csrf": csrf})
    response.set_cookie(
        auth.COOKIE,
        cookie,
        max_age=int(state.config.review.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def signout(request: Request) -> Response:
    _reader(request, change=True)
    auth.close_session(_state(request).engine, request.cookies[auth.COOKIE])
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(auth.COOKIE)
    return response


def me(request: Request) -> Response:
    """Who is signed in, and the CSRF token again (a reloaded page has lost it)."""
    reader, csrf = _signed_in(request)
    return JSONResponse({"reader": reader.name, "pseudonym": reader.pseudonym, "role": reader.role, "csrf": csrf})


def lists(request: Request) -> Response:
    reader = _reader(request)
    state = _state(request)
    found = worklists(state.catalogue, current(state.engine), reader.pseudonym)
    return JSONResponse(found | {"prepared": asdict(state.renderer.prepared)})


def scan_info(request: Request) -> Response:
    """Slices and window presets of a scan, and the reader's own decision on it (never the score)."""
    reader = _reader(request)
    key = _scan(request)
    state = _state(request)
    mine = current(state.engine, key, reader.pseudonym)
    return JSONResponse(
        {
            "series_key": key,
            "slices": state.catalogue.slices[key],
            "presets": presets(state.catalogue.files[key].modality),
            "decision": mine[0].decision if mine else None,
            "finding": mine[0].finding if mine else "",
        }
    )


def image(request: Request) -> Response:
    _reader(request)
    key = _scan(request)
    state = _state(request)
    preset = request.query_params.get("preset") or presets(state.catalogue.files[key].modality)[0]
    try:
        png = state.renderer.png(key, _int(request, "slice", 0), preset)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    if isinstance(png, Reason):
        return JSONResponse({"error": "the scan's file cannot be shown", "reason": str(png)}, status_code=409)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


async def decide(request: Request) -> Response:
    """One decision, written in one transaction; it replaces the reader's previous one (kept as history)."""
    reader = _reader(request, change=True)
    key = _scan(request)
    body = await _json(request)
    decision, finding, seconds = body.get("decision"), body.get("finding", ""), body.get("seconds")
    if decision not in DECISIONS:
        raise HTTPException(400, f"decision must be one of {', '.join(DECISIONS)}")
    if not isinstance(finding, str) or len(finding) > FINDING_MAX:
        raise HTTPException(400, f"finding must be text of at most {FINDING_MAX} characters")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0):
        raise HTTPException(400, "seconds must be a number of seconds, 0 or more")
    made = Decision(key, reader.pseudonym, reader.role, decision, finding.strip(), seconds, dt.datetime.now(dt.UTC))
    record(_state(request).engine, made)
    return JSONResponse({"series_key": key, "decision": decision, "decided_at": made.decided_at.isoformat()}, 201)


def agreement(request: Request) -> Response:
    """Kappa per pair of readers (pseudonyms) and the disagreements, unsettled and settled."""
    _reader(request)
    decisions = current(_state(request).engine)
    unsettled, settled = disagreements(decisions)
    return JSONResponse(
        {
            "pairs": [{"a": p.a, "b": p.b, "scans": p.scans, "kappa": p.kappa} for p in kappas(decisions)],
            "disagreements": unsettled,
            "settled": settled,
        }
    )


def export(request: Request) -> Response:
    _reader(request, change=True)
    state = _state(request)
    result = export_labels(state.config, state.engine, state.export_to)
    return JSONResponse({"normal": result.normal, "abnormal": result.abnormal, "readers": result.readers})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def _bug(request: Request, exc: Exception) -> Response:
    log.exception("review: %s %s failed", request.method, request.url.path)
    return JSONResponse({"error": "internal error (see the server log)"}, status_code=500)


@contextlib.asynccontextmanager
async def _preparing(app: Starlette) -> AsyncIterator[None]:
    """While the server runs, a thread verifies and unpacks the worklists' scans in the order readers meet
    them (to label, then flagged), so that most first images are ready before they are asked for."""
    state: State = app.state.review
    stop = threading.Event()
    order = [*state.catalogue.to_label, *(key for key, _ in state.catalogue.flagged)]
    thread = threading.Thread(target=state.renderer.prepare, args=(order, stop), name="review-prepare", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()  # the scan being read is finished (its write is atomic), the rest are left
        thread.join()


def build_app(state: State) -> Starlette:
    routes = [
        Route("/", index),
        Route("/api/signin", signin, methods=["POST"]),
        Route("/api/signout", signout, methods=["POST"]),
        Route("/api/me", me),
        Route("/api/worklists", lists),
        Route("/api/agreement", agreement),
        Route("/api/export", export, methods=["POST"]),
        Route("/api/scans/{key}", scan_info),
        Route("/api/scans/{key}/image.png", image),
        Route("/api/scans/{key}/decision", decide, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: _http_error, Exception: _bug}, lifespan=_preparing
    )
    app.state.review = state
    return app
