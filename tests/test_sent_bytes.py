"""Delivery sends the stored JSON text with the api_key spliced in, not the event decoded and encoded again:
the bytes must be those `tests/test_payload_bytes.py` pins, for any event."""

from __future__ import annotations

import json
import random
import sqlite3

import requests
from sqlite_utils import Database

from sync.delivery import deliver
from sync.events import for_sending, sending_texts
from sync.recording import ledger_row
from sync.state import State
from sync.state.ledger import encoded
from sync.transitions import transitions_from_history
from sync.usermaven import UsermavenClient
from tests.inprocess import record_bodies
from tests.test_payload_bytes import EVENT_IDS, HISTORY, REF, STORED, URL, _events


def test_delivery_sends_the_pinned_bytes_from_the_stored_text(mocked):
    bodies = record_bodies(mocked, URL)
    state = State(Database(sqlite3.connect(":memory:")))
    events = _events()
    rows = [ledger_row(t, e, "backfill", None)
            for t, e in zip(transitions_from_history(REF, HISTORY), events, strict=True)]
    state.ledger.add(rows)
    sent = list(deliver(state, UsermavenClient(URL, "key", "token"), "key"))
    assert sum(c.sent for c in sent) == 2
    # What main sent: every event decoded from the ledger, api_key first, the array encoded in one go.
    assert bodies == [json.dumps([for_sending(e, "key") for e in events], ensure_ascii=False).encode()]
    assert bodies[0].endswith(b", " + ('{"api_key": "key", ' + (STORED % EVENT_IDS[1])[1:]).encode() + b"]")
    assert {r[0] for r in state.db.execute("select state from ledger")} == {"sent"}


def _value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-10**15, 10**15)
    if kind == 3:
        return rng.choice([0.1, 1234.5, -2.5e-7, 1e300, 3.0, rng.random() * 10**rng.randint(-5, 12)])
    if kind in (4, 5):
        return "".join(rng.choice('ab"\\/\n\t\x00\x1fé🎉\u2028 ') for _ in range(rng.randint(0, 12)))
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {str(_value(rng, 3)): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def test_the_stored_text_is_json_dumps_of_the_event():
    rng = random.Random(5)
    for _ in range(3000):
        event = {str(_value(rng, 3)): _value(rng) for _ in range(rng.randint(0, 6))}
        assert encoded(event) == json.dumps(event, ensure_ascii=False)


def test_the_spliced_text_is_the_text_of_the_event_encoded_again():
    rng = random.Random(11)
    for _ in range(3000):
        event = {str(_value(rng, 3)): _value(rng) for _ in range(rng.randint(0, 6))}
        event.pop("api_key", None)  # never stored: a secret
        key = rng.choice(["key", "um_Ké\"y\\", ""])
        stored = json.dumps(event, ensure_ascii=False)
        assert sending_texts([stored], key)[0] == json.dumps(for_sending(json.loads(stored), key), ensure_ascii=False)


def test_a_batch_of_encoded_events_is_their_json_array(mocked):
    bodies = record_bodies(mocked, URL)
    client = UsermavenClient(URL, "key", "token")
    events = [{"a": "é", "b": [1, 2.5, None]}, {}, {"c": {"d": True}}]
    client.send_encoded([json.dumps(e, ensure_ascii=False) for e in events])
    client.send(events)
    assert bodies == [json.dumps(events, ensure_ascii=False).encode()] * 2


def test_a_batch_goes_on_the_wire_as_requests_would_send_it(mocked):
    """The client spoke requests before urllib3: method, URL (the token in its query), body and content type
    are what requests' `Session.post` sent."""
    bodies = record_bodies(mocked, URL)
    client = UsermavenClient(URL, "key", "tok/en+1", timeout=5)
    body = '[{"a": "é"}]'.encode()
    client.send_encoded(['{"a": "é"}'])
    theirs = requests.Session().prepare_request(requests.Request(
        "POST", URL, params={"token": "key.tok/en+1"}, data=body, headers={"Content-Type": "application/json"}))
    assert mocked.calls == [("POST", theirs.url)]
    assert bodies == [theirs.body]
