"""The settings that shape the event: ATTIO_EVENT_ATTRIBUTES and USERMAVEN_STAGE_EVENT_TYPES."""

from __future__ import annotations

import pytest

from sync.config import ConfigError, load_config

REQUIRED = {"ATTIO_API_KEY": "attio-key-1", "USERMAVEN_API_KEY": "um-key-22", "USERMAVEN_SERVER_TOKEN": "token-333",
            "USERMAVEN_SITE_URL": "https://acme.example"}


def test_event_attributes_are_a_comma_separated_list():
    config = load_config({**REQUIRED, "ATTIO_EVENT_ATTRIBUTES": " lead_source, region ,,pipeline_type"})
    assert config.attio_event_attributes == ("lead_source", "region", "pipeline_type")
    assert load_config(REQUIRED).attio_event_attributes == ()


def test_stage_event_types_from_the_environment():
    config = load_config({**REQUIRED, "USERMAVEN_STAGE_EVENT_TYPES": "Won 🎉=Deal Won; Lost = Deal Lost;"})
    assert config.usermaven_stage_event_types == {"Won 🎉": "Deal Won", "Lost": "Deal Lost"}
    assert load_config(REQUIRED).usermaven_stage_event_types == {}


def test_both_from_a_toml_file_as_a_list_and_a_table(tmp_path):
    path = tmp_path / "sync.toml"
    path.write_text('ATTIO_EVENT_ATTRIBUTES = ["lead_source", "region"]\n'
                    'USERMAVEN_STAGE_EVENT_TYPES = { "Won 🎉" = "Deal Won", "a=b;c" = "Odd" }\n', encoding="utf-8")
    config = load_config(REQUIRED, path)
    assert config.attio_event_attributes == ("lead_source", "region")
    assert config.usermaven_stage_event_types == {"Won 🎉": "Deal Won", "a=b;c": "Odd"}


def test_malformed_values_name_every_problem():
    with pytest.raises(ConfigError) as caught:
        load_config({**REQUIRED, "ATTIO_EVENT_ATTRIBUTES": "region,region",
                     "USERMAVEN_STAGE_EVENT_TYPES": "Won 🎉;Lost=;Won 🎉=A;Won 🎉=B"})
    assert caught.value.problems == [
        "ATTIO_EVENT_ATTRIBUTES names 'region' more than once",
        "USERMAVEN_STAGE_EVENT_TYPES: 'Won 🎉' is not `stage=event type`; separate pairs with `;`, for example "
        "`Won 🎉=Deal Won;Lost=Deal Lost`",
        "USERMAVEN_STAGE_EVENT_TYPES: every pair needs a stage title or id and an event type, got 'Lost'=''",
        "USERMAVEN_STAGE_EVENT_TYPES maps the stage 'Won 🎉' more than once",
    ]


def test_a_toml_table_of_non_strings_is_refused(tmp_path):
    path = tmp_path / "sync.toml"
    path.write_text('ATTIO_EVENT_ATTRIBUTES = ["ok", 3]\nUSERMAVEN_STAGE_EVENT_TYPES = { "Won" = 1 }\n')
    with pytest.raises(ConfigError) as caught:
        load_config(REQUIRED, path)
    assert len(caught.value.problems) == 2


@pytest.mark.parametrize("url, shown", [
    ("http://user:AtPassw0rd@api.example.com/v2", "got 'http://***@api.example.com/v2'"),
    ("https://user:AtPassw0rd@api.attio.com", "must not hold a user name or password, got 'https://***@api.attio.com'"),
    ("http://user:AtP?assw0rd@api.example.com", "got 'http://***@api.example.com'"),
])
def test_a_password_in_a_service_url_is_refused_and_not_shown(url, shown):
    """Never sent by this client, and `-v` logs the URLs it requests: refused, masked in the message."""
    with pytest.raises(ConfigError) as caught:
        load_config({**REQUIRED, "ATTIO_BASE_URL": url})
    [problem] = caught.value.problems
    assert shown in problem and "AtP" not in problem
