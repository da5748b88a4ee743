"""`tickettune serve`: similar-incident search as an HTTP service, for the tools agents already use (a
ServiceNow REST Message or Flow Designer action, a chat bot, a triage script) rather than a shell.

The model is loaded once and the tickets come from the same on-disk index cache `tickettune search`
uses (`live_tickets` adds the tickets posted to the service). All model and index work happens on one
thread, fed by a micro-batcher (`Batcher`): requests that arrive while the model is busy are encoded
together in the next `model.encode` call and searched in one scan, which is what keeps latency flat
under concurrent clients on a small CPU (benchmarks/serve.py measures it against no batching).

Every error a client can cause is a 4xx answer with one line of JSON naming the field; anything else
is a 500 with no detail, its traceback (never a ticket text) in the server log.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import json
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from tickettune import __version__
from tickettune.core.errors import UserError
from tickettune.core.models import model_threshold, offline_environment
from tickettune.evaluation.calibration import Calibration
from tickettune.serving.clusters import parse_window, recent_clusters, window_end
from tickettune.serving.encoders import Encoder, EncoderChoice
from tickettune.serving.feedback import FeedbackStore, Verdict
from tickettune.serving.filters import FIELDS, ColumnCache, TicketFilter, date_column, filter_options, filtered_search
from tickettune.serving.http_api import (
    MAX_BODY_BYTES,
    MAX_TICKETS_PER_POST,
    BodyLimit,
    ClientError,
    ClustersResponse,
    EmbedRequest,
    EmbedResponse,
    ErrorGuard,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    SimilarRequest,
    SimilarResponse,
    SyncStatus,
    TicketsRequest,
    TicketsResponse,
    validation_message,
)
from tickettune.serving.index import choose_backend
from tickettune.serving.live_tickets import LiveTickets
from tickettune.serving.reasons import why
from tickettune.serving.search import read_ticket_file
from tickettune.serving.store import store_url

if TYPE_CHECKING:  # sync (and httpx with it) is imported only by a service that syncs
    from tickettune.serving.sync import Syncer

# One encode call takes the waiting requests up to about this many texts; larger batches would make
# the requests at their front wait longer than batching saves.
MAX_BATCH_TEXTS = 64
SETTINGS_ENV = "TICKETTUNE_SERVE_SETTINGS"
GROUP_COLUMNS = ("assignment_group", "group")
log = logging.getLogger("uvicorn.error").getChild("tickettune")


@dataclass
class ServeSettings:
    """What a server process needs; plain values, so `--workers` can hand them to its worker processes."""

    model: str
    tickets: str
    store: str
    cache_dir: Optional[str] = None
    text_column: Optional[str] = None
    group_column: Optional[str] = None
    threshold: Optional[float] = None
    token: Optional[str] = None
    batching: bool = True
    threads: Optional[int] = None
    index: str = "auto"
    sync_from: Optional[str] = None
    sync_every: float = 300.0
    model_backend: str = "auto"  # the encoder: torch, onnx or auto (encoders.EncoderChoice)
    onnx_file: Optional[str] = None
    feedback_db: Optional[str] = None  # SQLAlchemy URL; default the store's own database


# --- the model thread ---

# The jobs the model thread runs; `texts` is what each gives to the batch's one encode call.

@dataclass
class Similar:
    text: Optional[str]
    number: Optional[str]
    k: int
    filters: Optional[dict] = None
    why: bool = True

    @property
    def texts(self) -> list[str]:
        return [self.text] if self.text else []


@dataclass
class Embed:
    texts: list[str]


@dataclass
class Feedback:
    request: FeedbackRequest
    texts = ()


@dataclass
class Clusters:
    window: str
    min_size: int
    until: Optional[str]
    min_score: Optional[float]
    texts = ()


@dataclass
class Upsert:
    records: list[dict]

    @property
    def texts(self) -> list[str]:
        return []  # encoded by LiveTickets.upsert, which first builds each ticket's text from its fields


@dataclass
class OnModelThread:
    """Work on the tickets that must not overlap a search (a sync's changes): `call(live)` is the answer."""

    call: Callable

    @property
    def texts(self) -> list[str]:
        return []


class Engine:
    """The model and the tickets. `run` is called only from the batcher's one thread, so nothing here needs a lock."""

    def __init__(self, encoder: Encoder, settings: ServeSettings, live: LiveTickets, feedback: FeedbackStore):
        self.encoder = encoder
        self.settings = settings
        self.live = live
        self.feedback = feedback
        self.agreement: Optional[float] = None  # lowest probe cosine to the index's model; None: built here
        self.syncer: Optional[Syncer] = None
        self.calibration: Optional[Calibration] = None
        self.columns = ColumnCache()

    @classmethod
    def open(cls, settings: ServeSettings) -> tuple["Engine", bool]:
        """Load the encoder once and the tickets (index from the cache, built if missing); and whether it was cached.

        A cached index built by another model than the encoder's is refused (`Encoder.check_agrees`).
        """
        import torch
        from threadpoolctl import threadpool_limits

        if settings.threads:
            # The index scan's BLAS (and FAISS's OpenMP) too: on shared cores a call whose threads wait for
            # each other stalls as torch's do.
            torch.set_num_threads(settings.threads)
            threadpool_limits(settings.threads)
        tickets = read_ticket_file(Path(settings.tickets), settings.text_column).frame
        # Loaded before the index, so that an ONNX file this CPU cannot run fails in moments.
        encoder = Encoder.of(settings.model, backend=settings.model_backend, onnx_file=settings.onnx_file,
                             threads=settings.threads).load()
        agreement: Optional[float] = None  # lowest probe cosine to the index's model; None: built here

        def check(index, cached: bool) -> None:
            # Before the store's tickets are read: a refused encoder must not have encoded those lacking its vectors.
            nonlocal agreement
            if cached:
                agreement = encoder.check_agrees(index.probe, settings.cache_dir or "the index cache")

        live, cached = LiveTickets.open(tickets, encoder.folder, encoder, settings.store,
                                        Path(settings.cache_dir) if settings.cache_dir else None, settings.text_column,
                                        settings.index, check_index=check)
        # Verdicts live in the service's own database (beside its tickets) unless --feedback-db names another.
        feedback = FeedbackStore.open(settings.feedback_db) if settings.feedback_db else FeedbackStore(live.store.engine)
        engine = cls(encoder, settings, live, feedback)
        engine.agreement = agreement
        if settings.sync_from:
            from tickettune.serving.sync import Syncer, parse_source
            from tickettune.sources.servicenow import Credentials

            engine.syncer = Syncer(parse_source(settings.sync_from), Credentials.from_environment(), engine.live.store,
                                   every=settings.sync_every, tickets_file=Path(settings.tickets))
        engine.calibration = Calibration.load(encoder.folder)
        return engine, cached

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts, show_progress=len(texts) > MAX_TICKETS_PER_POST)

    def run(self, jobs: list) -> list:
        """Each job's answer, or the exception that answers it; tickets are added first, so a search beside them sees them."""
        seen = self.live.seq
        self.live.refresh()
        answers: list = [None] * len(jobs)
        for i, job in enumerate(jobs):
            if isinstance(job, Upsert):
                answers[i] = self._upsert(job)
            elif isinstance(job, OnModelThread):
                try:
                    answers[i] = job.call(self.live)
                except Exception as exc:  # the submitter's to handle
                    answers[i] = exc
        if self.live.seq != seen:  # tickets changed (here, by a sync or in another process): filter columns anew
            self.columns.clear()
        for i, job in enumerate(jobs):
            if isinstance(job, Feedback):
                answers[i] = self._feedback(job.request)
            elif isinstance(job, Clusters):
                answers[i] = self._clusters(job)
        texts = [text for job in jobs for text in job.texts]
        vectors = iter(self.encode(texts) if texts else [])
        queries, searches = [], []
        for i, job in enumerate(jobs):
            if isinstance(job, Embed):
                answers[i] = {"model": self.settings.model, "dim": self.dim,
                              "vectors": [next(vectors).tolist() for _ in job.texts]}
            if not isinstance(job, Similar):
                continue
            text_vector = next(vectors) if job.text else None  # taken before any `continue`: the next job's is next
            try:
                spec = TicketFilter.parse(job.filters, list(self.live.columns))
            except UserError as exc:
                answers[i] = ClientError(422, str(exc))
                continue
            rows: list[int] = []
            if text_vector is not None:
                vector = text_vector
            else:
                indexed = self.live.rows_of.get((job.number or "").strip())
                if indexed is None:
                    answers[i] = ClientError(404, f"number: no ticket numbered '{job.number}' is indexed; check the "
                                                  "number, add the ticket with POST /tickets, or send its text")
                    continue
                rows, vector = indexed, self.live.index.vectors[indexed[0]]
            if spec:
                # Filtered: the top k among the matching tickets, each query on its own.
                allowed = spec.mask(self.live.tickets, self.columns)  # a new array: ruling rows out changes no cache
                allowed[rows + sorted(self.live.deleted)] = False
                scores, found = filtered_search(self.live.index, vector, job.k, allowed)
                keep = found[0] >= 0
                answers[i] = self._similar(scores[0][keep], found[0][keep], job, rows)
            else:
                queries.append(vector)
                searches.append((i, job, rows))
        if queries:
            ranked = self.live.search(np.stack(queries), [job.k for _, job, _ in searches],
                                      [rows for _, _, rows in searches])
            for (i, job, own), (scores, hits) in zip(searches, ranked):
                answers[i] = self._similar(scores, hits, job, own)
        return answers

    @property
    def dim(self) -> int:
        return int(self.live.index.vectors.shape[1])

    def _upsert(self, job: Upsert):
        try:
            added, updated = self.live.upsert(job.records)
        except UserError as exc:
            return ClientError(422, str(exc))
        return {"added": added, "updated": updated, "tickets": len(self.live)}

    def _similar(self, scores: np.ndarray, found: np.ndarray, job: Similar, own: list[int]) -> dict:
        threshold = self.settings.threshold
        # Straight from the columns' lists: a DataFrame of 10 rows cost more than the rest of the answer.
        columns = self.live.columns
        rows = [int(row) for row in found]
        group = self.settings.group_column
        groups = [columns[group][row] for row in rows] if group in columns else [""] * len(rows)
        shown = [c for c in (*FIELDS, "opened_at") if c in columns]
        fields = [{c: value for c in shown if (value := str(columns[c][row]).strip())} for row in rows]
        query = {c: values[own[0]] for c, values in columns.items()} if own else {"text": job.text}
        calibration = self.calibration
        precisions = calibration.precision(scores) if calibration else [None] * len(rows)
        results = [{"rank": rank, "number": number or None, "text": text, "group": grouped or None, "score": float(score),
                    "duplicate": None if threshold is None else bool(score >= threshold),
                    "tier": calibration.tier(float(score)) if calibration else None,
                    "precision": None if precision is None else round(float(precision), 4), "fields": shown_fields,
                    "why": why(query, {"text": text, **shown_fields}) if job.why else None}
                   for rank, (number, text, grouped, score, precision, shown_fields)
                   in enumerate(zip([columns["number"][row] for row in rows], [columns["text"][row] for row in rows],
                                    groups, scores, precisions, fields), start=1)]
        return {"threshold": threshold, "tiers": self.tiers, "tickets": len(self.live), "results": results}

    @property
    def tiers(self) -> Optional[dict]:
        return dict(self.calibration.thresholds) if self.calibration else None

    def _ticket(self, number: str, field: str) -> dict:
        rows = self.live.rows_of.get(number.strip())
        if rows is None:
            raise ClientError(404, f"{field}: no ticket numbered '{number}' is indexed; check the number or add the "
                                   "ticket with POST /tickets")
        return dict(self.live.frame(rows[:1]).iloc[0])

    def _feedback(self, request: FeedbackRequest):
        try:
            suggested = self._ticket(request.suggested, "suggested")
            query = self._ticket(request.query, "query") if request.query else {"text": request.query_text or ""}
        except ClientError as exc:
            return exc
        if request.query and request.query.strip() == request.suggested.strip():
            return ClientError(422, "suggested: is the query ticket itself; send the number of a suggested ticket")
        stored = self.feedback.record(Verdict(query_text=query["text"], suggested=request.suggested.strip(),
                                              suggested_text=suggested["text"], verdict=request.verdict,
                                              agent=request.agent.strip(),
                                              query_number=request.query.strip() if request.query else None))
        return {"stored": stored, "feedback": self.feedback.count()}

    def _clusters(self, job: Clusters):
        try:
            window = parse_window(job.window)
            until = window_end(job.until)
        except UserError as exc:
            return ClientError(422, str(exc))
        if job.min_size < 2:
            return ClientError(422, f"min: {job.min_size} is below 2; a cluster needs at least 2 tickets")
        min_score = job.min_score
        if min_score is None:
            min_score = (self.tiers or {}).get("related")
            if min_score is None:
                return ClientError(422, "min_score: the model has no calibrated related tier; pass min_score (a cosine "
                                        "such as 0.6) or calibrate the model (`tickettune evaluate --calibrate`)")
        tickets = self.live.tickets
        column = date_column(tickets, "opened_at")
        if column is None:
            return ClientError(422, "window: the tickets have no opened_at column, so no window can be applied")
        opened = self.columns.times(tickets, column)
        if self.live.deleted:  # deleted tickets (synced deletions) stay in the table but join no cluster
            opened = opened.copy()
            opened[sorted(self.live.deleted)] = np.datetime64("NaT")
        found = recent_clusters(opened, self.live.index.vectors, until=until, window=window, min_size=job.min_size,
                                min_score=min_score)
        group = self.settings.group_column
        clusters = []
        for cluster in found:
            members = tickets.iloc[cluster["rows"]]
            clusters.append({"size": len(members), "newest": _iso(cluster["newest"]), "oldest": _iso(cluster["oldest"]),
                             "tickets": [{"number": m["number"] or None, "text": m["text"],
                                          "group": (m[group] if group in members.columns else "") or None,
                                          "opened_at": _iso(stamp)}
                                         for (_, m), stamp in zip(members.iterrows(), opened[cluster["rows"]])]})
        return {"window": job.window, "since": (until - window).isoformat(), "until": until.isoformat(),
                "min_score": float(min_score), "clusters": clusters}


def _iso(stamp: np.datetime64) -> str:
    import pandas as pd

    return pd.Timestamp(stamp).tz_localize("UTC").isoformat()


class Batcher:
    """Hands requests to the model thread, as many at a time as are waiting.

    While the model works on one batch, the requests that arrive queue up; the next batch takes all of
    them (up to about MAX_BATCH_TEXTS texts) into one `model.encode` call and one index scan. An idle
    server therefore adds no wait to a request, and a busy one batches as much as its load allows.
    Without batching each request is a batch of its own, on the same one thread.
    """

    def __init__(self, engine: Engine, batching: bool = True):
        self.engine = engine
        self.batching = batching
        self.queue: asyncio.Queue = asyncio.Queue()
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="tickettune-model")
        self.task: Optional[asyncio.Task] = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.thread.shutdown(wait=True)

    async def submit(self, job) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((job, future))
        answer = await future
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            texts = len(batch[0][0].texts)
            while self.batching and texts < MAX_BATCH_TEXTS and not self.queue.empty():
                batch.append(self.queue.get_nowait())
                texts += len(batch[-1][0].texts)
            try:
                answers = await loop.run_in_executor(self.thread, self.engine.run, [job for job, _ in batch])
            except Exception as exc:  # answered as a 500 by ErrorGuard, which logs it
                answers = [exc] * len(batch)
            for (_, future), answer in zip(batch, answers):
                if not future.done():  # done: the client went away
                    future.set_result(answer)


def page_html() -> str:
    return importlib.resources.files("tickettune.serving").joinpath("page.html").read_text(encoding="utf-8")


def create_app(engine: Engine, settings: ServeSettings, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI application over an opened engine.

    One function of ~110 lines on purpose: FastAPI routes are closures over the batcher, the engine and the auth
    dependency, and a reader sees the service's whole HTTP surface in one place (the schemas are in http_api.py).
    """
    batcher = Batcher(engine, settings.batching)
    syncer = engine.syncer

    async def on_model_thread(call: Callable) -> Any:
        return await batcher.submit(OnModelThread(call))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        syncing = asyncio.get_running_loop().create_task(syncer.run_every(on_model_thread)) if syncer else None
        yield
        if syncing is not None:
            syncing.cancel()
        await batcher.stop()

    app = FastAPI(title="tickettune", version=__version__, lifespan=lifespan, description=(
        "Similar-incident search with a fine-tuned embedding model. Every endpoint but /health needs "
        "`Authorization: Bearer <token>` when the server was started with --token. Errors are "
        "`{\"error\": \"<field>: <problem>; <fix>\"}`."))
    bearer = HTTPBearer(auto_error=False, description="the server's --token (or TICKETTUNE_TOKEN)")
    expected = (settings.token or "").encode()

    async def authorized(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, expected):
            raise ClientError(401, "authorization: missing or wrong bearer token; send the header "
                                   "'Authorization: Bearer <token>' with the server's token")

    protected = [Depends(authorized)] if settings.token else []
    errors: dict = {status: {"model": ErrorResponse} for status in (401, 404, 413, 422)}

    @app.exception_handler(ClientError)
    async def client_error(request, exc: ClientError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        return JSONResponse({"error": validation_message(exc)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        message = {404: f"no endpoint {request.url.path}; see /docs for the endpoints",
                   405: f"{request.method} is not allowed on {request.url.path}; see /docs"}.get(exc.status_code,
                                                                                                  str(exc.detail))
        return JSONResponse({"error": message}, status_code=exc.status_code)

    @app.post("/similar", response_model=SimilarResponse, dependencies=protected, responses=errors)
    async def similar(request: SimilarRequest):
        """The k tickets most similar to a text or to an indexed ticket, among those passing `filters`; each with its
        calibrated tier and precision, and why it was suggested; `duplicate` marks scores at or above the threshold."""
        return await batcher.submit(Similar(request.text, request.number, request.k, request.filters, request.why))

    @app.post("/feedback", response_model=FeedbackResponse, dependencies=protected, responses=errors)
    async def feedback(request: FeedbackRequest):
        """An agent's verdict on a suggestion (duplicate, related or unrelated), kept for `tickettune feedback export`;
        one per query, suggested ticket and agent (sent again: replaced)."""
        return await batcher.submit(Feedback(request))

    @app.get("/clusters", response_model=ClustersResponse, dependencies=protected, responses=errors)
    async def clusters(window: str = "4h", min: int = 4, until: Optional[str] = None,
                       min_score: Optional[float] = None):
        """Groups of at least `min` mutually similar incidents opened in the `window` (30m, 4h, 2d) before `until`
        (default now): every two score at least `min_score` (default the related tier's threshold). Newest first."""
        return await batcher.submit(Clusters(window, min, until, min_score))

    @app.get("/filters", dependencies=protected, responses=errors)
    async def filters():
        """The fields /similar can be filtered on, each with its values in the tickets, and the time bounds."""
        from tickettune.serving.filters import WINDOWS

        return {"fields": filter_options(engine.live.tickets), "windows": [name for name, (column, _) in WINDOWS.items()
                                                                         if date_column(engine.live.tickets, column)]}

    @app.post("/tickets", response_model=TicketsResponse, dependencies=protected, responses=errors)
    async def tickets(request: TicketsRequest):
        """Add tickets or replace them by number; only they are encoded, and they are kept across restarts."""
        return await batcher.submit(Upsert(request.tickets))

    @app.post("/embed", response_model=EmbedResponse, dependencies=protected, responses=errors)
    async def embed(request: EmbedRequest):
        """The model's unit-length embedding of each text, for teams with their own vector store."""
        return await batcher.submit(Embed(request.texts))

    @app.post("/sync", response_model=SyncStatus, dependencies=protected, responses=errors)
    async def sync():
        """Read the instance's changes now (with --sync-from); the sync's status afterwards."""
        if syncer is None:
            raise ClientError(404, "sync: this server has no --sync-from; start it with --sync-from URL")
        return await syncer.sync_now(on_model_thread)

    @app.get("/health", response_model=Health)
    async def health():
        """For load balancers: no token needed, no ticket data. `sync` is the last sync's time, lag and error."""
        return {"status": "ok", "model": settings.model, "tickets": len(engine.live), "threshold": settings.threshold,
                "tiers": engine.tiers, "version": __version__, "batching": settings.batching, "auth": bool(settings.token),
                "encoder": engine.encoder.label, "sync": syncer.health() if syncer else None}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        # The page holds no ticket data (it asks the API, with the token typed into it), so it needs no token itself.
        return HTMLResponse(page_html(), headers={"Content-Security-Policy": (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")})

    app.add_middleware(ErrorGuard)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app


def app_from_environment() -> FastAPI:
    """uvicorn's application factory in each process of `--workers N`; the parent passes the settings in the environment."""
    offline_environment()
    settings = ServeSettings(**json.loads(os.environ[SETTINGS_ENV]))
    engine, _ = Engine.open(settings)
    return create_app(engine, settings)


def check_port(host: str, port: int) -> None:
    """Fail now, in one line, rather than after loading the model, when the address cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: cannot resolve it ({exc.strerror}); pass an address such as 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closing socket is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port or stop what "
                            "uses it") from None


def default_threads(workers: int) -> int:
    """Torch (and BLAS) threads per worker: the cores but one (left to HTTP and JSON), shared among the workers.

    On a shared 2-core machine two threads served 4 to 17 times fewer requests/s than one (its threads
    wait on each other while another process holds a core): RESULTS.md, Serve.
    """
    return max(1, ((os.cpu_count() or 1) - 1) // workers)


def run_server(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               say: Callable[[str], None] = print) -> None:
    """Check everything that can be checked cheaply, open the tickets once, then serve until interrupted."""
    import uvicorn

    from tickettune.data.tickets import resolve_column

    table = read_ticket_file(Path(settings.tickets), settings.text_column)
    for note in table.notes:
        say(note)
    frame = table.frame
    choice = EncoderChoice.of(settings.model, backend=settings.model_backend, onnx_file=settings.onnx_file)
    if settings.group_column:
        settings.group_column = resolve_column(table, settings.group_column, "--group-column")
    else:
        # Without one in the file, tickets posted later may still bring an assignment group.
        settings.group_column = next((c for c in GROUP_COLUMNS if c in frame.columns), GROUP_COLUMNS[0])
    if settings.threshold is None:
        calibration = Calibration.load(choice.folder)
        settings.threshold = calibration.thresholds.get("duplicate") if calibration else model_threshold(settings.model)
    choose_backend(len(frame), settings.index)
    store_url(settings.store)
    if settings.sync_from:
        from tickettune.serving.sync import parse_source
        from tickettune.sources.servicenow import Credentials

        parse_source(settings.sync_from)
        Credentials.from_environment()
    check_port(host, port)
    settings.threads = settings.threads or default_threads(workers)
    if len(frame) > MAX_TICKETS_PER_POST:
        say(f"loading {settings.model} and the index of {len(frame)} tickets (encoded once if not cached)")
    engine, cached = Engine.open(settings)
    agreement = "" if engine.agreement is None else f", lowest probe cosine to the index's model {engine.agreement:.4f}"
    say(f"encoder: {choice.label}{agreement}")
    threshold = "no threshold known" if settings.threshold is None else f"threshold {settings.threshold:.3f}"
    if engine.calibration is not None:
        threshold += "; calibrated tiers " + ", ".join(
            f"{tier} >= {value:.3f}" if value is not None else f"no {tier}"
            for tier, value in engine.calibration.thresholds.items())
    say(f"{len(engine.live)} tickets indexed (index {'cached' if cached else 'built'}, added tickets in "
        f"{engine.live.store.url}); {threshold}; token {'required' if settings.token else 'not required'}")
    if engine.syncer:
        say(f"syncing from {engine.syncer.key} every {settings.sync_every:g} s (POST /sync: now)")
    if not settings.token and host not in ("127.0.0.1", "localhost", "::1"):
        say(f"warning: listening on {host} without --token: anyone who can reach it can read the tickets")
    say(f"serving on http://{host}:{port}/ (API docs at /docs); Ctrl-C stops")
    if workers == 1:
        uvicorn.run(create_app(engine, settings), host=host, port=port, log_level="info")
        return
    # Each worker loads the model and the (now cached) index itself.
    del engine
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    uvicorn.run("tickettune.serving.app:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="info")
