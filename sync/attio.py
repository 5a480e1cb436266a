"""The Attio REST API v2: a thin client, and pure readers of its record and value shapes."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlencode, urlsplit

import orjson
import urllib3

from sync import clock
from sync.attributes import EventAttribute, active
from sync.errors import AttioAuthError, AttioError, AttioNotFound, SetupError
from sync.http import CONNECT_TIMEOUT, RateLimiter, RequestStats, make_pool
from sync.http import reason as _reason
from sync.models import Deal, Person, StageValue, format_time, parse_time
from sync.redact import Redactor

log = logging.getLogger(__name__)

PAGE_SIZE = 500
# Consecutive query pages overlap by this many rows, so a record deleted mid-scan cannot shift
# another past the page boundary unseen; callers drop the repeats by key.
PAGE_OVERLAP = 10
IN_CHUNK = 200
BAD_BODY_ATTEMPTS = 3
LATENCY_WEIGHT = 0.1
# Connections kept open to Attio: the most requests ever in flight (ATTIO_CONCURRENCY's ceiling of 64, plus
# the lookups and the scan beside them). More at once would be opened and closed after use.
MAX_CONNECTIONS = 80


@dataclass
class Page:
    """One page of a query, with the `Date` Attio stamped on it (its clock; None if missing or unreadable)
    and this machine's clock when the answer arrived."""

    rows: list[dict]
    date: datetime | None
    received: datetime


class QueryPages(Iterator[Page]):
    """The pages of one query, in order, under the paging rule of `AttioClient.query`; up to `ahead` of them
    requested at once on threads of their own (with `ahead` 1, each when it is taken, on the caller's)."""

    def __init__(self, fetch: Callable[[int], Page], path: str, page_size: int, ahead: int = 1,
                 rows: int | None = None, first: Future[Page] | None = None):
        self.fetch = fetch
        self.path = path
        self.page_size = page_size
        self.step = max(1, page_size - min(PAGE_OVERLAP, page_size // 5))
        self.rows = rows
        self.offset = 0  # of the next page to hand over
        self._previous: set[str] = set()
        self._finished = False
        self._requested: deque[tuple[int, Future[Page]]] = deque()
        self._pool = ThreadPoolExecutor(ahead, thread_name_prefix="pages") if ahead > 1 else None
        self._ahead = ahead
        if first is not None:
            self._requested.append((0, first))
        self._ask()

    def _ask(self) -> None:
        """Request pages ahead, up to `ahead`: a page only when the one before it is full, as far as `rows` says,
        or without `rows` once it was handed over full (so that no page past the end is requested)."""
        if self._pool is None or self._finished:
            return
        following = self._requested[-1][0] + self.step if self._requested else self.offset
        while len(self._requested) < self._ahead:
            before = following - self.step
            if following > 0 and (before + self.page_size > self.rows if self.rows is not None
                                  else before > self.offset - self.step):
                return
            self._requested.append((following, self._pool.submit(self.fetch, following)))
            following += self.step

    def __next__(self) -> Page:
        while not self._finished:
            if self._requested and self._requested[0][0] == self.offset:
                offset, future = self._requested.popleft()
                try:
                    page = future.result()
                except BaseException:
                    self.close()
                    raise
            else:
                offset, page = self.offset, self.fetch(self.offset)
            # Rows of another shape are named by the readers (see `reading`); here they only have to compare.
            ids = {str(row.get("id")) if isinstance(row, dict) else repr(row) for row in page.rows}
            if offset > 0 and self._previous and not self._previous & ids:
                self.offset = max(0, offset - self.step)
                log.info("rows of %s dropped out between two page reads; reading back from offset %d so that "
                         "none is skipped", self.path, self.offset)
                self._drop_requested()
                self._ask()
                continue
            self._previous = ids
            if len(page.rows) < self.page_size:
                self.close()
            else:
                self.offset = offset + self.step
                self._ask()
            return page
        raise StopIteration

    def _drop_requested(self) -> None:
        for _, future in self._requested:
            future.cancel()
        self._requested.clear()

    def close(self) -> None:
        """Hand over nothing more; pages requested ahead and not taken are dropped."""
        self._finished = True
        self._drop_requested()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


# ---- pure readers of Attio's shapes ---------------------------------------------------------


@contextmanager
def reading(endpoint: str) -> Iterator[None]:
    """Read Attio's answer to `endpoint` with the readers below: a field missing or of the wrong type becomes
    an AttioError naming the endpoint and the field, instead of a KeyError deep in the run."""
    try:
        yield
    except KeyError as exc:
        raise AttioError(_shape(endpoint, f"an item without the field {exc.args[0]!r}")) from None
    except (TypeError, AttributeError) as exc:
        raise AttioError(_shape(endpoint, f"a field of another type than Attio's ({exc})")) from None
    except ValueError as exc:
        raise AttioError(_shape(endpoint, f"a value that cannot be read ({exc})")) from None


def _shape(endpoint: str, what: str) -> str:
    return (f"Attio answered {endpoint} with {what}, not the shape of Attio's API: check that ATTIO_BASE_URL is "
            "Attio's API root (https://api.attio.com) and nothing between rewrites its answers")


def stage_value(raw: dict) -> StageValue:
    """A status value (record or entry) as a StageValue; keyed on ids, titles as Attio gives them."""
    status = raw["status"]
    ids = status["id"]
    return StageValue(
        status_id=ids["status_id"],
        title=status.get("title") or "",
        active_from=parse_time(raw["active_from"]),
        attribute_id=ids["attribute_id"],
        parent_id=ids["object_id"],
        active_until=parse_time(raw["active_until"]) if raw.get("active_until") else None,
    )


def current_stage(values: dict, attribute: str) -> StageValue | None:
    """The active value of the stage attribute in a record's `values` (or an entry's `entry_values`)."""
    active = [v for v in values.get(attribute) or [] if v.get("active_until") is None]
    return stage_value(active[-1]) if active else None


def _first(values: dict, slug: str) -> dict | None:
    items = values.get(slug) or []
    return items[0] if items else None


def text_of(value: dict | None) -> str | None:
    """The text a value shows, whatever its simple type (text, number, select, email...)."""
    if not value:
        return None
    for key in ("value", "full_name", "email_address", "domain"):
        if value.get(key) not in (None, ""):
            return str(value[key])
    option = value.get("option")
    if isinstance(option, dict) and option.get("title"):
        return str(option["title"])
    return None


def pick_values(values: dict, attributes: Iterable[EventAttribute], on_list: bool = False
                ) -> dict[str, tuple[dict, ...]]:
    """The current values of the configured attributes that live on the record (or, `on_list`, the entry)."""
    return {a.slug: active(values.get(a.slug) or ()) for a in attributes if a.on_list == on_list}


def deal_from_record(record: dict, attributes: Sequence[EventAttribute] = ()) -> Deal:
    """What an event needs from a deal record (standard deal attribute slugs), with the current values of the
    configured record attributes (ATTIO_EVENT_ATTRIBUTES)."""
    values = record.get("values") or {}
    money = _first(values, "value") or {}
    owner = _first(values, "owner") or {}
    company = _first(values, "associated_company") or {}
    people = tuple(
        v["target_record_id"] for v in values.get("associated_people") or [] if v.get("target_record_id")
    )
    return Deal(
        record_id=record["id"]["record_id"],
        name=text_of(_first(values, "name")),
        value=money.get("currency_value"),
        currency=money.get("currency_code"),
        owner_id=owner.get("referenced_actor_id") if owner.get("referenced_actor_type") == "workspace-member" else None,
        people_ids=people,
        company_id=company.get("target_record_id"),
        web_url=record.get("web_url"),
        created_at=parse_time(record["created_at"]) if record.get("created_at") else None,
        attributes=pick_values(values, attributes),
    )


def list_parent_problem(client: AttioClient, list_: dict, list_setting: str, object_setting: str) -> str | None:
    """What is wrong if the list (`GET /v2/lists/{list}`'s item) holds records of another object than ATTIO_OBJECT:
    every entry's record would be looked for among the wrong object's, and its events held for want of a person.
    None if it holds that object's."""
    with reading(f"GET /v2/lists/{list_setting}"):
        parents = [str(p) for p in list_.get("parent_object") or []]
    if not parents or object_setting in parents:
        return None
    # The list may name its parent by id where the setting names it by slug, or the other way round.
    found = client.get_one(f"/v2/objects/{quote(object_setting)}")
    with reading(f"GET /v2/objects/{object_setting}"):
        names = {found.get("api_slug"), (found.get("id") or {}).get("object_id")}
    if names & set(parents):
        return None
    return (f"ATTIO_LIST {list_setting!r} holds records of {' or '.join(map(repr, parents))}, not of ATTIO_OBJECT "
            f"{object_setting!r}: set ATTIO_OBJECT={parents[0]}")


def person_from_record(record: dict, user_id_attribute: str | None) -> Person:
    """A person's emails (Attio's order, normalised form) and, if configured, the app's user id."""
    values = record.get("values") or {}
    emails = tuple(
        v["email_address"] for v in values.get("email_addresses") or [] if v.get("email_address")
    )
    user_id = text_of(_first(values, user_id_attribute)) if user_id_attribute else None
    return Person(record_id=record["id"]["record_id"], emails=emails, user_id=user_id)


def record_name(record: dict) -> str | None:
    """A record's name: its `name` attribute (text, or a person's full name)."""
    return text_of(_first(record.get("values") or {}, "name"))


def member_name(member: dict) -> str | None:
    name = " ".join(p for p in (member.get("first_name"), member.get("last_name")) if p)
    return name or None


def find_attribute(attributes: Sequence[dict], wanted: str) -> dict | None:
    """The attribute whose slug or id is `wanted` (every setting that names an attribute takes either)."""
    return next((a for a in attributes if wanted in (a.get("api_slug"), (a.get("id") or {}).get("attribute_id"))),
                None)


def stage_attribute_slug(attributes: Sequence[dict], wanted: str, where: str) -> str:
    """The slug of the status attribute ATTIO_STAGE_ATTRIBUTE names among `where`'s attributes (values are keyed
    by slug, whichever form was configured); SetupError saying what to set instead."""
    statuses = ", ".join(sorted(a.get("api_slug", "?") for a in attributes if a.get("type") == "status")) or "none"
    found = find_attribute(attributes, wanted)
    if found is None:
        raise SetupError(f"ATTIO_STAGE_ATTRIBUTE {wanted!r} is not an attribute of {where}: set it to one of its "
                         f"status attributes: {statuses}")
    if found.get("type") != "status":
        raise SetupError(f"ATTIO_STAGE_ATTRIBUTE {wanted!r} on {where} is of type {found.get('type')!r}, not a "
                         f"status: set it to one of its status attributes: {statuses}")
    return str(found.get("api_slug") or wanted)


def user_id_attribute_slug(people_attributes: Sequence[dict], wanted: str) -> str:
    """The slug of the people attribute ATTIO_USER_ID_ATTRIBUTE names (people's values are keyed by slug, so an
    id would match nothing); SetupError if there is none."""
    found = find_attribute(people_attributes, wanted)
    if found is None:
        raise SetupError(f"ATTIO_USER_ID_ATTRIBUTE {wanted!r} is not an attribute of people: set it to the slug of "
                         "the attribute that holds your app's user id, or leave it unset to use emails")
    return str(found.get("api_slug") or wanted)


def check_stage_event_types(named: Iterable[str], titles: dict[str, str], attribute: str) -> None:
    """Every stage USERMAVEN_STAGE_EVENT_TYPES names is a title or status id in `titles` (id → title, archived
    stages included); SetupError naming the others and the stages there are."""
    unknown = [k for k in named if k not in titles and k not in titles.values()]
    if unknown:
        raise SetupError(f"USERMAVEN_STAGE_EVENT_TYPES names {', '.join(map(repr, unknown))}, not a stage of "
                         f"{attribute!r}; its stages are: {', '.join(map(repr, titles.values()))}")


def active_from_filter(attribute: str, since: datetime) -> dict:
    """Attio's filter for records whose current stage value was written at or after `since`."""
    return {attribute: {"active_from": {"$gte": format_time(since)}}}


# ---- the client -----------------------------------------------------------------------------


def _json(body: bytes) -> object:
    """An answer's JSON (None if it is not JSON): orjson, several times faster on pages of 500 records; Python's
    reader for what orjson refuses and JSON allows, such as a lone surrogate (`\\ud83d`, a string cut in the
    middle of an emoji) in any field of any record of the page. A lone surrogate cannot be stored or sent as
    UTF-8: it becomes U+FFFD, as a browser shows it."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return _replace_lone_surrogates(json.loads(body))
        except ValueError:
            return None


def _replace_lone_surrogates(value: object) -> object:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, dict):
        return {_replace_lone_surrogates(k): _replace_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_lone_surrogates(v) for v in value]
    return value


class AttioClient:
    """Attio over HTTP: one connection pool, one rate limiter and one set of counts for all threads."""

    def __init__(self, base_url: str, api_key: str, max_rps: float, redactor: Redactor | None = None,
                 timeout: float = 60):
        self.base_url = base_url.rstrip("/")
        self.timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=timeout)
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self.stats = RequestStats()
        self.max_rps = max_rps
        # Seconds an answer takes, a moving average over recent requests (retries included): what the
        # requests in flight are sized by. Before the first answer, a guess.
        self.latency = 0.1
        self._latency_measured = False
        self.limiter = RateLimiter(max_rps)
        self.redact = redactor or Redactor([api_key])
        # One pool for every thread (urllib3's pools are thread-safe), as many connections as requests in flight.
        self._pool = make_pool(self.base_url, self.stats, self.limiter, pool_size=MAX_CONNECTIONS)
        # Without a proxy every request goes to Attio's host: its connection pool is asked directly, with the
        # path alone, instead of the manager parsing each URL to find that pool again (a sixth of a history
        # read's CPU). Through a proxy, and for a redirect, the manager does what they need.
        self._host = None if isinstance(self._pool, urllib3.ProxyManager) else self._pool.connection_from_url(
            self.base_url)
        self._prefix = urlsplit(self.base_url).path
        self._json_headers = {**self._headers, "Content-Type": "application/json"}

    def _target(self, path: str, params: dict | None) -> str:
        """The path and query of a request, after the base URL."""
        query = urlencode([(k, v) for k, v in params.items() if v is not None]) if params else ""
        return path + ("?" + query if query else "")

    def request(self, method: str, path: str, params: dict | None = None, body: dict | None = None,
                urgent: bool = False) -> Page:
        """One call; raises AttioError (or a subclass) with Attio's own message on any failure. An `urgent` one
        goes ahead of the history reads waiting for the rate limiter (see RateLimiter).

        Status and connection failures are retried by the pool (urllib3's Retry); a success whose body is not
        JSON (cut off on the way) is retried here, as urllib3 cannot see it.
        """
        target = self._target(path, params)
        headers = self._headers if body is None else self._json_headers
        data = None if body is None else json.dumps(body, allow_nan=False).encode()
        for attempt in range(1, BAD_BODY_ATTEMPTS + 1):
            self.limiter.wait(urgent)
            self.stats.add(requests=1)
            began = time.monotonic()
            try:
                response = self._send(method, target, data, headers)
            except urllib3.exceptions.HTTPError as exc:
                raise AttioError(self.redact(f"Attio could not be reached ({_reason(exc)})")) from None
            # The first answer replaces the guess: the requests in flight and the pages asked for ahead are sized
            # by Attio's latency from the start of the run.
            weight = LATENCY_WEIGHT if self._latency_measured else 1.0
            self.latency = weight * (time.monotonic() - began) + (1 - weight) * self.latency
            self._latency_measured = True
            log.debug("%s %s%s -> %s", method, self.base_url, target, response.status)
            payload = _json(response.data)
            if response.status >= 400:
                self._raise(response.status, payload, path)
            if isinstance(payload, dict):
                break
            log.warning("Attio sent a body that is not JSON for %s %s (HTTP %s, attempt %d of %d)",
                        method, path, response.status, attempt, BAD_BODY_ATTEMPTS)
        else:
            raise AttioError(f"Attio sent a response that is not JSON for {method} {path} "
                             f"{BAD_BODY_ATTEMPTS} times (HTTP {response.status})")
        # Most endpoints wrap their answer in `data`; /v2/self does not.
        data = payload.get("data", payload)
        rows = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
        return Page(rows=rows, date=clock.http_date(response.headers.get("Date")), received=clock.local_now())

    def _send(self, method: str, target: str, data: bytes | None, headers: dict[str, str]
              ) -> urllib3.BaseHTTPResponse:
        """One request (urllib3 retrying what it may), `target` the path and query after the base URL."""
        if self._host is not None:
            response = self._host.urlopen(method, self._prefix + target, body=data, headers=headers,
                                          timeout=self.timeout, redirect=False)
            if not response.get_redirect_location():
                return response
            # Not expected of Attio: asked again through the manager, which follows it to any host, as before.
        return self._pool.request(method, self.base_url + target, body=data, headers=headers, timeout=self.timeout)

    def _raise(self, status: int, payload: object, path: str) -> None:
        body = payload if isinstance(payload, dict) else {}
        message = str(body.get("message") or f"HTTP {status}")
        code = body.get("code")
        text = self.redact(f"Attio answered {status} ({code or body.get('type') or 'error'}) for {path}: {message}")
        if status in (401, 403):
            raise AttioAuthError(text, status, code)
        if status == 404:
            raise AttioNotFound(text, status, code)
        raise AttioError(text, status, code)

    def get_one(self, path: str, params: dict | None = None) -> dict:
        """A GET whose `data` is one object."""
        page = self.request("GET", path, params=params)
        return page.rows[0] if page.rows else {}

    def query(self, path: str, filter: dict | None = None, page_size: int | None = None, ahead: int = 1,
              rows: int | None = None, first: Future[Page] | None = None) -> Iterator[Page]:
        """Every page of a records or entries query, oldest created first (a stable order for offsets).

        Consecutive pages overlap by PAGE_OVERLAP rows, and a page must share a row with the one before it:
        if more rows than the overlap dropped out of the result between two reads (deleted records), the
        rows at the boundary would be skipped, so the offset steps back until the pages meet again. Rows
        may come more than once; callers drop the repeats by id. Queries are urgent (see RateLimiter): the run
        waits for them (the next page, a batch's people and companies), not for any one history read.

        With `ahead` above 1, pages are requested on threads of their own, the first as soon as this is called:
        each page handed over full asks for the next at once, so that it is there when the caller wants it;
        given `rows`, the number of rows the caller expects, up to `ahead` pages are requested at once (one
        round trip for a few pages instead of one each), none past the last one `rows` says there is. `first`
        is the first page already asked for (`query_page` at offset 0, same path, filter and size)."""
        size = page_size or PAGE_SIZE
        return QueryPages(lambda offset: self.query_page(path, filter, offset, size), path, size, ahead, rows,
                          first)

    def query_page(self, path: str, filter: dict | None, offset: int, page_size: int | None = None) -> Page:
        """One page of a records or entries query, oldest created first."""
        body: dict = {"sorts": [{"direction": "asc", "attribute": "created_at"}], "limit": page_size or PAGE_SIZE,
                      "offset": offset}
        if filter:
            body["filter"] = filter
        return self.request("POST", path, body=body, urgent=True)

    def get_all(self, path: str, params: dict | None = None, page_size: int | None = None) -> list[dict]:
        """Every row of a GET endpoint paged with limit/offset."""
        page_size = page_size or PAGE_SIZE
        rows: list[dict] = []
        offset = 0
        while True:
            page = self.request("GET", path, params={**(params or {}), "limit": page_size, "offset": offset})
            rows.extend(page.rows)
            if len(page.rows) < page_size:
                return rows
            offset += page_size

    def values(self, path: str) -> list[dict]:
        """Every value of an attribute, past ones included, oldest first."""
        return self.get_all(path, {"show_historic": "true"})

    # -- endpoints, by name --

    def check_token(self) -> dict:
        """GET /v2/self; an inactive token is an auth error."""
        info = self.get_one("/v2/self")
        with reading("GET /v2/self"):
            active = info.get("active")
        if not active:
            raise AttioAuthError("Attio says ATTIO_API_KEY is not active: create a new access token", 401)
        return info

    def get_list(self, list_: str) -> dict:
        """GET /v2/lists/{list}: the list's name, slug and parent object."""
        return self.get_one(f"/v2/lists/{quote(list_)}")

    def attributes(self, target: str, identifier: str) -> list[dict]:
        return self.get_all(f"/v2/{target}/{quote(identifier)}/attributes")

    def record_entries(self, object_: str, record_id: str) -> list[dict]:
        """The list entries whose parent is this record, on every list."""
        return self.get_all(f"/v2/objects/{quote(object_)}/records/{quote(record_id)}/entries")

    def statuses(self, target: str, identifier: str, attribute: str) -> list[dict]:
        path = f"/v2/{target}/{quote(identifier)}/attributes/{quote(attribute)}/statuses"
        return self.request("GET", path, params={"show_archived": "true"}).rows

    def record(self, object_: str, record_id: str) -> dict:
        return self.get_one(f"/v2/objects/{quote(object_)}/records/{quote(record_id)}")

    def entry(self, list_: str, entry_id: str) -> dict:
        return self.get_one(f"/v2/lists/{quote(list_)}/entries/{quote(entry_id)}")

    def records_by_id(self, object_: str, record_ids: Sequence[str]) -> list[dict]:
        """The records with these ids, in batches of `record_id $in` queries."""
        unique = list(dict.fromkeys(record_ids))
        found: list[dict] = []
        for start in range(0, len(unique), IN_CHUNK):
            chunk = unique[start:start + IN_CHUNK]
            for page in self.query(f"/v2/objects/{quote(object_)}/records/query", {"record_id": {"$in": chunk}}):
                found.extend(page.rows)
        return found

    def workspace_members(self) -> list[dict]:
        return self.request("GET", "/v2/workspace_members").rows
