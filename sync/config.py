"""Configuration: environment variables, optionally read from a TOML file (the environment wins)."""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

from sync.clock import MIN_OVERLAP_SECONDS
from sync.errors import ConfigError
from sync.redact import MIN_SECRET_LENGTH


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    secret: bool = False
    required: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("ATTIO_API_KEY", None, secret=True, required=True),
    Setting("ATTIO_BASE_URL", "https://api.attio.com"),
    Setting("ATTIO_OBJECT", "deals"),
    Setting("ATTIO_STAGE_ATTRIBUTE", "stage"),
    Setting("ATTIO_USER_ID_ATTRIBUTE", None),
    Setting("ATTIO_LIST", None),
    Setting("ATTIO_EVENT_ATTRIBUTES", None),
    Setting("ATTIO_MAX_RPS", "50"),
    Setting("ATTIO_CONCURRENCY", "48"),
    Setting("USERMAVEN_API_KEY", None, secret=True, required=True),
    Setting("USERMAVEN_SERVER_TOKEN", None, secret=True, required=True),
    Setting("USERMAVEN_EVENTS_URL", "https://events.usermaven.com/api/v1/s2s/event"),
    Setting("USERMAVEN_SITE_URL", None, required=True),
    Setting("USERMAVEN_EVENT_TYPE", "Deal Stage Changed"),
    Setting("USERMAVEN_STAGE_EVENT_TYPES", None),
    Setting("SYNC_STATE_DB", "state/sync.db"),
    Setting("SYNC_OVERLAP_SECONDS", "300"),
    Setting("SYNC_HTTP_TIMEOUT", "60"),
    Setting("SYNC_HEALTHCHECK_URL", None, secret=True),
)
NAMES = {s.name for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    attio_api_key: str = field(repr=False)
    attio_base_url: str
    attio_object: str
    attio_stage_attribute: str
    attio_user_id_attribute: str | None
    attio_list: str | None
    attio_event_attributes: tuple[str, ...]
    attio_max_rps: float
    attio_concurrency: int
    usermaven_api_key: str = field(repr=False)
    usermaven_server_token: str = field(repr=False)
    usermaven_events_url: str
    usermaven_site_url: str
    usermaven_event_type: str
    usermaven_stage_event_types: dict[str, str]
    state_db: Path
    overlap_seconds: int
    http_timeout: float
    healthcheck_url: str | None = field(default=None, repr=False)
    config_file: Path | None = None  # the --config file these settings came from, if any

    @property
    def secrets(self) -> list[str]:
        """Values that must never appear in output, logs, errors or the database."""
        parts = (self.usermaven_api_key, self.usermaven_server_token)
        token = ".".join(parts) if all(parts) else ""
        # The healthcheck URL carries the monitor's key in its path (anyone holding it can ping) or in its query
        # (`?auth_key=`), and a request log shows the path and query without the host.
        ping = urlparse(self.healthcheck_url or "")
        ping_path = ping.path.strip("/")
        # Each value of its query as written and decoded (the redactor adds the forms urllib3 logs).
        ping_query = [*(part.partition("=")[2] for part in ping.query.split("&")),
                      *(value for _, value in parse_qsl(ping.query, keep_blank_values=True))]
        return [s for s in (token, self.attio_api_key, *parts, self.healthcheck_url,
                            ping_path if len(ping_path) > 1 else "", ping.password, ping.query, *ping_query) if s]


def _read_file(path: Path, problems: list[str]) -> dict[str, str | dict[str, str]]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        problems.append(f"config file {path} does not exist: give an existing TOML file to --config")
        return {}
    except OSError as exc:
        problems.append(f"config file {path} cannot be read ({exc.strerror}): check its permissions")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"config file {path} is not valid TOML ({exc}): fix the syntax")
        return {}
    except UnicodeDecodeError:
        problems.append(f"config file {path} is not UTF-8 text: save it as UTF-8 (TOML files must be)")
        return {}
    values: dict[str, str | dict[str, str]] = {}
    for key, value in data.items():
        if key not in NAMES:
            problems.append(f"config file {path}: unknown key {key!r}; the keys are the variable names in the README")
        elif key == "ATTIO_EVENT_ATTRIBUTES" and isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                problems.append(f"config file {path}: {key} must be a list of attribute slugs or ids (strings)")
            else:
                values[key] = ",".join(value)
        elif key == "USERMAVEN_STAGE_EVENT_TYPES" and isinstance(value, dict):
            if not all(isinstance(item, str) for item in value.values()):
                problems.append(f"config file {path}: {key} must map stage titles or ids to event type strings")
            else:
                values[key] = dict(value)
        elif isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.append(f"config file {path}: {key} must be a string or a number")
        else:
            values[key] = str(value)
    return values


# The real services' endpoints: the token travels with every request, so plain http only on loopback.
SERVICE_URLS = ("ATTIO_BASE_URL", "USERMAVEN_EVENTS_URL")


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(name: str, value: str, problems: list[str]) -> None:
    parsed = urlparse(value)
    # Shown without a user:password@ and without its query or fragment (a URL pasted from the seed guide carries
    # the token there).
    shown = value
    if "@" in shown:
        head, _, host = shown.rpartition("@")
        scheme = head.split("://", 1)[0] + "://" if "://" in head else ""
        shown = f"{scheme}***@{host}"
    shown = shown.split("?", 1)[0].split("#", 1)[0]
    if parsed.scheme in ("http", "https") and "@" in parsed.netloc:
        # Never sent by this client, and it would reach the URLs that -v logs.
        problems.append(f"{name} must not hold a user name or password, got {shown!r}")
    elif parsed.scheme not in ("http", "https") or not parsed.netloc:
        problems.append(f"{name} must be an http(s) URL such as https://example.com, got {shown!r}")
    elif name in SERVICE_URLS and parsed.scheme != "https" and not _loopback(parsed.hostname):
        problems.append(f"{name} must be an https URL (the token travels with every request), got {shown!r}; "
                        "plain http is only for a loopback host such as 127.0.0.1")
    elif name == "USERMAVEN_EVENTS_URL" and parsed.query:
        problems.append(f"{name} must be the endpoint alone, without ?token=...: the token is built from "
                        "USERMAVEN_API_KEY and USERMAVEN_SERVER_TOKEN")


def _number(name: str, value: str, problems: list[str], kind: type, low: float, high: float) -> float | int:
    """A number in [low, high]; NaN and infinities are refused (they would disable or freeze the limiter)."""
    try:
        number = kind(value)
    except ValueError:
        problems.append(f"{name} must be a {'whole number' if kind is int else 'number'} from {low:g} to "
                        f"{high:g}, got {value!r}")
        return kind(low)
    if not low <= number <= high:  # also false for NaN
        problems.append(f"{name} must be from {low:g} to {high:g}, got {value!r}")
        return kind(low)
    return number


def _names(name: str, value: str | None, problems: list[str]) -> tuple[str, ...]:
    """A comma-separated list of attribute slugs or ids, each once."""
    names = tuple(part.strip() for part in (value or "").split(",") if part.strip())
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"{name} names {', '.join(map(repr, repeated))} more than once")
    return tuple(dict.fromkeys(names))


def _stage_event_types(name: str, value: str | dict[str, str] | None, problems: list[str]) -> dict[str, str]:
    """Stage title or status id → event type, from `Won 🎉=Deal Won;Lost=Deal Lost` or a TOML table."""
    if value is None:
        return {}
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = []
        for part in (p for p in value.split(";") if p.strip()):
            stage, sep, event_type = part.partition("=")
            if not sep:
                problems.append(f"{name}: {part.strip()!r} is not `stage=event type`; separate pairs with `;`, "
                                "for example `Won 🎉=Deal Won;Lost=Deal Lost`")
                continue
            pairs.append((stage, event_type))
    mapping: dict[str, str] = {}
    for stage, event_type in pairs:
        stage, event_type = stage.strip(), event_type.strip()
        if not stage or not event_type:
            problems.append(f"{name}: every pair needs a stage title or id and an event type, got "
                            f"{stage!r}={event_type!r}")
        elif stage in mapping:
            problems.append(f"{name} maps the stage {stage!r} more than once")
        else:
            mapping[stage] = event_type
    return mapping


def _plain(value: str) -> bool:
    """Printable ASCII without spaces: what keys, tokens and URLs are made of."""
    return value.isascii() and value.isprintable() and " " not in value


def load_config(
    environ: Mapping[str, str],
    config_file: Path | None = None,
    state_override: Path | None = None,
    need_credentials: bool = True,
) -> Config:
    """Read and check every setting; raise ConfigError naming each problem (never a secret's value).

    `need_credentials=False` is for commands that only read the state database (`status`).
    """
    problems: list[str] = []
    file_values = _read_file(config_file, problems) if config_file else {}
    raw: dict[str, str | None] = {}
    stage_types = environ.get("USERMAVEN_STAGE_EVENT_TYPES") or file_values.get("USERMAVEN_STAGE_EVENT_TYPES")
    for setting in SETTINGS:
        value = environ.get(setting.name) or file_values.get(setting.name) or setting.default
        raw[setting.name] = value.strip() if isinstance(value, str) and value else None
        if setting.required and need_credentials and not raw[setting.name]:
            where = " or in the --config file" if config_file else ""
            problems.append(f"{setting.name} is not set: set it in the environment{where}")
        elif setting.secret and raw[setting.name] and len(raw[setting.name] or "") < MIN_SECRET_LENGTH:
            # Shorter values cannot be masked in messages without garbling them (see redact.py).
            problems.append(f"{setting.name} is shorter than {MIN_SECRET_LENGTH} characters, which no real key, "
                            "token or ping URL is: copy the whole value")
        elif setting.secret and raw[setting.name] and not _plain(raw[setting.name] or ""):
            # A line break or a curly quote pasted with it would reach an error message in a form (escaped)
            # that the mask does not match.
            problems.append(f"{setting.name} holds a space, a line break, a quote or another character that is not "
                            "plain ASCII, which no real key, token or ping URL does: copy the value again (it is not "
                            "shown; a host name that is not ASCII goes in its punycode form, xn--...)")

    for name in ("ATTIO_BASE_URL", "USERMAVEN_EVENTS_URL", "USERMAVEN_SITE_URL"):
        url = raw[name]
        if url and (need_credentials or name != "USERMAVEN_SITE_URL"):
            _check_url(name, url, problems)
    for name in ("ATTIO_OBJECT", "ATTIO_STAGE_ATTRIBUTE", "USERMAVEN_EVENT_TYPE"):
        if not raw[name]:
            problems.append(f"{name} must not be empty")
    # Attio allows 100 reads per second per workspace; more threads than that only wait.
    max_rps = _number("ATTIO_MAX_RPS", raw["ATTIO_MAX_RPS"] or "", problems, float, 0.1, 100)
    # A ceiling, not a tuning knob: the rate limiter paces requests, so the number in flight settles at
    # rate × latency by itself (48 carries 100/s at up to ~450 ms per answer).
    concurrency = _number("ATTIO_CONCURRENCY", raw["ATTIO_CONCURRENCY"] or "", problems, int, 1, 64)
    # The overlap also covers a disagreement between Attio's clock and this machine's (see sync.clock).
    overlap = _number("SYNC_OVERLAP_SECONDS", raw["SYNC_OVERLAP_SECONDS"] or "", problems, int,
                      MIN_OVERLAP_SECONDS, 86_400)
    timeout = _number("SYNC_HTTP_TIMEOUT", raw["SYNC_HTTP_TIMEOUT"] or "", problems, float, 1, 600)
    healthcheck = raw["SYNC_HEALTHCHECK_URL"]
    if healthcheck and (urlparse(healthcheck).scheme not in ("http", "https") or not urlparse(healthcheck).netloc):
        problems.append("SYNC_HEALTHCHECK_URL must be an http(s) URL such as https://hc-ping.com/<uuid> "
                        "(its value is not shown: it holds the monitor's key)")
    event_attributes = _names("ATTIO_EVENT_ATTRIBUTES", raw["ATTIO_EVENT_ATTRIBUTES"], problems)
    stage_event_types = _stage_event_types("USERMAVEN_STAGE_EVENT_TYPES", stage_types, problems)
    state_db = state_override or Path(raw["SYNC_STATE_DB"] or "state/sync.db")
    try:
        state_db = state_db.expanduser()
        if state_db.is_dir():
            problems.append(f"the state path {state_db} is a folder: give --state or SYNC_STATE_DB a file name, such "
                            f"as {state_db / 'sync.db'}")
    except RuntimeError:  # ~user with no home folder
        problems.append(f"the state path {state_db} names a home folder that this machine does not know: give "
                        "--state or SYNC_STATE_DB a path without ~, or with the user's name right")
    except OSError as exc:
        problems.append(f"the state path {state_db} cannot be reached ({exc.strerror or exc}): run as a user who may "
                        "reach its folder, or give --state or SYNC_STATE_DB another path")
    if problems:
        raise ConfigError(problems)
    return Config(
        attio_api_key=raw["ATTIO_API_KEY"] or "",
        attio_base_url=(raw["ATTIO_BASE_URL"] or "").rstrip("/"),
        attio_object=raw["ATTIO_OBJECT"] or "",
        attio_stage_attribute=raw["ATTIO_STAGE_ATTRIBUTE"] or "",
        attio_user_id_attribute=raw["ATTIO_USER_ID_ATTRIBUTE"],
        attio_list=raw["ATTIO_LIST"],
        attio_event_attributes=event_attributes,
        attio_max_rps=float(max_rps),
        attio_concurrency=int(concurrency),
        usermaven_api_key=raw["USERMAVEN_API_KEY"] or "",
        usermaven_server_token=raw["USERMAVEN_SERVER_TOKEN"] or "",
        usermaven_events_url=raw["USERMAVEN_EVENTS_URL"] or "",
        usermaven_site_url=raw["USERMAVEN_SITE_URL"] or "",
        usermaven_event_type=raw["USERMAVEN_EVENT_TYPE"] or "",
        usermaven_stage_event_types=stage_event_types,
        state_db=state_db,
        overlap_seconds=int(overlap),
        http_timeout=float(timeout),
        healthcheck_url=healthcheck.rstrip("/") if healthcheck else None,
        config_file=config_file,
    )
