"""`check`: before the first run, everything the configuration needs, one finding at a time, each failure
saying what to fix; and the canary — one clearly named test event — before a long backfill."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sync.attio import (
    AttioClient,
    check_stage_event_types,
    list_parent_problem,
    stage_attribute_slug,
    user_id_attribute_slug,
)
from sync.attributes import AttributeProblem, select_attributes
from sync.config import Config
from sync.errors import AttioAuthError, AttioError, AttioNotFound, SetupError, StateError
from sync.events import EVENT_ATTRIBUTE_KEYS
from sync.state import check_file

TEST_EVENT_TYPE = "attio-usermaven-sync test"
TEST_USER_ID = "attio-usermaven-sync-test"
BASE_SCOPES = ("record_permission:read", "object_configuration:read", "user_management:read")
LIST_SCOPES = ("list_entry:read", "list_configuration:read")


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    detail: str  # what was found; on a failure, what to fix


@dataclass(frozen=True)
class Stage:
    status_id: str
    title: str  # as it will appear in the events' deal_stage
    archived: bool


@dataclass
class SetupReport:
    findings: list[Finding] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def add(self, ok: bool, what: str, detail: str) -> bool:
        self.findings.append(Finding(ok, what, detail))
        return ok


def needed_scopes(config: Config) -> tuple[str, ...]:
    """The Attio token scopes this configuration reads with."""
    return BASE_SCOPES + (LIST_SCOPES if config.attio_list else ())


def check_setup(config: Config, client: AttioClient) -> SetupReport:
    """Every check, in the order a person fixes them; later checks are skipped when an earlier one makes
    them meaningless (no token, no object)."""
    report = SetupReport()
    try:
        _check_attio(config, client, report)
    except AttioAuthError as exc:
        report.add(False, "Attio token", f"{exc}: check ATTIO_API_KEY and the token's scopes")
    except AttioError as exc:
        report.add(False, "Attio", f"{exc}: check ATTIO_BASE_URL and the network")
    report.findings.append(state_writable(config.state_db))
    return report


def _check_attio(config: Config, client: AttioClient, report: SetupReport) -> None:
    info = client.get_one("/v2/self")
    if not report.add(bool(info.get("active")), "Attio token",
                      f"active, workspace {info.get('workspace_name')!r} ({info.get('workspace_slug') or '?'})"
                      if info.get("active") else
                      "Attio says ATTIO_API_KEY is not active: create a new access token (Workspace settings → "
                      "Developers)"):
        return
    granted = set(str(info.get("scope") or "").split())
    for scope in needed_scopes(config):
        report.add(scope in granted, f"scope {scope}", "granted" if scope in granted else
                   "not granted: edit the token's scopes in Attio (Workspace settings → Developers)")
    if not _attribute_exists(client, report, "objects", config.attio_object, "ATTIO_OBJECT"):
        return
    target, identifier, setting = (("lists", config.attio_list, "ATTIO_LIST") if config.attio_list
                                   else ("objects", config.attio_object, "ATTIO_OBJECT"))
    if config.attio_list and not _attribute_exists(client, report, target, identifier, setting):
        return
    if config.attio_list:
        problem = list_parent_problem(client, client.get_list(config.attio_list), config.attio_list,
                                      config.attio_object)
        report.add(problem is None, "list's object", problem or f"{config.attio_list!r} holds records of "
                   f"{config.attio_object!r}")
    attributes = client.attributes(target, identifier)
    try:
        slug = stage_attribute_slug(attributes, config.attio_stage_attribute, f"{target[:-1]} {identifier!r}")
    except SetupError as exc:
        report.add(False, "stage attribute", str(exc))
    else:
        report.add(True, "stage attribute", f"{identifier}.{slug} is a status attribute")
        for status in client.statuses(target, identifier, slug):
            report.stages.append(Stage(str(status.get("id", {}).get("status_id", "?")),
                                       str(status.get("title", "")), bool(status.get("is_archived"))))
        report.add(bool(report.stages), "stages", f"{len(report.stages)} stage(s)" if report.stages else
                   f"{identifier}.{slug} has no stages: add them in Attio")
    if config.attio_user_id_attribute:
        wanted = config.attio_user_id_attribute
        try:
            slug = user_id_attribute_slug(client.attributes("objects", "people"), wanted)
        except SetupError as exc:
            report.add(False, "user id attribute", str(exc))
        else:
            report.add(True, "user id attribute", f"people.{slug}{f' (id {wanted})' if slug != wanted else ''} exists")
    _check_event_settings(config, client, attributes, report)


def _check_event_settings(config: Config, client: AttioClient, attributes: list[dict], report: SetupReport) -> None:
    """ATTIO_EVENT_ATTRIBUTES and USERMAVEN_STAGE_EVENT_TYPES, as `run` checks them before reading deals."""
    if config.attio_event_attributes:
        object_attributes = client.attributes("objects", config.attio_object) if config.attio_list else attributes
        try:
            chosen = select_attributes(
                config.attio_event_attributes, object_attributes, attributes if config.attio_list else [],
                EVENT_ATTRIBUTE_KEYS, f"the object {config.attio_object!r}",
                repr(config.attio_list) if config.attio_list else None)
        except AttributeProblem as exc:
            for problem in exc.problems:
                report.add(False, "event attributes", f"ATTIO_EVENT_ATTRIBUTES: {problem}")
        else:
            report.add(True, "event attributes", ", ".join(
                f"{a.slug} ({a.type}{', of the list entry' if a.on_list else ''})" for a in chosen))
    if config.usermaven_stage_event_types and report.stages:
        try:
            check_stage_event_types(config.usermaven_stage_event_types,
                                    {s.status_id: s.title for s in report.stages}, config.attio_stage_attribute)
        except SetupError as exc:
            report.add(False, "stage event types", str(exc))
        else:
            report.add(True, "stage event types",
                       f"{len(config.usermaven_stage_event_types)} stage(s) sent under their own event type")


def _attribute_exists(client: AttioClient, report: SetupReport, target: str, identifier: str, setting: str) -> bool:
    noun = target[:-1]
    try:
        client.attributes(target, identifier)
    except AttioNotFound:
        return report.add(False, setting, f"there is no {noun} {identifier!r} in this workspace: check {setting} "
                          f"(its slug or id){' and that the Deals object is enabled' if identifier == 'deals' else ''}")
    return report.add(True, setting, f"{noun} {identifier!r} exists")


def state_writable(path: Path) -> Finding:
    """Whether the state file (and its lock and journal beside it) can be created or written, creating nothing."""
    what = "state"
    if path.exists():
        if not path.is_file():
            return Finding(False, what, f"{path} is not a file: set --state or SYNC_STATE_DB to a file name")
        ok = os.access(path, os.R_OK | os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
        if not ok:
            return Finding(False, what, f"{path} (or its folder, for the lock and journal) is not writable by this "
                           "user: run as the user that runs the schedule, or fix the owner")
        try:
            if path.stat().st_size > 0:
                check_file(path)
        except StateError as exc:
            return Finding(False, what, str(exc))
        return Finding(True, what, f"{path} exists, is a state this version can use, and is writable")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    ok = parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)
    return Finding(ok, what, f"{path} will be created by the first run" if ok else
                   f"{path} cannot be created: {parent} is not writable by this user; set --state or SYNC_STATE_DB "
                   "to a writable place")


def canary_event(config: Config, at: datetime, event_id: str | None = None) -> dict:
    """The canary: its own event type and user, a fresh id, `_timestamp` at `at`. Without `api_key`."""
    return {
        "event_type": TEST_EVENT_TYPE,
        "event_id": event_id or str(uuid.uuid4()),
        "_timestamp": int(at.timestamp() * 1000),
        "url": config.usermaven_site_url,
        "user": {"id": TEST_USER_ID},
        "event_attributes": {
            "source": "attio-usermaven-sync check --send-test-event",
            "intended_time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sent_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "note": "a test of historical timestamps and event ids; safe to ignore",
        },
    }
