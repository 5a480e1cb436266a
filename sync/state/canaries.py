"""Test events sent by `check --send-test-event`, so that `--resend` can send the same one again."""

from __future__ import annotations

import json

from sqlite_utils import Database

from sync.state.sql import now_text


class Canaries:
    def __init__(self, db: Database):
        self.db = db

    def record_send(self, event: dict) -> int:
        """Note one send of `event` (without `api_key`); return how many times this id has been sent."""
        with self.db.atomic():
            row = self.db.execute("select sends from canaries where event_id = ?", [event["event_id"]]).fetchone()
            sends = (row[0] if row else 0) + 1
            self.db.table("canaries").upsert(
                {"event_id": event["event_id"], "payload": json.dumps(event, ensure_ascii=False), "sends": sends,
                 "last_sent_at": now_text()}, pk="event_id")
        return sends

    def last(self) -> dict | None:
        """The test event sent most recently, as it was sent."""
        row = self.db.execute("select payload from canaries order by last_sent_at desc limit 1").fetchone()
        return json.loads(row[0]) if row else None
