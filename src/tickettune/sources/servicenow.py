"""Read a ServiceNow table through the Table API (`GET /api/now/table/<table>`), as `tickettune pull` and
`serve --sync-from` do.

Written over httpx rather than ServiceNow's own client, pysnc (1.2.1 on PyPI): pysnc pages by
`sysparm_offset`, which skips a record each time one already read changes (it moves to the end of the
order and every unread record shifts back past the offset: what admins report of offset paging on a live
table; tests/sources/test_pull.py shows it on the stand-in, benchmarks/pull.py counts it at scale), and its retries
are urllib3's, a fixed count with no say over how long an instance may ask it to wait. What a reader of a
live table needs is small enough to hold here:

- keyset paging: each page asks for the records after the last one seen, in `sys_updated_on`, `sys_id`
  order (`sys_updated_on>T^NQsys_updated_on=T^sys_id>ID`), so rows that change mid-read cannot shift the
  pages; a record changed after it was read comes again later in the same read, and the newest copy wins;
- retries with exponential backoff on 429, 502, 503, 504 and dropped connections, waiting as long as a
  `Retry-After` header asks (up to `max_wait` seconds);
- basic auth, or an OAuth token (password or client-credentials grant) from the environment, never from
  the command line: `Credentials.from_environment`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Optional
from urllib.parse import urlsplit

import httpx

from tickettune.core.errors import UserError

MAX_PAGE = 10_000  # the Table API's cap on sysparm_limit
DEFAULT_PAGE = 1_000
RETRY_STATUSES = (429, 502, 503, 504)
DEFAULT_FIELDS = ("sys_id", "number", "sys_updated_on", "short_description", "description", "assignment_group",
                  "category", "subcategory", "cmdb_ci", "problem_id", "parent_incident", "state", "active",
                  "priority", "opened_at", "resolved_at", "closed_at", "close_code", "close_notes")
KEY_FIELDS = ("sys_id", "sys_updated_on")  # paging needs them, whatever --fields says
ENV_HELP = ("set SERVICENOW_USER and SERVICENOW_PASSWORD (basic auth), or SERVICENOW_CLIENT_ID and "
            "SERVICENOW_CLIENT_SECRET (OAuth; with the user pair for the password grant), or SERVICENOW_TOKEN")


def raw(value) -> str:
    """A field's raw value whatever the display mode: `{"value": ...}` objects give their value."""
    if isinstance(value, dict):
        value = value.get("value", value.get("display_value", ""))
    return "" if value is None else str(value)


@dataclass
class Mark:
    """A position in `sys_updated_on`, `sys_id` order: the last record read (raw values)."""

    updated_on: str
    sys_id: str

    @classmethod
    def of(cls, record: dict) -> "Mark":
        return cls(raw(record.get("sys_updated_on")), raw(record.get("sys_id")))

    def key(self) -> tuple[str, str]:
        return self.updated_on, self.sys_id


@dataclass
class Credentials:
    """How to authenticate, read from environment variables (`from_environment`); never printed.

    Example: `Credentials(user="svc_tickettune", password="...")` for basic auth.
    """

    user: str = ""
    password: str = ""
    client_id: str = ""
    client_secret: str = ""
    token: str = ""

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> "Credentials":
        found = cls(**{name: env.get(f"SERVICENOW_{name.upper()}", "") for name in
                       ("user", "password", "client_id", "client_secret", "token")})
        if bool(found.user) != bool(found.password):
            raise UserError(f"SERVICENOW_{'PASSWORD' if found.user else 'USER'} is not set; {ENV_HELP}")
        if bool(found.client_id) != bool(found.client_secret):
            raise UserError(f"SERVICENOW_{'CLIENT_SECRET' if found.client_id else 'CLIENT_ID'} is not set; {ENV_HELP}")
        if not (found.token or found.user or found.client_id):
            raise UserError(f"no ServiceNow credentials in the environment; {ENV_HELP}")
        return found

    @property
    def kind(self) -> str:
        if self.token:
            return "token"
        return "oauth" if self.client_id else "basic"


def instance_url(url: str) -> str:
    """`https://acme.service-now.com` from what a user may type (a trailing slash, no scheme for a host name)."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"https://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"--instance {url}: not an instance URL; pass one such as https://acme.service-now.com")
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class TableClient:
    """GETs pages of a table over the Table API, with retries and authentication; `read` walks a table by keyset.

    Example:
        client = TableClient("https://acme.service-now.com", Credentials.from_environment())
        for page in client.read("incident", query="active=true"): ...
    """

    def __init__(self, instance: str, credentials: Credentials, *, timeout: float = 60.0, retries: int = 6,
                 max_wait: float = 120.0, sleep: Callable[[float], None] = time.sleep):
        self.instance = instance_url(instance)
        self.credentials = credentials
        self.retries = retries
        self.max_wait = max_wait
        self.sleep = sleep
        self.http = httpx.Client(timeout=timeout, headers={"Accept": "application/json"},
                                 auth=(credentials.user, credentials.password) if credentials.kind == "basic" else None)
        self.token = credentials.token
        self.requests = 0
        self.retried = 0
        self.reached = False
        # The instance's clock (its Date header, as sys_updated_on is written) when the last read began.
        self.read_started: Optional[str] = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "TableClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- one request ---

    def _oauth_token(self) -> str:
        form = {"client_id": self.credentials.client_id, "client_secret": self.credentials.client_secret}
        if self.credentials.user:
            form.update(grant_type="password", username=self.credentials.user, password=self.credentials.password)
        else:
            form["grant_type"] = "client_credentials"
        response = self._send("POST", f"{self.instance}/oauth_token.do", data=form)
        if response.status_code != 200:
            raise UserError(f"{self.instance}: the OAuth token request was refused ({response.status_code}); check "
                            "SERVICENOW_CLIENT_ID/SERVICENOW_CLIENT_SECRET (System OAuth > Application Registry) "
                            "and the user pair")
        try:
            return str(response.json()["access_token"])
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{self.instance}/oauth_token.do: the answer holds no access_token; check --instance "
                            "points at a ServiceNow instance") from None

    def _send(self, method: str, url: str, **kwargs) -> httpx.Response:
        """One request with retries; transport failures and retryable statuses back off, honouring Retry-After."""
        for attempt in range(self.retries + 1):
            self.requests += 1
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                # An instance never reached is a wrong URL or network, not a hiccup: say so at once.
                if not self.reached or attempt == self.retries:
                    raise UserError(f"cannot reach the ServiceNow instance {self.instance} ({type(exc).__name__}: "
                                    f"{exc or 'no answer'}); check --instance and the network") from None
                wait = self._backoff(attempt)
            else:
                self.reached = True
                if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return response
                wait = self._retry_after(response) or self._backoff(attempt)
            self.retried += 1
            self.sleep(min(wait, self.max_wait))
        raise AssertionError("unreachable")

    @staticmethod
    def _backoff(attempt: int) -> float:
        return min(0.5 * 2 ** attempt, 30.0) * (0.5 + random.random() / 2)

    @staticmethod
    def _retry_after(response: httpx.Response) -> Optional[float]:
        value = response.headers.get("Retry-After", "").strip()
        if not value:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value) if value else None
            return max(when.timestamp() - time.time(), 0.0) if when else None

    def get(self, table: str, params: dict) -> tuple[list[dict], httpx.Response]:
        """One page of `table`: its records and the response (for headers); every failure is one UserError line."""
        if self.credentials.kind == "oauth" and not self.token:
            self.token = self._oauth_token()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = self._send("GET", f"{self.instance}/api/now/table/{table}", params=params, headers=headers)
        if response.status_code == 401 and self.credentials.kind == "oauth":
            self.token = self._oauth_token()  # an expired token: one new one, then the answer stands
            response = self._send("GET", f"{self.instance}/api/now/table/{table}", params=params,
                                  headers={"Authorization": f"Bearer {self.token}"})
        self._check(table, response)
        try:
            body = response.json()
        except ValueError:
            body = None
        records = body.get("result") if isinstance(body, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            kind = response.headers.get("content-type", "no content type").split(";")[0]
            raise UserError(f"{self.instance}: a page of table '{table}' is not Table API JSON ({kind}, "
                            f"{len(response.content)} bytes, no 'result' list); check --instance (a hibernating "
                            "instance answers with a web page: wake it) and try again")
        return records, response

    def _check(self, table: str, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        message = ""
        try:
            error = response.json().get("error", {})
            message = error.get("message", "") if isinstance(error, dict) else str(error)
        except (ValueError, AttributeError):
            pass
        detail = f" ({status}{': ' + message if message else ''})"
        if status == 401:
            raise UserError(f"{self.instance} refused the credentials{detail}; check the SERVICENOW_* variables "
                            f"({self.credentials.kind} auth in use)")
        if status == 403:
            raise UserError(f"{self.instance}: the user may not read table '{table}'{detail}; give it a role that "
                            "can (itil or snc_read_only for incident) or an ACL on the table")
        if status == 404 or (status == 400 and "invalid table" in message.lower()):
            raise UserError(f"{self.instance}: there is no table '{table}'{detail}; check --table (the table's "
                            "name, e.g. incident, not its label)")
        if status in RETRY_STATUSES:
            raise UserError(f"{self.instance} kept answering {status} after {self.retries} retries{detail}; the "
                            "instance is busy: try again later or lower --page-size")
        raise UserError(f"{self.instance}: table '{table}' answered {status}{detail}; check --query and --fields")

    # --- reading a table ---

    def read(self, table: str, *, query: str = "", fields: Optional[list[str]] = None, display_value: str = "all",
             page_size: int = DEFAULT_PAGE, after: Optional[Mark] = None,
             on_total: Callable[[int], None] = lambda total: None) -> Iterator[list[dict]]:
        """Pages of the records matching `query` after `after` (all when None), oldest change first.

        Keyset order by (sys_updated_on, sys_id); `on_total` hears the first page's X-Total-Count.
        """
        check_query(query)
        if not 1 <= page_size <= MAX_PAGE:
            raise UserError(f"--page-size {page_size}: expected 1 to {MAX_PAGE} (the Table API's cap)")
        wanted = list(fields or DEFAULT_FIELDS)
        wanted += [f for f in KEY_FIELDS if f not in wanted]
        params = {"sysparm_fields": ",".join(wanted), "sysparm_display_value": display_value,
                  "sysparm_limit": str(page_size), "sysparm_exclude_reference_link": "false"}
        first = True
        while True:
            params["sysparm_query"] = keyset_query(query, after)
            records, response = self.get(table, params)
            if first:
                total = response.headers.get("X-Total-Count", "")
                on_total(int(total) if total.isdigit() else -1)
                self.read_started = server_time(response)
                first = False
            if records:
                last = Mark.of(records[-1])
                if not last.sys_id or not last.updated_on:
                    raise UserError(f"{self.instance}: records of table '{table}' come without sys_id or "
                                    "sys_updated_on; the user needs read access to those fields")
                if after is not None and last.key() <= after.key():
                    raise UserError(f"{self.instance}: table '{table}' did not honour ORDERBY on sys_updated_on and "
                                    "sys_id (a page ended before where it started); check --query")
                after = last
                yield records
            if len(records) < page_size:
                return

    def keys(self, table: str, *, query: str = "", page_size: int = MAX_PAGE) -> dict[str, str]:
        """sys_id -> number of every record matching `query` now (sys_id order, keyset paging: a cheap full listing)."""
        found: dict[str, str] = {}
        last = ""
        params = {"sysparm_fields": "sys_id,number", "sysparm_display_value": "false", "sysparm_limit": str(page_size)}
        while True:
            condition = f"sys_id>{last}" if last else ""
            params["sysparm_query"] = "^".join(p for p in (query, condition, "ORDERBYsys_id") if p)
            records, _ = self.get(table, params)
            for record in records:
                found[raw(record.get("sys_id"))] = raw(record.get("number"))
            if len(records) < page_size:
                return found
            last = raw(records[-1].get("sys_id"))


def server_time(response: httpx.Response) -> Optional[str]:
    """The response's Date header as `YYYY-MM-DD hh:mm:ss` UTC (sys_updated_on's form), None without one."""
    try:
        when = email.utils.parsedate_to_datetime(response.headers.get("Date", ""))
    except (TypeError, ValueError):
        return None
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if when.tzinfo else None


def check_query(query: str) -> None:
    """Refuse what keyset paging cannot be combined with: its own ordering and whole-query ORs."""
    upper = query.upper()
    if "ORDERBY" in upper:
        raise UserError(f"--query {query!r}: holds an ORDERBY; leave it out (pull orders by sys_updated_on, sys_id)")
    if "^NQ" in upper:
        raise UserError(f"--query {query!r}: holds ^NQ (a new query); pull one query at a time, using ^OR inside it")


def keyset_query(query: str, after: Optional[Mark]) -> str:
    """The encoded query for the records of `query` after `after`, in (sys_updated_on, sys_id) order.

    `^` binds looser than `^OR`, so `query` stays one clause; `^NQ` ORs the two halves of the keyset
    condition, each repeating `query`.
    """
    order = "ORDERBYsys_updated_on^ORDERBYsys_id"
    if after is None:
        return "^".join(p for p in (query, order) if p)
    prefix = f"{query}^" if query else ""
    return (f"{prefix}sys_updated_on>{after.updated_on}^NQ{prefix}sys_updated_on={after.updated_on}"
            f"^sys_id>{after.sys_id}^{order}")
