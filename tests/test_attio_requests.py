"""The Attio client prepares each request from a template instead of through `Session.request`: what goes on
the wire must be what `Session.request` would have sent."""

from __future__ import annotations

import pytest
import requests

from sync.attio import AttioClient

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


@pytest.mark.parametrize(("method", "path", "params", "body"), CASES)
def test_a_request_is_prepared_as_session_request_prepares_it(method, path, params, body):
    client = AttioClient("https://api.attio.test/", "secret-token", 100)
    session, template = client._session()
    ours = client._prepared(template, method, path, params, body)
    theirs = session.prepare_request(requests.Request(method, client.base_url + path, params=params, json=body,
                                                      headers=client._headers))
    assert (ours.method, ours.url, ours.body) == (theirs.method, theirs.url, theirs.body)
    assert list(ours.headers.items()) == list(theirs.headers.items())
    assert ours.hooks == theirs.hooks


def test_each_request_has_headers_of_its_own():
    client = AttioClient("https://api.attio.test", "secret-token", 100)
    _, template = client._session()
    first = client._prepared(template, "POST", "/v2/x", None, {"a": 1})
    second = client._prepared(template, "GET", "/v2/y", None, None)
    assert "Content-Length" in first.headers and "Content-Length" not in second.headers
    assert "Content-Length" not in template.headers
