"""The exact bytes an event is stored and sent as: pinned, so that speed work cannot change them."""

from __future__ import annotations

import random
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta, timezone

from sqlite_utils import Database

from sync.events import EventSettings, build_event, for_sending
from sync.models import Deal, DealRef, Identity, StageValue, epoch_ms, format_time, utc_time
from sync.recording import ledger_row
from sync.state import State
from sync.transitions import EVENT_NAMESPACE, transitions_from_history, uuid5_text
from sync.usermaven import UsermavenClient
from tests.inprocess import record_bodies

URL = "https://events.usermaven.test/api/v1/s2s/event"
REF = DealRef("rec-1", "ent-1")
HISTORY = [
    StageValue("st-lead", "Lead", datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "att-1", "list-1"),
    StageValue("st-won", "Won 🎉 \"quoted\"", datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC), "att-1", "list-1"),
]
DEAL = Deal("rec-1", name="Ünïcode deal", value=1234.5, currency="EUR", owner_id="m-1",
            people_ids=("p-1",), company_id="c-1", web_url="https://app.attio.com/x/deals/rec-1")
IDENTITY = Identity(user_id="u-42", email="ana@example.com", case="user_id")
SETTINGS = EventSettings("Deal Stage Changed", "https://acme.example")

EVENT_IDS = ["8ae2dd00-7bf0-596c-8186-bc236a4f89c0", "d37a35f7-e9b3-528f-b67f-0de748056c30"]
STORED = (  # as main stored it before any speed work (main at c427442, issue 9's fields)
    '{"event_type": "Deal Stage Changed", "event_id": "%s", "_timestamp": 1738555506000, "utc_time": '
    '"2025-02-03T04:05:06.000000Z", "url": "https://acme.example", '
    '"user": {"id": "u-42", "email": "ana@example.com"}, '
    '"company": {"id": "c-1", "name": "Acme"}, "event_attributes": {"deal_id": "rec-1", "deal_name": '
    '"Ünïcode deal", "deal_stage": "Won 🎉 \\"quoted\\"", "deal_stage_id": "st-won", "previous_stage": '
    '"Lead", "previous_stage_id": "st-lead", "first_time_in_stage": true, "seconds_in_previous_stage": '
    '2768460, "deal_value": 1234.5, "deal_currency": "EUR", "deal_owner": "Olga Owner", "deal_url": '
    '"https://app.attio.com/x/deals/rec-1", "deal_created_at": null, '
    '"stage_changed_at": "2025-02-03T04:05:06.000000Z", '
    '"source": "Attio CRM", "entry_id": "ent-1"}}'
)


def _events() -> list[dict]:
    transitions = transitions_from_history(REF, HISTORY)
    return [build_event(t, DEAL, SETTINGS, IDENTITY, "Acme", "Olga Owner") for t in transitions]


def test_event_ids_are_pinned():
    assert [t.event_id for t in transitions_from_history(REF, HISTORY)] == EVENT_IDS


def test_ledger_stores_the_pinned_payload_bytes():
    transitions = transitions_from_history(REF, HISTORY)
    state = State(Database(sqlite3.connect(":memory:")))
    state.ledger.add([ledger_row(t, e, "backfill", None) for t, e in zip(transitions, _events(), strict=True)])
    stored = dict(state.db.execute("select event_id, payload from ledger").fetchall())
    assert stored[EVENT_IDS[1]] == STORED % EVENT_IDS[1]
    row = state.db.execute("select changed_at, from_stage, to_stage, state from ledger where event_id = ?",
                           [EVENT_IDS[1]]).fetchone()
    assert row == ("2025-02-03T04:05:06.000000Z", "Lead", 'Won 🎉 "quoted"', "pending")
    first = state.db.execute("select changed_at, payload from ledger where event_id = ?", [EVENT_IDS[0]]).fetchone()
    assert first[0] == "2025-01-02T03:04:05.678901Z"
    assert '"_timestamp": 1735787045678' in first[1] and '"previous_stage": null' in first[1]


def test_usermaven_receives_the_pinned_bytes(mocked):
    bodies = record_bodies(mocked, URL)
    transitions = transitions_from_history(REF, HISTORY)
    state = State(Database(sqlite3.connect(":memory:")))
    state.ledger.add([ledger_row(t, e, "backfill", None) for t, e in zip(transitions, _events(), strict=True)])
    rows = [row for chunk in state.ledger.iter_pending() for row in chunk]
    UsermavenClient(URL, "key", "token").send([for_sending(row["payload"], "key") for row in rows])
    sent = ('{"api_key": "key", ' + (STORED % EVENT_IDS[1])[1:]).encode()
    assert bodies[0].endswith(b", " + sent + b"]")
    assert bodies[0].startswith(b'[{"api_key": "key", "event_type": "Deal Stage Changed", "event_id": "'
                                + EVENT_IDS[0].encode())


def test_fast_event_id_and_time_forms_match_the_standard_library():
    rng = random.Random(7)
    for _ in range(2000):
        name = "".join(rng.choice("ab:-Zé🎉0123456789") for _ in range(rng.randint(0, 80)))
        assert uuid5_text(name) == str(uuid.uuid5(EVENT_NAMESPACE, name))
        moment = datetime(rng.randint(1000, 2100), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                          rng.randint(0, 59), rng.randint(0, 59), rng.choice([0, rng.randint(0, 999_999)]),
                          tzinfo=timezone(timedelta(minutes=rng.randint(-720, 720))))
        assert format_time(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # utc_time and epoch_ms: the instant floored to the millisecond, as the standard library computes it
        utc = moment.astimezone(UTC)
        floored = utc.replace(microsecond=utc.microsecond // 1000 * 1000)
        assert utc_time(moment) == floored.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert epoch_ms(moment) == (floored - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
