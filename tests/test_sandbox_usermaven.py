"""The Usermaven collector over real loopback HTTP: token and api_key checks, batches, size limit, JSONL
recording, deduplication by event_id and injected faults."""

import json
from collections.abc import Iterator

import pytest
import requests

from sync.sandbox import Faults, UsermavenCollector
from sync.sandbox.usermaven import MAX_EVENT_BYTES

TOKEN = "sandbox-um-key.sandbox-um-server-token"


def event(event_id: str = "t-1", **extra) -> dict:
    return {
        "api_key": "sandbox-um-key",
        "event_type": "Deal Stage Changed",
        "event_id": event_id,
        "_timestamp": 1706781600000,
        "url": "https://example.com",
        "user": {"id": "app-user-42", "email": "jane@acme.example"},
        "event_attributes": {"deal_stage": "Won 🎉", "source": "Attio CRM"},
        **extra,
    }


@pytest.fixture
def collector() -> Iterator[UsermavenCollector]:
    with UsermavenCollector() as server:
        yield server


def send(collector: UsermavenCollector, body, token: str | None = TOKEN, **kwargs) -> requests.Response:
    params = {"token": token} if token is not None else {}
    return requests.post(collector.events_url, params=params, json=body, timeout=5, **kwargs)


def test_start_returns_the_full_events_url():
    collector = UsermavenCollector()
    url = collector.start()
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/v1/s2s/event")
        assert url == collector.events_url
    finally:
        collector.stop()


def test_one_event_object_is_accepted_and_recorded(collector):
    response = send(collector, event())
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert collector.events == [event()]
    assert collector.requests == 1


def test_an_array_of_events_is_recorded_in_order(collector):
    batch = [event("a"), event("b"), event("c")]
    assert send(collector, batch).json() == {"status": "ok"}
    send(collector, event("d"))
    assert [e["event_id"] for e in collector.events] == ["a", "b", "c", "d"]


@pytest.mark.parametrize("token", [None, "", "sandbox-um-key", "sandbox-um-key.wrong", "wrong.sandbox-um-server-token"])
def test_missing_or_wrong_token_answers_401_and_records_nothing(collector, token):
    response = send(collector, event(), token=token)
    assert response.status_code == 401
    assert set(response.json()) == {"message", "error"} and response.json()["error"] == ""
    assert collector.events == []


def test_api_key_mismatch_rejects_the_whole_request(collector):
    response = send(collector, [event("ok"), event("bad", api_key="someone-else")])
    assert response.status_code == 400 and "api_key" in response.json()["message"]
    assert collector.events == []


def test_an_event_without_api_key_is_accepted(collector):
    body = event()
    del body["api_key"]
    assert send(collector, body).status_code == 200


@pytest.mark.parametrize("body", [
    {"event_id": "no-type"},
    [event("fine"), {"event_type": ""}],
    ["not an object"],
    42,
])
def test_events_without_event_type_or_not_objects_are_400(collector, body):
    response = send(collector, body)
    assert response.status_code == 400 and response.json()["error"] == ""
    assert collector.events == []


def test_invalid_json_is_400(collector):
    response = requests.post(collector.events_url, params={"token": TOKEN}, data=b'{"event_type": ',
                             headers={"Content-Type": "application/json"}, timeout=5)
    assert response.status_code == 400
    assert collector.events == []


def test_event_over_51200_bytes_is_400_and_one_at_the_limit_is_accepted(collector):
    base = event(padding="")
    room = MAX_EVENT_BYTES - len(json.dumps(base, ensure_ascii=False, separators=(",", ":")).encode())
    at_limit = event(padding="x" * room)
    over = event(padding="x" * (room + 1))
    assert send(collector, [over]).status_code == 400
    assert collector.events == []
    assert send(collector, [at_limit]).status_code == 200
    assert len(collector.events) == 1


def test_jsonl_file_gets_one_line_per_accepted_event(tmp_path):
    path = tmp_path / "events.jsonl"
    with UsermavenCollector(jsonl_path=path) as collector:
        send(collector, [event("a"), event("b")])
        send(collector, event("bad", api_key="nope"))
        send(collector, event("c"))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == ["a", "b", "c"]
    assert json.loads(lines[0])["event_attributes"]["deal_stage"] == "Won 🎉"


def test_unique_events_collapse_by_event_id_with_the_last_winning(collector):
    send(collector, [event("a", v=1), event("b"), event("a", v=2)])
    no_id = event()
    del no_id["event_id"]
    send(collector, [no_id, no_id])
    unique = collector.unique_events()
    assert [(e.get("event_id"), e.get("v")) for e in unique] == [("a", 2), ("b", None), (None, None), (None, None)]


@pytest.mark.parametrize("status", [500, 401, 400])
def test_fail_next_answers_that_status_without_recording_then_recovers(collector, status):
    assert collector.fail_next(2, status=status) == 2
    assert [send(collector, event()).status_code for _ in range(3)] == [status, status, 200]
    assert len(collector.events) == 1
    assert collector.stats == {"requests": 3, "events": 1, "rejected": 0, "faults": 2}


def test_batches_keep_each_accepted_request_as_sent(collector):
    send(collector, [event("a"), event("a")])
    send(collector, [event("bad", api_key="nope")])
    send(collector, event("b"))
    assert collector.batches == [[event("a"), event("a")], [event("b")]]
    assert collector.events == [event("a"), event("a"), event("b")]
    collector.batches.clear()
    assert collector.events == [] and collector.stats["events"] == 0


def test_scripted_answers_are_taken_in_order_and_record_nothing(collector):
    over = (400, {"message": "event is over the size limit", "error": ""})
    collector.answers = [over, None, (503, {"message": "busy", "error": ""})]
    replies = [send(collector, [event(str(i))]) for i in range(4)]
    assert [r.status_code for r in replies] == [400, 200, 503, 200]
    assert replies[0].json() == over[1]
    assert collector.batches == [[event("1")], [event("3")]]
    assert collector.answers == []
    assert collector.stats == {"requests": 4, "events": 2, "rejected": 0, "faults": 2}


def test_a_wrong_token_is_refused_before_a_scripted_answer_is_taken(collector):
    collector.answers.append((500, {"message": "boom", "error": ""}))
    assert send(collector, event(), token="wrong.token").status_code == 401
    assert send(collector, event()).status_code == 500
    assert send(collector, event()).status_code == 200


def test_a_request_let_through_by_a_scripted_none_is_still_checked(collector):
    collector.answers = [None]
    assert send(collector, [event("ok"), event("bad", api_key="someone-else")]).status_code == 400
    assert collector.events == [] and collector.answers == []


def test_fail_next_drop_closes_the_connection_and_records_nothing(collector):
    collector.fail_next(1, kind="drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        send(collector, event())
    assert collector.events == []
    assert send(collector, event()).status_code == 200


def test_fail_next_timeout_records_the_event_but_answers_too_late():
    with UsermavenCollector(faults=Faults(timeout_seconds=1.0)) as collector:
        collector.fail_next(1, kind="timeout")
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.post(collector.events_url, params={"token": TOKEN}, json=event("t"), timeout=0.2)
        assert send(collector, event("t")).status_code == 200
        assert len(collector.events) == 2 and len(collector.unique_events()) == 1


def test_error_rate_fails_some_requests_reproducibly():
    def run() -> list[int]:
        with UsermavenCollector(error_rate=0.5) as collector:
            return [send(collector, event(str(i))).status_code for i in range(20)]

    first = run()
    assert first == run()
    assert 200 in first and set(first) - {200}


def test_admin_endpoints_serve_events_and_stats_and_inject_faults(collector):
    send(collector, event("a"))
    base = collector.events_url.removesuffix("/api/v1/s2s/event")
    assert requests.get(f"{base}/_sandbox/events").json() == collector.events
    assert requests.get(f"{base}/_sandbox/stats").json()["events"] == 1
    assert requests.post(f"{base}/_sandbox/fail_next", json={"n": 1, "status": 503}).json() == {"pending": 1}
    assert send(collector, event("b")).status_code == 503
    assert requests.get(f"{base}/_sandbox/batches").json() == [[event("a")]]
    scripted = {"answers": [[400, {"message": "no", "error": ""}], None]}
    assert requests.post(f"{base}/_sandbox/answers", json=scripted).json() == {"pending": 2}
    assert collector.answers == [(400, {"message": "no", "error": ""}), None]
    assert requests.post(f"{base}/_sandbox/answers", json={"answers": [[400]]}).status_code == 400
    requests.post(f"{base}/_sandbox/reset")
    assert collector.events == [] and collector.requests == 0 and collector.answers == []


def test_unknown_path_is_404(collector):
    base = collector.events_url.removesuffix("/api/v1/s2s/event")
    assert requests.post(f"{base}/api/v1/event", params={"token": TOKEN}, json=event()).status_code == 404
