"""The run log: one row per command run, what `status` shows."""

from __future__ import annotations

from sqlite_utils import Database

from sync.state.sql import now_text


class Runs:
    def __init__(self, db: Database):
        self.db = db

    def start(self, command: str) -> int:
        with self.db.atomic():
            cursor = self.db.execute("insert into runs (command, started_at) values (?, ?)", [command, now_text()])
        return int(cursor.lastrowid or 0)

    def finish(self, run_id: int, **fields: object) -> None:
        with self.db.atomic():
            self.db.table("runs").update(run_id, {**fields, "finished_at": now_text()})

    def last(self, limit: int = 10) -> list[dict]:
        return list(self.db.query("select * from runs order by id desc limit ?", [limit]))

    def last_success(self, commands: tuple[str, ...] = ("run", "backfill")) -> str | None:
        """When the last run of these commands that ended with exit code 0 finished."""
        row = self.db.execute(
            f"select max(finished_at) from runs where exit_code = 0 and command in ({','.join('?' * len(commands))})",
            list(commands)).fetchone()
        return row[0] if row else None
