"""Checkpoints: named moments on Attio's clock (`poll`: changes before it are recorded; `baseline`)."""

from __future__ import annotations

from sqlite_utils import Database

from sync.state.sql import now_text

POLL, BASELINE = "poll", "baseline"


class Checkpoints:
    def __init__(self, db: Database):
        self.db = db

    def get(self, name: str) -> str | None:
        row = self.db.execute("select value from checkpoints where name = ?", [name]).fetchone()
        return row[0] if row else None

    def set(self, name: str, value: str) -> None:
        """Call inside `State.atomic()`, after what the checkpoint covers is written in the same transaction
        or an earlier one."""
        self.db.table("checkpoints").upsert({"name": name, "value": value, "updated_at": now_text()}, pk="name")

    def all(self) -> dict[str, str]:
        return {row[0]: row[1] for row in self.db.execute("select name, value from checkpoints")}
