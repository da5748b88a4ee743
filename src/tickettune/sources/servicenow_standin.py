"""A stand-in for a ServiceNow instance's Table API, for the tests and benchmarks of `tickettune pull` and
`serve --sync-from`. It is a stand-in, not ServiceNow: nobody can reach a real instance from here, so it
follows the documented behaviour that a client depends on, and nothing else:

- `GET /api/now/table/{table}` answers `{"result": [...]}` with an `X-Total-Count` header (the rows the query
  matches) and a `Link` header of `first`, `prev`, `next` and `last` pages built from `sysparm_offset`;
  `sysparm_limit` defaults to and is capped at 10,000 rows.
- `sysparm_query` is an encoded query: conditions joined by `^` (AND), `^OR` (OR with the condition before),
  `^NQ` (OR of whole queries), `ORDERBY<field>` / `ORDERBYDESC<field>`, operators `= != > >= < <= LIKE
  STARTSWITH IN ISEMPTY ISNOTEMPTY`. As an instance does by default, a condition on a field the table does
  not have is ignored. Values compare as text, which is exact for the fields paging uses (`sys_updated_on`
  as `YYYY-MM-DD hh:mm:ss`, `sys_id` as 32 hex digits).
- `sysparm_display_value=false|true|all` and `sysparm_exclude_reference_link`: raw values, display values, or
  `{"display_value", "value"}` objects; a reference field is an object with a `link` to the record it points at.
  `sysparm_fields` picks the fields.
- Basic auth or an OAuth bearer token from `POST /oauth_token.do` (password and client_credentials grants);
  anything else is a 401 with ServiceNow's error body. An unknown table is a 404 `Invalid table`.
- `throttle(n, retry_after)` makes the next `n` requests a 429 with `Retry-After`, as an instance under its
  rate limit answers; `after_page` is called after each page is served, so a test can change or delete
  records between the pages of one read; `break_next(body)` answers the next request with a body that is
  not the Table API's (as a hibernating instance answers with an HTML page).

Usage (a uvicorn server on a free port in a thread):

    instance = Instance(users={"admin": "secret"})
    instance.add_groups(["Network"])
    instance.add_incidents(make_incidents(100, instance.group_ids))
    with StandinServer(instance) as server:
        httpx.get(f"{server.url}/api/now/table/incident", auth=("admin", "secret"))
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

MAX_LIMIT = 10_000
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# field -> (table it references, the referenced table's display field)
REFERENCES = {"assignment_group": ("sys_user_group", "name"), "problem_id": ("problem", "number"),
              "parent_incident": ("incident", "number"), "caller_id": ("sys_user", "name")}
CHOICES = {"state": {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed", "8": "Canceled"},
           "priority": {"1": "1 - Critical", "2": "2 - High", "3": "3 - Moderate", "4": "4 - Low", "5": "5 - Planning"}}
CONDITION = re.compile(r"^([A-Za-z0-9_.]+?)(ISNOTEMPTY|ISEMPTY|STARTSWITH|LIKE|IN|>=|<=|!=|=|>|<)(.*)$", re.S)


def sys_id_of(text: str) -> str:
    """A 32-hex-digit sys_id, stable for a given text (so generated data is the same on every run)."""
    return hashlib.md5(text.encode()).hexdigest()


def now_text() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime(TIME_FORMAT)


@dataclass
class Instance:
    """The instance's tables (table -> sys_id -> record of raw string values), its users and its test hooks."""

    users: dict[str, str] = field(default_factory=dict)
    oauth_clients: dict[str, str] = field(default_factory=dict)
    tables: dict[str, dict[str, dict]] = field(default_factory=lambda: {"incident": {}, "sys_user_group": {},
                                                                       "problem": {}, "sys_user": {}})
    after_page: Optional[Callable[["Instance"], None]] = None
    requests: int = 0
    records_served: int = 0

    def __post_init__(self):
        self.tokens: set[str] = set()
        self.lock = threading.Lock()
        self._throttle: list[float] = []
        self._broken: list[tuple[str, str]] = []

    # --- data ---

    def add_groups(self, names: list[str]) -> None:
        for name in names:
            self.tables["sys_user_group"][sys_id_of(f"group {name}")] = {"sys_id": sys_id_of(f"group {name}"),
                                                                          "name": name}

    @property
    def group_ids(self) -> list[str]:
        return list(self.tables["sys_user_group"])

    def add_incidents(self, records: list[dict]) -> None:
        table = self.tables["incident"]
        for record in records:
            table[record["sys_id"]] = dict(record)

    def update(self, table: str, sys_id: str, **values: str) -> None:
        """Change a record as a user would: its fields, then sys_updated_on (now) and sys_mod_count."""
        with self.lock:
            record = self.tables[table][sys_id]
            record.update(values)
            record["sys_updated_on"] = max(now_text(), record.get("sys_updated_on", ""))
            record["sys_mod_count"] = str(int(record.get("sys_mod_count", "0")) + 1)

    def delete(self, table: str, sys_id: str) -> None:
        with self.lock:
            self.tables[table].pop(sys_id, None)

    # --- hooks ---

    def throttle(self, requests: int, retry_after: float) -> None:
        """Answer the next `requests` requests with 429 and `Retry-After: retry_after` (seconds)."""
        self._throttle = [retry_after] * requests

    def break_next(self, body: str, content_type: str = "text/html") -> None:
        """Answer the next request with 200 and this body instead of a page of records."""
        self._broken.append((body, content_type))

    # --- the API ---

    def authorised(self, header: str) -> bool:
        kind, _, value = header.partition(" ")
        if kind.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return self.users.get(user) == password and bool(password)
        return kind.lower() == "bearer" and value in self.tokens

    def token(self, form: dict) -> Optional[dict]:
        """The OAuth token endpoint's answer for a password or client_credentials grant, None when refused."""
        if self.oauth_clients.get(form.get("client_id", "")) != form.get("client_secret") or not form.get("client_id"):
            return None
        grant = form.get("grant_type")
        if grant == "password" and not (self.users.get(form.get("username", "")) == form.get("password")
                                        and form.get("password")):
            return None
        if grant not in ("password", "client_credentials"):
            return None
        token = secrets.token_hex(16)
        self.tokens.add(token)
        return {"access_token": token, "refresh_token": secrets.token_hex(16), "scope": "useraccount",
                "token_type": "Bearer", "expires_in": 1799}

    def page(self, base_url: str, table: str, params: dict) -> tuple[int, dict, object]:
        """(status, headers, JSON body or text) for a Table API GET, after the hooks."""
        with self.lock:
            self.requests += 1
            if self._throttle:
                wait = self._throttle.pop(0)
                return 429, {"Retry-After": f"{wait:g}"}, {"error": {"message": "Too many requests", "detail":
                                                                     "rate limit exceeded"}, "status": "failure"}
            if self._broken:
                return 200, {"Content-Type": self._broken[0][1]}, self._broken.pop(0)[0]
            if table not in self.tables:
                return 404, {}, {"error": {"message": f"Invalid table {table}", "detail": None}, "status": "failure"}
            try:
                limit = min(int(params.get("sysparm_limit", MAX_LIMIT)), MAX_LIMIT)
                offset = max(int(params.get("sysparm_offset", 0)), 0)
            except ValueError:
                return 400, {}, {"error": {"message": "Invalid sysparm_limit or sysparm_offset", "detail": None},
                                 "status": "failure"}
            rows = list(self.tables[table].values())
            groups, order = parse_query(params.get("sysparm_query", ""))
            known = set().union(*(r.keys() for r in rows[:1])) if rows else set()
            rows = [r for r in rows if matches(r, groups, known)]
            for name, descending in reversed(order):
                rows.sort(key=lambda r: r.get(name, ""), reverse=descending)
            total = len(rows)
            chosen = rows[offset:offset + limit]
            fields = [f.strip() for f in params.get("sysparm_fields", "").split(",") if f.strip()]
            mode = str(params.get("sysparm_display_value", "false")).lower()
            no_links = str(params.get("sysparm_exclude_reference_link", "false")).lower() == "true"
            result = [self.shown(base_url, r, fields, mode, no_links) for r in chosen]
            self.records_served += len(result)
        headers = {"X-Total-Count": str(total), "Link": links(f"{base_url}/api/now/table/{table}", params, offset,
                                                               limit, total)}
        if self.after_page is not None:
            self.after_page(self)
        return 200, headers, {"result": result}

    def shown(self, base_url: str, record: dict, fields: list[str], mode: str, no_links: bool) -> dict:
        out: dict[str, Any] = {}
        for name in fields or list(record):
            if name not in record:
                continue  # an instance leaves out a field the table does not have
            value = record[name]
            display = self.display(name, value)
            reference = REFERENCES.get(name)
            if reference and value:
                link = f"{base_url}/api/now/table/{reference[0]}/{value}"
                shown: Any = {"display_value": display, "link": link, "value": value}
                if mode == "false":
                    shown = value if no_links else {"link": link, "value": value}
                elif mode == "true":
                    shown = display if no_links else {"display_value": display, "link": link}
                elif no_links:
                    shown = {"display_value": display, "value": value}
            else:
                shown = {"display_value": display, "value": value} if mode == "all" else (
                    display if mode == "true" else value)
            out[name] = shown
        return out

    def display(self, name: str, value: str) -> str:
        if name in CHOICES:
            return CHOICES[name].get(value, value)
        reference = REFERENCES.get(name)
        if reference and value:
            target = self.tables.get(reference[0], {}).get(value)
            return target.get(reference[1], "") if target else ""
        return value


def parse_query(query: str) -> tuple[list[list[list[tuple[str, ...]]]], list[tuple[str, bool]]]:
    """An encoded query as OR-ed groups (^NQ) of AND-ed clauses (^) of OR-ed conditions (^OR); and the order."""
    groups, order = [], []
    for part in query.split("^NQ") if query else []:
        clauses: list[list[tuple[str, ...]]] = []
        for term in part.split("^"):
            if not term or term == "EQ":
                continue
            if term.startswith("ORDERBYDESC"):
                order.append((term[len("ORDERBYDESC"):], True))
                continue
            if term.startswith("ORDERBY"):
                order.append((term[len("ORDERBY"):], False))
                continue
            alternative = term.startswith("OR") and clauses and CONDITION.match(term[2:]) is not None
            condition = CONDITION.match(term[2:] if alternative else term)
            if condition is None:
                continue  # as an instance does with what it cannot parse: the condition is dropped
            if alternative:
                clauses[-1].append(condition.groups())
            else:
                clauses.append([condition.groups()])
        groups.append(clauses)
    return groups, order


def matches(record: dict, groups, known: set[str]) -> bool:
    if not groups:
        return True
    return any(all(any(holds(record, c, known) for c in clause) for clause in clauses) for clauses in groups)


OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "=": lambda have, value: have == value, "!=": lambda have, value: have != value,
    ">": lambda have, value: have > value, ">=": lambda have, value: have >= value,
    "<": lambda have, value: have < value, "<=": lambda have, value: have <= value,
    "LIKE": lambda have, value: value.lower() in have.lower(), "STARTSWITH": lambda have, value: have.startswith(value),
    "IN": lambda have, value: have in value.split(","), "ISEMPTY": lambda have, value: have == "",
    "ISNOTEMPTY": lambda have, value: have != ""}


def holds(record: dict, condition: tuple[str, str, str], known: set[str]) -> bool:
    name, op, value = condition
    if name not in known:
        return True  # a condition on a field the table does not have is ignored, as by an instance
    return OPERATORS[op](record.get(name, ""), value)


def links(url: str, params: dict, offset: int, limit: int, total: int) -> str:
    def page(at: int) -> str:
        query = dict(params, sysparm_limit=str(limit), sysparm_offset=str(max(at, 0)))
        return f"{url}?{urllib.parse.urlencode(query)}"

    last = max(((total - 1) // limit) * limit, 0) if limit else 0
    parts = [f'<{page(0)}>;rel="first"']
    if offset > 0:
        parts.append(f'<{page(offset - limit)}>;rel="prev"')
    if offset + limit < total:
        parts.append(f'<{page(offset + limit)}>;rel="next"')
    parts.append(f'<{page(last)}>;rel="last"')
    return ",".join(parts)


def make_incidents(n: int, group_ids: list[str], *, start: str = "2024-01-01 00:00:00", seed: int = 0,
                   same_second: int = 1) -> list[dict]:
    """`n` incidents with raw values as an instance stores them; `same_second` incidents share each update time
    (so that paging must tell them apart by sys_id). Resolved and closed ones have close notes, open ones none."""
    import random

    rng = random.Random(seed)
    first = dt.datetime.strptime(start, TIME_FORMAT)
    topics = ["VPN drops every hour", "Outlook keeps asking for my password", "printer on floor 3 jams",
              "laptop will not boot after update", "cannot reach the file share", "badge reader refuses my badge",
              "Teams calls freeze", "password reset link expired", "monitor flickers", "SAP login times out"]
    records = []
    for i in range(n):
        topic = topics[rng.randrange(len(topics))]
        state = rng.choice(["1", "2", "6", "7"])
        updated = (first + dt.timedelta(seconds=i // same_second)).strftime(TIME_FORMAT)
        records.append({
            "sys_id": sys_id_of(f"incident {seed} {i}"), "number": f"INC{i + 1:07d}",
            "short_description": f"{topic} ({i})", "description": f"User reports: {topic.lower()}. Case {i}.",
            "assignment_group": group_ids[rng.randrange(len(group_ids))] if group_ids else "",
            "state": state, "priority": rng.choice(["2", "3", "4"]), "active": "true" if state in ("1", "2") else "false",
            "close_notes": f"Fixed: {topic.lower()}" if state in ("6", "7") else "",
            "sys_created_on": updated, "sys_updated_on": updated, "sys_mod_count": "0"})
    return records


def create_app(instance: Instance):
    """The stand-in's FastAPI application over an `Instance`."""
    app = FastAPI(title="ServiceNow Table API stand-in")

    @app.get("/api/now/table/{table}")
    async def table(table: str, request: Request):
        if not instance.authorised(request.headers.get("authorization", "")):
            return JSONResponse({"error": {"message": "User Not Authenticated",
                                           "detail": "Required to provide Auth information"}, "status": "failure"},
                                status_code=401, headers={"WWW-Authenticate": 'Basic realm="Service-now"'})
        base = str(request.base_url).rstrip("/")
        status, headers, body = instance.page(base, table, dict(request.query_params))
        if isinstance(body, str):
            return Response(body, status_code=status, headers=headers)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.post("/oauth_token.do")
    async def oauth_token(request: Request):
        # The form parsed here rather than by Starlette, which would need python-multipart for it.
        answer = instance.token(dict(urllib.parse.parse_qsl((await request.body()).decode())))
        if answer is None:
            return JSONResponse({"error_description": "access_denied", "error": "server_error"}, status_code=401)
        return answer

    return app


class StandinServer:
    """The stand-in on 127.0.0.1 (a free port unless given), served by uvicorn in a thread; a context manager."""

    def __init__(self, instance: Instance, port: int = 0):
        import uvicorn

        self.instance = instance
        if not port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(instance), host="127.0.0.1", port=port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "StandinServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the stand-in server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
