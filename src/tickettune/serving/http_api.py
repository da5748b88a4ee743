"""The HTTP surface of `tickettune serve`: request and answer schemas with their limits, and the answers to
what a client gets wrong (a 4xx with one line of JSON naming the field) or what goes wrong inside (a 500 with
no detail; the traceback, never a ticket text, goes to the server log).

app.py holds the engine and the app; this holds what a client sees of it, so that each file stays readable.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any, Optional

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.exceptions import HTTPException

MAX_K = 100
MAX_EMBED_TEXTS = 256
MAX_TICKETS_PER_POST = 1000
MAX_BODY_BYTES = 1 << 20
log = logging.getLogger("uvicorn.error").getChild("tickettune")


class ClientError(Exception):
    """A request the server cannot answer as asked: the HTTP status and one line naming the field and the fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# --- requests and answers (they are also the OpenAPI page at /docs) ---

class SimilarRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "Outlook keeps asking for my password", "k": 5}, {"number": "INC0010042", "k": 10},
        {"text": "Outlook keeps asking for my password", "filters": {"cmdb_ci": "Exchange Online",
                                                                      "opened_after": "2024-03-01"}}]})

    text: Optional[str] = Field(None, description="text of the new ticket (longer than the model's window: truncated)")
    number: Optional[str] = Field(None, description="number of an indexed ticket; it is left out of its own results")
    k: int = Field(10, ge=1, le=MAX_K, description="how many similar tickets to return")
    filters: Optional[dict[str, Any]] = Field(None, description=(
        "narrow the search before the top k is taken: assignment_group, cmdb_ci, category, subcategory, state, "
        "priority or contact_type (a value or a list of values; fields the tickets have), and opened_after, "
        "opened_before, updated_after, updated_before (ISO dates or date-times, UTC); GET /filters lists them"))
    why: bool = Field(True, description="give each result its reasons: shared fields, error codes and terms")

    @field_validator("text", "number")
    @classmethod
    def _not_blank(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.strip():
            raise ValueError("is empty; send the ticket text or number")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> "SimilarRequest":
        if (self.text is None) == (self.number is None):
            raise ValueError("text or number: send exactly one of them")
        return self


class Hit(BaseModel):
    rank: int
    number: Optional[str]
    text: str
    group: Optional[str] = Field(description="assignment group (or --group-column) when the tickets have one")
    score: float = Field(description="cosine similarity, -1 to 1")
    duplicate: Optional[bool] = Field(description="score at or above the threshold (by default the calibrated "
                                                  "duplicate tier's); null when no threshold is known")
    tier: Optional[str] = Field(description="duplicate, related or none by the model's calibration; null without one")
    precision: Optional[float] = Field(description="calibrated chance that a result this close is the query's "
                                                   "problem (same group on held-out tickets); null without calibration")
    fields: dict[str, str] = Field(description="the result's filterable fields and its opened_at, where it has them")
    why: Optional[dict[str, Any]] = Field(None, description="shared fields (same CI, group, ...), shared error codes, "
                                                            "shared terms")


class SimilarResponse(BaseModel):
    threshold: Optional[float]
    tiers: Optional[dict[str, Optional[float]]] = Field(description="the calibrated tiers' score thresholds")
    tickets: int = Field(description="tickets searched")
    results: list[Hit]


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["VPN drops every hour"]}]})

    texts: list[str] = Field(min_length=1, max_length=MAX_EMBED_TEXTS)

    @field_validator("texts")
    @classmethod
    def _not_blank(cls, texts: list[str]) -> list[str]:
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"item {i} is empty; send non-empty texts")
        return texts


class EmbedResponse(BaseModel):
    model: str
    dim: int
    vectors: list[list[float]] = Field(description="unit length, one per text, in order")


class TicketsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"tickets": [{
        "number": "INC0099001", "short_description": "VPN drops every hour",
        "description": "Since this morning the VPN disconnects hourly.", "assignment_group": "Network"}]}]})

    tickets: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_TICKETS_PER_POST, description=(
        "tickets with the fields of the ticket file (number, short_description, description, assignment_group, ...); "
        "a number already indexed is replaced"))


class TicketsResponse(BaseModel):
    added: int
    updated: int
    tickets: int = Field(description="tickets indexed now")


class SyncStatus(BaseModel):
    source: str = Field(description="the Table API URL synced from, with its query")
    every_seconds: float
    last_attempt_at: Optional[str]
    last_success_at: Optional[str]
    lag_seconds: Optional[float] = Field(description="seconds since the last successful sync")
    last_error: Optional[str] = Field(description="why the last attempt failed (the last good index is served)")
    changed: int = Field(description="records the last successful sync added or replaced")
    removed: int = Field(description="tickets it marked deleted")
    running: bool
    mark: Optional[str] = Field(description="sys_updated_on of the newest change read")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query_text": "Outlook keeps asking for my password", "suggested": "INC0010042", "verdict": "duplicate",
         "agent": "ana.silva"},
        {"query": "INC0010050", "suggested": "INC0010042", "verdict": "unrelated"}]})

    query: Optional[str] = Field(None, description="number of the indexed ticket that was searched with")
    query_text: Optional[str] = Field(None, description="or the text that was searched with")
    suggested: str = Field(description="number of the suggested ticket")
    verdict: str = Field(description="duplicate, related or unrelated")
    agent: str = Field("", max_length=128, description="who judged; one verdict per query, suggestion and agent")

    @field_validator("query", "query_text", "suggested")
    @classmethod
    def _not_blank(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.strip():
            raise ValueError("is empty; send the ticket number or text")
        return value

    @field_validator("verdict")
    @classmethod
    def _verdict(cls, value: str) -> str:
        from tickettune.serving.feedback import VERDICTS

        if value not in VERDICTS:
            raise ValueError(f"'{value}' is not one of {', '.join(VERDICTS)}")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> "FeedbackRequest":
        if (self.query is None) == (self.query_text is None):
            raise ValueError("query or query_text: send exactly one of them")
        return self


class FeedbackResponse(BaseModel):
    stored: str = Field(description="added, updated (another verdict replaced) or unchanged (the same one again)")
    feedback: int = Field(description="verdicts stored now")


class ClusterTicket(BaseModel):
    number: Optional[str]
    text: str
    group: Optional[str]
    opened_at: str


class Cluster(BaseModel):
    size: int
    newest: str
    oldest: str
    tickets: list[ClusterTicket] = Field(description="newest first")


class ClustersResponse(BaseModel):
    window: str
    since: str
    until: str
    min_score: float = Field(description="every two tickets of a cluster score at least this")
    clusters: list[Cluster] = Field(description="newest first")


class Health(BaseModel):
    status: str
    model: str
    tickets: int
    threshold: Optional[float]
    tiers: Optional[dict[str, Optional[float]]]
    version: str
    batching: bool
    auth: bool
    encoder: str = Field(description="PyTorch, or the ONNX file (fp32 or int8) the model runs on")
    sync: Optional[SyncStatus] = None


class ErrorResponse(BaseModel):
    error: str


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses request bodies over `limit` bytes (413) before they are read, or as soon as a streamed one passes it."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"body: more than {self.limit} bytes; send fewer or shorter texts (or fewer tickets) per request"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await _send_error(send, 413, message)
        seen = 0

        async def counted():
            nonlocal seen
            chunk = await receive()
            seen += len(chunk.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, message)
            return chunk

        await self.app(scope, counted, send)


class ErrorGuard:
    """The last resort: an unexpected exception becomes a 500 with one line, its traceback goes to the log.

    Only the exception's type and stack are logged, never its message, which might quote a ticket.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        started = False

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            log.error("internal error answering %s %s: %s\n%s", scope.get("method"), scope.get("path"),
                      type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)).rstrip())
            if not started and scope["type"] == "http":
                await _send_error(send, 500, f"internal error ({type(exc).__name__}); the server log has the details")


def validation_message(exc: RequestValidationError) -> str:
    error = exc.errors()[0]
    loc = list(error.get("loc", ()))
    if loc[:1] == ["body"]:
        loc = loc[1:]
    if error["type"] == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "malformed")
        return f"body: not valid JSON ({reason}); send a JSON object"
    field = "".join(f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part)) for i, part in enumerate(loc))
    text = str(error["msg"]).removeprefix("Value error, ")
    if field:
        return f"{field}: {text}"
    if error["type"] == "value_error":  # a rule across fields (text or number), which names them itself
        return text
    # FastAPI reads JSON only when the request says it is JSON; anything else arrives here as a non-object.
    problem = "missing" if error["type"] == "missing" else "not a JSON object"
    return f"body: {problem}; send a JSON object with the header 'Content-Type: application/json' (see /docs)"
