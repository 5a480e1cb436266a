"""The Attio client speaks urllib3, not requests: what goes on the wire (method, URL with its query, body, the
headers Attio reads) must be what requests' `Session.request` sent before the change."""

from __future__ import annotations

import dataclasses

import pytest
import requests

from sync.attio import AttioClient
from sync.sandbox import AttioSandbox
from sync.sandbox.server import Reply, Request
from tests.conftest import add_leads
from tests.inprocess import Answer

BASE = "https://api.attio.test"
CASES = [
    ("GET", "/v2/objects/deals/records/r%2F1/attributes/stage/values",
     {"show_historic": "true", "limit": 500, "offset": 0}, None),
    ("POST", "/v2/objects/deals/records/query", None,
     {"sorts": [{"direction": "asc", "attribute": "created_at"}], "limit": 500, "offset": 10,
      "filter": {"stage": {"active_from": {"$gte": "2025-01-02T03:04:05.000000Z"}}, "name": "Ünï 🎉"}}),
    ("GET", "/v2/self", None, None),
    ("GET", "/v2/lists/a b/entries", {"q": "ä&=+/?", "none": None}, None),
    ("POST", "/v2/objects/deals/records/query", None, None),
]


@pytest.mark.parametrize("base", [BASE, BASE + "/behind/a/gateway"])
@pytest.mark.parametrize(("method", "path", "params", "body"), CASES)
def test_a_request_goes_on_the_wire_as_requests_sent_it(mocked, method, path, params, body, base):
    received: list[Request] = []
    mocked.serve(BASE, Answer(lambda request: (received.append(request), Reply(200, b'{"data": {}}'))[1]))
    client = AttioClient(base + "/", "secret-token", 100)
    client.request(method, path, params, body)
    theirs = requests.Session().prepare_request(requests.Request(
        method, client.base_url + path, params=params, json=body, headers=client._headers))
    assert mocked.calls == [(method, theirs.url)]
    (ours,) = received
    assert ours.body == (theirs.body or b"")
    for header in ("Authorization", "Accept", "Content-Type"):
        assert ours.headers.get(header) == theirs.headers.get(header), header


class LoneSurrogate:
    """The Attio sandbox, with one deal's name ending in a lone surrogate escape (`\\ud83d`), as JavaScript's
    JSON.stringify writes a string cut in the middle of an emoji: valid JSON, which orjson refuses."""

    def __init__(self, attio: AttioSandbox):
        self.attio = attio

    def dispatch(self, request: Request) -> Reply:
        reply = self.attio.dispatch(request)
        return dataclasses.replace(reply, body=reply.body.replace(b'"L5"', b'"L5 \\ud83d"'))


def test_a_page_with_a_lone_surrogate_is_read(attio, usermaven, mocked, run, env):
    """Found by a review: orjson refused the whole page (and the text could not be stored as UTF-8 either), so
    every poll stopped on it for ever."""
    add_leads(attio.workspace, "l", 10, days_back=100)
    mocked.serve(BASE, LoneSurrogate(attio))
    code, out, err = run("run", "--backfill", "--since", "2020-01-01")
    assert code == 0, err
    names = {e["event_attributes"]["deal_name"] for e in usermaven.events}
    assert len(names) == 10 and "L5 \ufffd" in names  # as a browser shows it: a surrogate alone is no character


@pytest.mark.parametrize("location", ["/v2/moved", "landed", "https://elsewhere.attio.test/v2/moved"])
def test_a_redirect_from_attio_is_followed_as_before(mocked, location):
    """Found by a review: requests go to Attio's host's connection pool directly, which does not follow a redirect
    to another host or a relative one; the manager follows it, as it did before."""
    seen: list[str] = []

    def answer(request: Request) -> Reply:
        seen.append(request.path)
        if "moved" in request.path or "landed" in request.path:
            return Reply(200, b'{"data": {"ok": true}}')
        return Reply(302, b"", headers={"Location": location})

    mocked.serve(BASE, Answer(answer))
    mocked.serve("https://elsewhere.attio.test", Answer(answer))
    client = AttioClient(BASE + "/gw", "secret-token", 100)
    assert client.get_one("/v2/self") == {"ok": True}
    assert seen[-1] in ("/v2/moved", "/gw/v2/landed")
