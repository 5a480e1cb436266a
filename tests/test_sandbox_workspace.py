"""The generated sandbox workspace: deterministic, varied like a real CRM, and mutable like Attio."""

import re
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from sync.sandbox import Transition, Workspace
from sync.sandbox.generator import ARCHIVED_TITLE, LOST, RENAMED_FROM, RENAMED_TO, WON

START = datetime(2023, 1, 1, tzinfo=UTC)
END = datetime(2025, 1, 1, tzinfo=UTC)
ATTIO_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


@pytest.fixture(scope="module")
def workspace() -> Workspace:
    return Workspace.generate(seed=1, deals=300, start=START, end=END)


@pytest.fixture
def fresh() -> Workspace:
    return Workspace.generate(seed=5, deals=40)


def titles(ws: Workspace, record_id: str) -> list[str]:
    return [v["status"]["title"] for v in ws.stage_history(record_id)]


def histories(ws: Workspace) -> list[list[str]]:
    return [titles(ws, record_id) for record_id in ws.deal_ids()]


def snapshot(ws: Workspace) -> dict:
    return {
        "deals": {rid: ws.stage_history(rid) for rid in ws.deal_ids()},
        "people": ws.person_ids(),
        "companies": ws.company_ids(),
        "entries": {eid: ws.entry_history(eid) for eid in ws.entry_ids()},
        "transitions": ws.expected_transitions(),
    }


def test_same_seed_and_span_generate_the_same_workspace():
    first = Workspace.generate(seed=3, deals=80, start=START, end=END)
    second = Workspace.generate(seed=3, deals=80, start=START, end=END)
    assert snapshot(first) == snapshot(second)


def test_ids_depend_on_the_seed_only():
    assert Workspace.generate(seed=3, deals=30).deal_ids() != Workspace.generate(seed=4, deals=30).deal_ids()
    ids = set(Workspace.generate(seed=3, deals=30).deal_ids())
    assert ids == set(Workspace.generate(seed=3, deals=30, start=START, end=END).deal_ids())


def test_default_span_is_two_years_ending_an_hour_ago():
    ws = Workspace.generate(seed=2, deals=50)
    now = datetime.now(UTC)
    assert timedelta(minutes=59) < now - ws.end < timedelta(minutes=61)
    assert ws.end - ws.start == timedelta(days=730)
    moments = [t.active_from for t in ws.expected_transitions()]
    assert ws.start <= min(moments) and max(moments) < ws.end


def test_stage_values_chain_active_until_to_the_next_active_from(workspace):
    for record_id in workspace.deal_ids():
        record = workspace.deal(record_id)
        history = record.values["stage"]
        assert history[0].active_from == record.created_at
        for before, after in zip(history, history[1:], strict=False):
            assert before.active_from < after.active_from
            assert before.active_until == after.active_from
        assert history[-1].active_until is None


def test_timestamps_render_like_attio_with_nine_fractional_digits(workspace):
    value = workspace.stage_history(workspace.deal_ids()[10])[0]
    assert ATTIO_TS.match(value["active_from"])
    assert value["created_by_actor"]["type"] in ("workspace-member", "api-token")
    microseconds = {workspace.deal(r).created_at.microsecond for r in workspace.deal_ids()}
    assert len(microseconds) > 100  # microsecond precision is kept, not rounded to seconds


def test_stages_include_an_archived_one_and_a_renamed_one(workspace):
    by_title = {s.title: s for s in workspace.statuses}
    assert set(by_title) == {"Lead", "Qualified", "Demo", "Proposal", RENAMED_TO, WON, LOST, ARCHIVED_TITLE}
    assert by_title[ARCHIVED_TITLE].is_archived and workspace.archived_stage == by_title[ARCHIVED_TITLE].status_id
    assert by_title[WON].celebration_enabled
    assert workspace.renamed_stage == (by_title[RENAMED_TO].status_id, RENAMED_FROM, RENAMED_TO)


def test_archived_stage_appears_only_in_older_histories(workspace):
    archived = [
        value for record_id in workspace.deal_ids() for value in workspace.deal(record_id).values["stage"]
        if value.status.status_id == workspace.archived_stage
    ]
    assert archived
    assert all(v.active_until is not None and v.active_until <= workspace.archived_at for v in archived)


def test_renamed_stage_shows_its_current_title_in_histories(workspace):
    every_title = {title for history in histories(workspace) for title in history}
    assert RENAMED_TO in every_title and RENAMED_FROM not in every_title


@pytest.mark.parametrize("seed,deals", [(1, 300), (2, 8), (9, 50)])
def test_histories_cover_every_pattern_a_sync_must_handle(seed, deals):
    all_histories = histories(Workspace.generate(seed=seed, deals=deals))

    def has(pattern) -> bool:
        return any(pattern(h) for h in all_histories)

    assert has(lambda h: len(h) == 1), "a deal that never moved"
    assert has(lambda h: any(a == c != b for a, b, c in zip(h, h[1:], h[2:], strict=False))), "A->B->A"
    assert has(lambda h: LOST in h[:-1]), "lost, then reopened"
    assert has(lambda h: h[-1] == WON), "won"
    assert has(lambda h: h[-1] == LOST), "lost"
    assert has(lambda h: ARCHIVED_TITLE in h), "archived stage in history"
    assert has(lambda h: ("Lead", "Demo") in zip(h, h[1:], strict=False)), "a skipped stage"
    assert has(lambda h: h[0] != "Lead"), "created past the first stage"
    assert has(lambda h: len(h) >= 6), "long history"


@pytest.mark.parametrize("seed,deals", [(1, 300), (2, 8)])
def test_people_vary_in_emails_and_app_user_ids(seed, deals):
    ws = Workspace.generate(seed=seed, deals=deals)
    people = [ws.person(p) for p in ws.person_ids()]
    email_counts = {len(p.current("email_addresses")) for p in people}
    assert {0, 1, 2} <= email_counts
    with_user_id = [p for p in people if p.current("app_user_id")]
    assert with_user_id and len(with_user_id) < len(people)
    # Case 2 of the guide: an email but no app user id yet.
    assert any(p.current("email_addresses") and not p.current("app_user_id") for p in people)


@pytest.mark.parametrize("seed,deals", [(1, 300), (2, 8)])
def test_deals_vary_in_people_value_company_and_owner(seed, deals):
    ws = Workspace.generate(seed=seed, deals=deals)
    deals_ = [ws.deal(d) for d in ws.deal_ids()]
    people_counts = {len(d.current("associated_people")) for d in deals_}
    assert 0 in people_counts and max(people_counts) >= 2
    codes = {v.fields["currency_code"] for d in deals_ for v in d.current("value")}
    assert {"USD", "EUR", "GBP", None} <= codes
    assert any(not d.current("value") for d in deals_)
    assert any(not d.current("associated_company") for d in deals_)
    assert any(not d.current("owner") for d in deals_)
    assert all(len(d.current("associated_company")) <= 1 for d in deals_)


def test_workspace_has_about_five_members():
    ws = Workspace.generate(seed=1, deals=5)
    assert len(ws.members) == 5
    assert {m.access_level for m in ws.members} >= {"admin", "member"}


def test_pipeline_entries_have_their_own_statuses_and_one_deal_has_two_entries(workspace):
    pipeline = workspace.pipeline
    assert pipeline is not None and pipeline.api_slug == "sales_pipeline" and pipeline.parent_object == "deals"
    deal_status_ids = {s.status_id for s in workspace.statuses}
    parents: dict[str, int] = {}
    for entry_id in workspace.entry_ids():
        entry = workspace.entry(entry_id)
        assert entry.parent_record_id in workspace.deals.items
        parents[entry.parent_record_id] = parents.get(entry.parent_record_id, 0) + 1
        for value in workspace.entry_history(entry_id):
            assert value["status"]["id"]["object_id"] == workspace.list_id
            assert value["status"]["id"]["status_id"] not in deal_status_ids
    assert max(parents.values()) >= 2
    assert workspace.expected_entry_transitions()


def test_workspace_without_list_has_no_entries():
    ws = Workspace.generate(seed=1, deals=20, with_list=False)
    assert ws.pipeline is None and ws.list_id is None and ws.entry_ids() == []


def test_move_deal_closes_the_current_value_and_appends_a_new_one(fresh):
    record_id = fresh.deal_ids()[3]
    before = fresh.stage_history(record_id)
    current = before[-1]["status"]["title"]
    target = "Proposal" if current != "Proposal" else "Demo"
    new = fresh.move_deal(record_id, target)
    after = fresh.stage_history(record_id)
    assert len(after) == len(before) + 1
    assert after[-1] == new and new["status"]["title"] == target and new["active_until"] is None
    assert after[-2]["active_until"] == new["active_from"]
    moved_at = fresh.deal(record_id).values["stage"][-1].active_from
    assert abs(moved_at - datetime.now(UTC)) < timedelta(seconds=5)
    assert fresh.expected_transitions(since=moved_at) == [
        Transition(record_id, before[-1]["status"]["id"]["status_id"], fresh.status_id(target), moved_at)
    ]


def test_move_deal_accepts_a_status_id_and_rejects_archived_stages_and_past_times(fresh):
    record_id = fresh.deal_ids()[0]
    won = fresh.status_id(WON)
    assert fresh.move_deal(record_id, won)["status"]["id"]["status_id"] == won
    with pytest.raises(ValueError):
        fresh.move_deal(record_id, ARCHIVED_TITLE)
    with pytest.raises(ValueError):
        fresh.move_deal(record_id, "Lead", at=START)
    with pytest.raises(KeyError):
        fresh.move_deal(record_id, "No such stage")


def test_moves_in_the_same_microsecond_still_increase_active_from(fresh):
    record_id = fresh.deal_ids()[1]
    moments = [fresh.move_deal(record_id, stage)["active_from"] for stage in ("Lead", "Demo", "Lead", "Demo")]
    assert moments == sorted(moments) and len(set(moments)) == 4


def test_moving_to_the_current_stage_writes_a_value_but_no_transition(fresh):
    record_id = fresh.deal_ids()[2]
    current = fresh.stage_history(record_id)[-1]["status"]["title"]
    transitions = fresh.expected_transitions()
    fresh.move_deal(record_id, current)
    assert fresh.stage_history(record_id)[-1]["status"]["title"] == current
    assert fresh.expected_transitions() == transitions


def test_create_deal_starts_a_history_with_a_transition_from_none(fresh):
    person = fresh.add_person(email="Jane.Doe+crm@Acme.example", user_id="app-42", name="Jane Doe")
    company = fresh.add_company("Acme", "acme.example")
    record_id = fresh.create_deal(
        "Acme pilot", "Qualified", people=[person], company=company, value=(1200.5, None),
        owner=fresh.members[1].member_id,
    )
    deal = fresh.deal(record_id)
    assert record_id == fresh.deal_ids()[-1]
    assert [v.fields["target_record_id"] for v in deal.current("associated_people")] == [person]
    assert deal.current("value")[0].fields == {"currency_value": 1200.5, "currency_code": None}
    assert deal.current("owner")[0].fields["referenced_actor_id"] == fresh.members[1].member_id
    (transition,) = fresh.expected_transitions(since=deal.created_at)
    assert transition == Transition(record_id, None, fresh.status_id("Qualified"), deal.created_at)
    email = fresh.person(person).current("email_addresses")[0].fields
    assert email["email_address"] == "jane.doe+crm@acme.example" and email["email_local_specifier"] == "jane.doe"
    assert email["original_email_address"] == "Jane.Doe+crm@Acme.example"


def test_person_email_and_user_id_changes_keep_their_history(fresh):
    person = fresh.add_person(email="old@example.com")
    fresh.set_person_email(person, "new@example.com")
    fresh.set_person_user_id(person, "u-1")
    record = fresh.person(person)
    assert [v.fields["email_address"] for v in record.current("email_addresses")] == ["new@example.com"]
    assert [v.fields["email_address"] for v in record.values["email_addresses"]] == [
        "old@example.com", "new@example.com"
    ]
    assert record.current("app_user_id")[0].fields["value"] == "u-1"
    fresh.set_person_email(person, None)
    fresh.set_person_user_id(person, None)
    assert not record.current("email_addresses") and not record.current("app_user_id")


def test_set_deal_people_keeps_the_values_of_people_who_stay(fresh):
    a, b, c = (fresh.add_person(email=f"{n}@example.com") for n in "abc")
    record_id = fresh.create_deal("People deal", "Lead", people=[a, b])
    kept = fresh.deal(record_id).current("associated_people")[0]
    fresh.set_deal_people(record_id, [a, c])
    current = fresh.deal(record_id).current("associated_people")
    assert [v.fields["target_record_id"] for v in current] == [a, c]
    assert current[0] is kept


def test_delete_deal_removes_it_with_its_history_and_entries(fresh):
    record_id = fresh.deal_ids()[0]
    entry_id = fresh.add_entry(record_id, "Lead")
    fresh.delete_deal(record_id)
    assert record_id not in fresh.deal_ids()
    assert entry_id not in fresh.entry_ids()
    assert all(t.record_id != record_id for t in fresh.expected_transitions())
    with pytest.raises(KeyError):
        fresh.stage_history(record_id)


def test_move_entry_writes_to_the_entry_history_only(fresh):
    record_id = fresh.deal_ids()[5]
    entry_id = fresh.add_entry(record_id, "Lead")
    deal_history = fresh.stage_history(record_id)
    value = fresh.move_entry(entry_id, "Demo")
    assert value["status"]["id"]["object_id"] == fresh.list_id
    assert [v["status"]["title"] for v in fresh.entry_history(entry_id)] == ["Lead", "Demo"]
    assert fresh.stage_history(record_id) == deal_history
    assert fresh.expected_entry_transitions()[-1].entry_id == entry_id


def test_expected_transitions_are_consecutive_status_changes_within_the_window(workspace):
    everything = workspace.expected_transitions()
    manual = []
    for record_id in workspace.deal_ids():
        history = workspace.stage_history(record_id)
        previous = None
        for value in history:
            status_id = value["status"]["id"]["status_id"]
            if status_id != previous:
                manual.append((record_id, previous, status_id, value["active_from"]))
            previous = status_id
    rendered = {(t.record_id, t.from_status_id, t.to_status_id, t.active_from.strftime("%Y-%m-%dT%H:%M:%S.%f000Z"))
                for t in everything}
    assert rendered == set(manual) and len(everything) == len(manual)
    assert [t.active_from for t in everything] == sorted(t.active_from for t in everything)
    pivot = everything[len(everything) // 2].active_from
    assert workspace.expected_transitions(until=pivot) + workspace.expected_transitions(since=pivot) == everything
    assert all(t.active_from >= pivot for t in workspace.expected_transitions(since=pivot))


def test_concurrent_moves_keep_histories_consistent(fresh):
    record_ids = fresh.deal_ids()[:4]

    def mover(record_id: str) -> None:
        for stage in ("Lead", "Qualified", "Demo", "Proposal") * 5:
            fresh.move_deal(record_id, stage)

    threads = [threading.Thread(target=mover, args=(r,)) for r in record_ids * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for record_id in record_ids:
        history = fresh.deal(record_id).values["stage"]
        assert all(a.active_until == b.active_from and a.active_from < b.active_from
                   for a, b in zip(history, history[1:], strict=False))
    assert len(fresh.deals.stage_index) == len(fresh.deals.items)


def test_ten_thousand_deals_generate_with_unique_ids():
    ws = Workspace.generate(seed=1, deals=10_000)
    assert len(ws.deal_ids()) == len(set(ws.deal_ids())) == 10_000



def test_stage_changes_option_gives_every_deal_that_many_moves():
    from sync.sandbox.generator import _Generator

    workspace = Workspace.generate(seed=4, deals=200, stage_changes=(3, 6))
    moves = Counter(t.record_id for t in workspace.expected_transitions() if t.from_status_id)
    outside = [d for d in workspace.deal_ids() if not 3 <= moves[d] <= 6]
    # only the scripted deals that guarantee the variety keep their own shape
    assert len(outside) <= len(_Generator._SCRIPTS)
    assert {moves[d] for d in workspace.deal_ids() if d not in outside} == {3, 4, 5, 6}
