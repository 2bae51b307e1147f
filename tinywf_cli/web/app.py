"""The HTTP face of a store: the JSON API, the HTML pages and signed links, over one ``Runtime``.

Each API route makes one ``Runtime`` call and answers with the document the CLI prints with
``--json`` (``model_dump(mode="json")`` of what ``Runtime`` returns). A ``TinyWFError``
becomes an HTTP status in one place, ``http_status``, from its ``exit_code``. ``Gate``
(``gate.py``) wraps it all: the token, the body cap, the headers, the access log.
"""

from __future__ import annotations

import hmac
import sys
import threading
import traceback
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import parse_qs, quote

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tinywf_cli import __version__
from tinywf_cli.authoring.loader import FlowLoader, WorkflowClass, split_flow_spec
from tinywf_cli.errors import (
    BadInput,
    FlowLoadError,
    InvalidValue,
    ResumeNotFound,
    RunNotFound,
    StatusConflict,
    TinyWFError,
)
from tinywf_cli.filters import RunFilter, parse_tag_options
from tinywf_cli.model import PendingResume, RunDocument, RunList, ShowDocument, SignalDocument, Status
from tinywf_cli.reading.sources import read_store
from tinywf_cli.runtime.runtime import Runtime
from tinywf_cli.web import pages
from tinywf_cli.web.forms import form_for, parse_answer
from tinywf_cli.web.gate import DEFAULT_MAX_BODY, ASGIApp, Gate, Settings
from tinywf_cli.web.links import Link, LinkRefused, LinkSigner, link_key, removed
from tinywf_cli.web.pages import Graph

# -- the one place an error becomes an HTTP status ----------------------------------------------------


def http_status(exc: TinyWFError) -> int:
    """The HTTP status for an error, from its exit code: 2 → 400 (422 when a value failed
    validation), 3 → 404, 4 → 409, 5 → 503; 1 (a run that cannot go on) → 409; a bug → 500."""
    if isinstance(exc, InvalidValue):
        return 422
    return {1: 409, 2: 400, 3: 404, 4: 409, 5: 503}.get(exc.exit_code, 500)


class ErrorDetail(BaseModel):
    """What went wrong: the error's class, the CLI's message, and the exit code the CLI would use."""

    type: str
    message: str
    exit_code: int


class ErrorBody(BaseModel):
    """Every error answer of the API: ``{"error": {"type", "message", "exit_code"}}``."""

    error: ErrorDetail


def error_response(exc: TinyWFError, status: int | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON answer for an error."""
    body = {"error": {"type": type(exc).__name__, "message": exc.message, "exit_code": exc.exit_code}}
    return JSONResponse(body, status_code=status or http_status(exc), headers=headers)


# -- request bodies ------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartBody(_Body):
    """``POST /api/runs``: what ``tinywf run FLOW --input JSON --run-id ID`` takes."""

    flow: str = Field(description="`path.py` or `path.py:Class`, under the server's --flows directory "
                                  "(relative to it, or to the server's working directory).")
    input: dict[str, Any] | None = Field(default=None, description="The run's input (a JSON object).")
    run_id: str | None = Field(default=None, description="Give the run this id (default: generated).")


class ValueBody(_Body):
    """``resolve`` and ``send``: the event's value, any JSON."""

    value: Any = Field(description="The event's value; validated against the wait's type.")


class CancelBody(_Body):
    """``cancel``: why, for the audit log."""

    reason: str | None = None


#: Answers every API route may give besides its success.
def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    words = {400: "Bad usage or bad input (exit 2)", 401: "No token, or a wrong one",
             404: "No such run, pending event or signal (exit 3)",
             409: "Locked, taken, or not allowed in the run's status (exit 4)",
             413: "The request body is too large", 422: "A value failed validation (exit 2)",
             503: "The run's record cannot be read or written (exit 5)"}
    return {code: {"model": ErrorBody, "description": words[code]} for code in (401, 413, 503, *codes)}


def document(model: BaseModel, status: int = 200) -> JSONResponse:
    """A document as the CLI prints it with ``--json``."""
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


# -- serving state ----------------------------------------------------------------------------------------


class SerialLoader(FlowLoader):
    """A ``FlowLoader`` safe to share between the server's threads: one flow file is loaded at a time."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()

    def load(self, spec: str) -> tuple[WorkflowClass, Any, str]:
        """``FlowLoader.load``, one thread at a time."""
        with self._lock:
            return super().load(spec)

    def resolve(self, ref: Any, run_id: str) -> WorkflowClass:
        """``FlowLoader.resolve``, one thread at a time."""
        with self._lock:
            return super().resolve(ref, run_id)


def statuses() -> list[str]:
    """The statuses a run can be in (as the engine defines them), and ``unreadable``."""
    return [*get_args(Status), "unreadable"]


def flow_under(flows_dir: Path, spec: str) -> str:
    """``spec`` (``path.py[:Class]``, relative to ``flows_dir`` or to the working directory) as an
    absolute spec, if the file it names — symlinks and ``..`` resolved — is inside ``flows_dir``."""
    text, name = split_flow_spec(spec)
    root = flows_dir.resolve()
    if not text.strip() or "\x00" in text:
        raise BadInput("flow must name a flow file, e.g. guess_game.py")
    bases = [Path(text)] if Path(text).is_absolute() else [root / text, Path.cwd() / text]
    inside = False
    for base in bases:
        for candidate in (base,) if text.endswith(".py") else (base, Path(f"{base}.py")):
            try:
                path = candidate.resolve()
            except (OSError, RuntimeError):  # a symlink loop
                continue
            if not path.is_relative_to(root):
                continue
            inside = True
            try:
                found = path.is_file()
            except OSError as exc:  # a name too long, a path through a file: no flow there
                raise FlowLoadError(f"flow file '{text[:200]}' cannot be read: {exc.strerror}") from None
            if found:
                return f"{path}:{name}" if name else str(path)
    if inside:
        raise FlowLoadError(f"flow file '{text}' not found under {flows_dir}")
    raise BadInput(f"only flows under {flows_dir} can be started; '{text}' is not there")


def children_of(doc: ShowDocument) -> list[str]:
    """Child runs a document names: a ``children`` key, pending ``child`` resumes, ``child*`` log entries."""
    found: dict[str, None] = {}
    for child in getattr(doc, "children", None) or []:
        found[str(getattr(child, "run_id", child))] = None
    for pending in doc.pending:
        kind: str = pending.kind  # newer engines add kinds (``child``)
        child = (pending.request or {}).get("run_id")
        if kind == "child" and isinstance(child, str):
            found[child] = None
    for entry in doc.logs:
        run_id = entry.values.get("run_id") or entry.values.get("child")
        if entry.type.startswith("child") and isinstance(run_id, str) and run_id != doc.run_id:
            found[run_id] = None
    return list(found)


class Web:
    """What the routes share: the runtime and the settings."""

    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        runtime._loader = SerialLoader()  # the server's threads share one runtime
        self.runtime = runtime
        self.settings = settings

    def signer(self) -> LinkSigner:
        """Checks link tokens with the store's key as it is now.

        Read at every use, never kept: a key removed (rotated) or left readable by others
        takes effect on a running server at once. The stores make the read cheap (the file
        store re-reads its key file only when the file's status changed).
        """
        return LinkSigner(link_key(self.runtime.store))

    def list_runs(self, status: str | None, tags: Sequence[str] = ()) -> RunList:
        """The runs in ``status`` (all when None) with every one of ``tags`` (``KEY=VALUE``), newest first
        (``Runtime.list``), read as ``tinywf list`` reads them: one statement on PostgreSQL, where
        ``Runtime.list`` makes one per run."""
        select = RunFilter(tags=parse_tag_options(tags, "tag"), statuses=frozenset({status} if status else ()))
        rows = read_store(self.runtime.store, lambda source: source.list_runs(select))
        if rows is None:
            return self.runtime.select(select)
        return RunList.model_validate({"runs": [{"run_id": r.run_id, "workflow": r.workflow, "status": r.status,
                                                 "step": r.step, "updated_at": r.updated_at, "tags": r.tags}
                                                for r in rows.runs],
                                       "problems": rows.problems})

    def metrics(self) -> str:
        """``GET /metrics``: the runs per status and per kind of wait, the limits and the breakers,
        read from the store now (``tinywf_cli.web.metrics``)."""
        from tinywf_cli.web.metrics import metrics_text

        rows = read_store(self.runtime.store, lambda source: source.list_runs(RunFilter()))
        runs: list[tuple[str, Sequence[Any]]]
        if rows is not None:
            runs = [(r.status, r.pending) for r in rows.runs]
        else:
            heads, unreadable, _ = self.runtime.heads_matching(RunFilter())
            runs = [(h.status, h.pending) for h in heads] + [("unreadable", [])] * len(unreadable)
        kinds = [k for status, pending in runs if status == "waiting" for k in dict.fromkeys(p.kind for p in pending)]
        return metrics_text([status for status, _ in runs], kinds, self.runtime.limits(), self.runtime.breakers())

    def now(self) -> datetime:
        """The runtime's clock ($TINYWF_NOW fixes it)."""
        return self.runtime.clock.now()

    def graph(self, doc: ShowDocument) -> Graph:
        """The step graph of a run's workflow, read from its flow file's source, the run's path marked."""
        from tinywf_cli.analysis.graph import RunTrace
        from tinywf_cli.analysis.source import analyze_source
        from tinywf_cli.authoring.loader import display_path, read_source

        try:
            ref = self.runtime.store.head(doc.run_id).flow
            file, cls = getattr(ref, "file", None), getattr(ref, "cls", None)
            if not file or not cls:
                return Graph(None, "No graph: the run's workflow was given as a class, not a flow file.")
            workflow = analyze_source(read_source(Path(file)), display_path(Path(file))).workflow(cls)
        except TinyWFError as exc:
            return Graph(None, f"No graph: {exc.message}")
        trace = RunTrace.of(doc)
        from tinywf_cli.web.svg import graph_svg

        notes = trace.mismatches(workflow)
        return Graph(graph_svg(workflow, trace), "; ".join(notes) or None)

    def open_link(self, token: str) -> tuple[Link, RunDocument, PendingResume]:
        """The link, its run and its pending event; LinkRefused saying why it cannot be used."""
        link = self.signer().verify(token, self.now())
        try:
            doc = RunDocument.of(self.runtime.store.head(link.run_id))
        except RunNotFound:
            raise removed(link.run_id) from None
        if not link.made_for(doc.created_at):  # a later run given the removed run's id
            raise removed(link.run_id)
        if doc.status in pages.ENDED:
            raise LinkRefused(409, "This run has ended",
                              f"Run {link.run_id} is {doc.status}; it takes no more answers.")
        pending = next((p for p in doc.pending if p.resume_id == link.resume_id and p.kind == "event"), None)
        if pending is None:
            raise answered(link)
        return link, doc, pending


def answered(link: Link) -> LinkRefused:
    """The refusal of a link whose event is no longer pending."""
    return LinkRefused(410, "This question was already answered",
                       f"Run {link.run_id} no longer waits for this answer (it was given, or the wait "
                       "timed out). A link works once.")


# -- the application -------------------------------------------------------------------------------------


def create_app(runtime: Runtime, settings: Settings) -> ASGIApp:
    """The ASGI application of ``tinywf serve``: ``Gate`` around the FastAPI routes."""
    web = Web(runtime, settings)
    api = FastAPI(title="tinywf", version=__version__, docs_url=None, redoc_url=None,
                  description="Runs of one tinywf store over HTTP. Bodies and answers are the CLI's `--json` "
                              "documents; errors are `{\"error\": {\"type\", \"message\", \"exit_code\"}}`.")
    _api_routes(api, web)
    _page_routes(api, web)
    _link_routes(api, web)
    _error_handlers(api)
    _openapi_security(api)
    return Gate(api, settings)


def _error_handlers(api: FastAPI) -> None:
    @api.exception_handler(TinyWFError)
    async def tinywf_error(request: Request, exc: TinyWFError) -> Response:
        return error_response(exc)

    @api.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        kind = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in kind and await request.body():
            return error_response(BadInput(f"the body must be JSON, sent with Content-Type: application/json "
                                           f"(not {kind or 'none'})"))
        return error_response(BadInput("; ".join(problems) or "invalid request"))

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        if not request.url.path.startswith("/api/") and exc.status_code == 404:
            return HTMLResponse(pages.message_page("Not found", "There is no page here.", nav=True), status_code=404)
        return JSONResponse({"error": {"type": "HTTPError", "message": message, "exit_code": 2}},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @api.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        traceback.print_exception(exc, file=sys.stderr)
        return JSONResponse({"error": {"type": "InternalError", "exit_code": 70,
                                       "message": f"internal error: {type(exc).__name__}: {exc}"}}, status_code=500)


def _openapi_security(api: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, description=api.description,
                                 routes=api.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "The token `tinywf serve` printed, or $TINYWF_API_TOKEN."}}
            schema["security"] = [{"bearer": []}]
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def _api_routes(api: FastAPI, web: Web) -> None:
    rt = web.runtime

    @api.get("/metrics", include_in_schema=False)  # Prometheus's text, not one of the API's documents
    def metrics() -> Response:
        """The store's runs per status and per kind of wait, its limits and breakers, in Prometheus's
        text format (bearer token as the API)."""
        from tinywf_cli.web.metrics import CONTENT_TYPE

        return Response(web.metrics(), media_type=CONTENT_TYPE)

    @api.get("/api/runs", tags=["runs"], responses={200: {"model": RunList}, **_errors(400)})
    def list_runs(status: Annotated[str | None, Query(description="Only runs in this status.")] = None,
                  tag: Annotated[list[str] | None, Query(description="Only runs with this tag, KEY=VALUE "
                                                                     "(repeatable: all must match).")] = None,
                  ) -> Response:
        """Every run, newest first (`tinywf list --json`)."""
        if status is not None and status not in statuses():
            raise BadInput(f"status must be one of {', '.join(statuses())}, not {status!r}")
        return document(web.list_runs(status, tag or ()))

    @api.post("/api/runs", tags=["runs"], status_code=201,
              responses={201: {"model": RunDocument}, **_errors(400, 404, 409, 422)})
    def start_run(body: StartBody) -> Response:
        """Start a run of a flow under --flows and advance it until it finishes, fails or waits (`tinywf run`)."""
        spec = flow_under(web.settings.flows_dir, body.flow)
        return document(rt.start(spec, input=body.input, run_id=body.run_id), 201)

    @api.get("/api/runs/{run_id}", tags=["runs"], responses={200: {"model": ShowDocument}, **_errors(400, 404)})
    def show_run(run_id: str) -> Response:
        """A run with its audit log (`tinywf show --json`)."""
        return document(rt.get(run_id))

    @api.post("/api/runs/{run_id}/resolve/{resume:path}", tags=["answering"],
              responses={200: {"model": RunDocument}, **_errors(400, 404, 409, 422)})
    def resolve_run(run_id: str, resume: str, body: ValueBody) -> Response:
        """Answer a pending event (by resume id or key), then advance the run (`tinywf resolve`)."""
        return document(rt.resolve(run_id, resume, body.value, via="http"))

    @api.post("/api/runs/{run_id}/send/{key:path}", tags=["answering"],
              responses={200: {"model": RunDocument}, **_errors(400, 404, 409, 422)})
    def send_event(run_id: str, key: str, body: ValueBody) -> Response:
        """Deliver an event by key: resolve its pending wait, or queue it (`tinywf send`)."""
        return document(rt.send(run_id, key, body.value, via="http"))

    @api.post("/api/runs/{run_id}/signal/{name}", tags=["answering"],
              responses={200: {"model": SignalDocument}, **_errors(400, 404, 409, 422)})
    def signal_run(run_id: str, name: str,
                   args: Annotated[dict[str, Any] | None, Body(description="The arguments.")] = None) -> Response:
        """Call a @signal method with the object's fields as arguments (`tinywf signal`); the document's
        ``result`` is what the method returned (absent when nothing). A ``ValueError`` from it is a 422."""
        return document(rt.signal(run_id, name, **(args or {})))

    @api.post("/api/runs/{run_id}/cancel", tags=["runs"],
              responses={200: {"model": RunDocument}, **_errors(400, 404, 409)})
    def cancel_run(run_id: str, body: CancelBody | None = None) -> Response:
        """Cancel a run that has not ended (`tinywf cancel`)."""
        return document(rt.cancel(run_id, body.reason if body else None))

    @api.post("/api/runs/{run_id}/retry", tags=["runs"],
              responses={200: {"model": RunDocument}, **_errors(400, 404, 409)})
    def retry_run(run_id: str) -> Response:
        """Restart a failed run from its failed step (`tinywf retry`)."""
        return document(rt.retry(run_id))


async def _form(request: Request) -> dict[str, str]:
    """A URL-encoded form body (the pages post nothing else)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def _html(markup: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(markup, status_code=status)


def _page_routes(api: FastAPI, web: Web) -> None:
    rt = web.runtime
    settings = web.settings

    def error_page(exc: TinyWFError) -> HTMLResponse:
        return _html(pages.message_page(type(exc).__name__, exc.message, nav=True), http_status(exc))

    @api.get("/", include_in_schema=False)
    def runs_page(status: str | None = None, tag: Annotated[list[str] | None, Query()] = None) -> Response:
        if status is not None and status not in statuses():
            return error_page(BadInput(f"status must be one of {', '.join(statuses())}, not {status!r}"))
        try:
            runs = web.list_runs(status, tag or ())
        except TinyWFError as exc:
            return error_page(exc)
        return _html(pages.runs_page(runs, status=status, statuses=statuses(), now=web.now(), where=settings.where,
                                     tags=tag or ()))

    def show(run_id: str, page_number: int = 1, invalid: dict[str, tuple[str, str]] | None = None,
             status: int = 200) -> HTMLResponse:
        try:
            doc = rt.get(run_id)
        except TinyWFError as exc:
            return error_page(exc)
        return _html(pages.run_page(doc, now=web.now(), graph=web.graph(doc), csrf=settings.csrf,
                                    page_number=page_number, children=children_of(doc), invalid=invalid,
                                    where=settings.where), status)

    @api.get("/runs/{run_id}", include_in_schema=False)
    def run_page(run_id: str, page: int = 1) -> Response:
        return show(run_id, page)

    async def checked_form(request: Request) -> dict[str, str] | HTMLResponse:
        form = await _form(request)
        if request.scope["state"].get("auth") == "cookie" and not hmac.compare_digest(
                form.get("csrf", "").encode(), settings.csrf.encode()):
            return _html(pages.message_page("Refused", "The form's CSRF token is missing or wrong; reload the "
                                                       "page and try again.", nav=True), 403)
        return form

    def after(run_id: str) -> RedirectResponse:
        return RedirectResponse(pages.run_href(run_id), status_code=303)

    @api.post("/runs/{run_id}/resolve/{resume:path}", include_in_schema=False)
    async def answer(request: Request, run_id: str, resume: str) -> Response:
        form = await checked_form(request)
        if isinstance(form, HTMLResponse):
            return form
        text = form.get("value", "")
        try:
            doc = await run_in_threadpool(rt.get, run_id)
            key = next((p.key for p in doc.pending if resume in (p.resume_id, p.key)), resume)
            value = parse_answer(form_for(doc.expects.get(resume)), text, key)
            await run_in_threadpool(rt.resolve, run_id, resume, value, via="http")
        except InvalidValue as exc:
            return await run_in_threadpool(show, run_id, 1, {resume: (text, exc.message)}, 422)
        except TinyWFError as exc:
            return error_page(exc)
        return after(run_id)

    @api.post("/runs/{run_id}/cancel", include_in_schema=False)
    async def cancel(request: Request, run_id: str) -> Response:
        form = await checked_form(request)
        if isinstance(form, HTMLResponse):
            return form
        try:
            await run_in_threadpool(rt.cancel, run_id, "cancelled from the web page")
        except TinyWFError as exc:
            return error_page(exc)
        return after(run_id)

    @api.post("/runs/{run_id}/retry", include_in_schema=False)
    async def retry(request: Request, run_id: str) -> Response:
        form = await checked_form(request)
        if isinstance(form, HTMLResponse):
            return form
        try:
            await run_in_threadpool(rt.retry, run_id)
        except TinyWFError as exc:
            return error_page(exc)
        return after(run_id)


def _link_routes(api: FastAPI, web: Web) -> None:
    rt = web.runtime

    def refused(exc: LinkRefused) -> HTMLResponse:
        return _html(pages.message_page(exc.title, exc.detail), exc.status)

    def trouble(exc: TinyWFError) -> HTMLResponse:
        # whoever holds a link is no operator: the message (paths, run details) goes to the log only
        print(f"link: {type(exc).__name__}: {exc.message}", file=sys.stderr, flush=True)
        return _html(pages.message_page("This link cannot be used right now",
                                        "The server could not record or show this question. Try again "
                                        "later, or tell whoever sent you the link."), http_status(exc))

    @api.get("/link/{token}", include_in_schema=False)
    def link_page(token: str) -> Response:
        try:
            link, doc, pending = web.open_link(token)
        except LinkRefused as exc:
            return refused(exc)
        except TinyWFError as exc:
            return trouble(exc)
        return _html(pages.link_page(doc, pending, action=f"/link/{quote(token)}", expires_at=link.expires_at,
                                     now=web.now()))

    def answer(token: str, text: str) -> HTMLResponse:
        try:
            link, doc, pending = web.open_link(token)
            form = form_for(doc.expects.get(pending.resume_id))
            try:
                value = parse_answer(form, text, pending.key)
                # the exact resume id the link was signed for, which open_link found pending, of
                # the very run it was signed for (checked again under the run's lock)
                after = rt.resolve(link.run_id, link.resume_id, value, created_at=link.created_at, via="link")
            except InvalidValue as exc:
                return _html(pages.link_page(doc, pending, action=f"/link/{quote(token)}",
                                             expires_at=link.expires_at, now=web.now(), entered=text,
                                             invalid=exc.message), 422)
            except ResumeNotFound:  # answered by someone else a moment ago
                raise answered(link) from None
            except RunNotFound:  # removed a moment ago (and perhaps its id given to a new run)
                raise removed(link.run_id) from None
            except StatusConflict as exc:
                raise LinkRefused(409, "This run has ended", exc.message) from None
        except LinkRefused as exc:
            return refused(exc)
        except TinyWFError as exc:
            return trouble(exc)
        return _html(pages.link_done_page(pending, value, after, form))

    @api.post("/link/{token}", include_in_schema=False)
    async def link_answer(request: Request, token: str) -> Response:
        form = await _form(request)
        return await run_in_threadpool(answer, token, form.get("value", ""))


__all__ = ["DEFAULT_MAX_BODY", "ErrorBody", "Settings", "create_app", "flow_under", "http_status"]
