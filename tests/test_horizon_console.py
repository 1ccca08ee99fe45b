"""The browser test's pure parts (tests/support/horizon_console.py), on console entries that
Debian's headless Chromium 156 reported through Selenium's get_log('browser') for a page with a
console.error, a warning, an uncaught TypeError and promise rejection and two 404s
(tests/fixtures/chromium-console.json; only the port was changed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.horizon_console import (
    BENIGN,
    MESSAGE_LIMIT,
    Entry,
    describe,
    entries,
    forgiven,
    missing_tools,
    server_name,
    severe,
)
from support.horizon_pages import literal, row_xpath

from builder.verify import PREFIX

FIXTURE = Path(__file__).parent / "fixtures" / "chromium-console.json"


@pytest.fixture
def logged() -> list[Entry]:
    return entries(json.loads(FIXTURE.read_text()), "project/images")


def test_every_severe_entry_fails_but_the_root_favicon(logged) -> None:
    failing = severe(logged)
    assert [e.source for e in failing] == ["console-api", "javascript", "javascript", "network"]
    assert "angular.lowercase is not a function" in failing[1].message
    assert failing[-1].message.startswith("http://127.0.0.1:8000/missing.png ")
    assert all(e.page == "project/images" for e in failing)
    # A warning is never a failure.
    assert not [e for e in failing if e.level != "SEVERE"]


def test_only_documented_noise_is_forgiven(logged) -> None:
    forgiven_names = {forgiven(e).name for e in logged if forgiven(e)}
    assert forgiven_names == {"favicon"}  # the fixture has no modal cancel
    assert all(b.reason for b in BENIGN)  # each filter says why


@pytest.mark.parametrize(
    "message",
    [
        # Horizon's own icon missing is a packaging fault, not noise.
        "http://10.0.0.11/horizon/static/dashboard/img/favicon.ico - Failed to load resource: "
        "the server responded with a status of 404 (Not Found)",
        # The root icon failing otherwise than with a 404 is no known noise either.
        "http://10.0.0.11/favicon.ico - Failed to load resource: net::ERR_CONNECTION_RESET",
    ],
)
def test_favicon_rule_stays_narrow(message: str) -> None:
    entry = Entry("p", "SEVERE", "network", message)
    assert severe([entry]) == [entry]


def test_a_console_api_line_naming_favicon_is_not_forgiven() -> None:
    entry = Entry("p", "SEVERE", "console-api", 'http://10.0.0.11/favicon.ico - "404 is a lie"')
    assert severe([entry]) == [entry]


def test_description_names_page_and_source_masks_secrets_and_cuts_long_lines() -> None:
    secret = "s3cr3t-admin-password"
    found = [
        Entry("admin/hypervisors", "SEVERE", "javascript", f"Uncaught Error: {secret} leaked"),
        Entry("project/instances", "SEVERE", "console-api", "x" * (MESSAGE_LIMIT + 50)),
    ]
    text = describe(found, [secret, ""])
    first, second = text.split("\n")
    assert first == "admin/hypervisors: [javascript] Uncaught Error: *** leaked"
    assert secret not in text
    assert second.startswith("project/instances: [console-api] xxx")
    assert second.endswith(" …") and len(second) < MESSAGE_LIMIT + 60


def test_server_name_carries_verifys_prefix() -> None:
    assert server_name("a1b2c3") == f"{PREFIX}browser-a1b2c3"
    for bad in ("", "UPPER", "with-dash", "x" * 17):
        with pytest.raises(ValueError, match="server name token"):
            server_name(bad)


def test_missing_tools_name_how_to_get_them(tmp_path: Path) -> None:
    fake_chromium = tmp_path / "fake_chromium"
    fake_chromium.write_text("#!/bin/sh\n")
    fake_chromium.chmod(0o755)
    not_executable = tmp_path / "fake_chromedriver"
    not_executable.write_text("")
    missing = missing_tools(fake_chromium, not_executable, selenium=False)
    assert missing == [
        f"{not_executable} (apt-get install chromium-driver)",
        "the selenium module (pip install selenium)",
    ]
    assert missing_tools(fake_chromium, fake_chromium, selenium=True) == []


def test_xpath_literals_quote_names_safely() -> None:
    assert literal("stackseed-test") == "'stackseed-test'"
    assert literal("it's") == '"it\'s"'
    with pytest.raises(ValueError, match="both quote kinds"):
        literal("""it's "quoted\"""")
    # The image name is a prefix of its kernel's (stackseed-test-kernel): exact match only,
    # and never an expanded detail row.
    xpath = row_xpath("stackseed-test")
    assert "normalize-space()='stackseed-test'" in xpath
    assert "contains(normalize-space" not in xpath and "contains(.," not in xpath
    assert "not(contains(@class, 'detail-row'))" in xpath


# The line Chromium 156 logged on the lab (2026-12-03) after Create Volume was closed.
CANCEL = (
    "http://10.0.0.11/horizon/static/dashboard/js/output.f43b26f96f67.js 1466:222 "
    '"Possibly unhandled rejection: cancel"'
)


def test_a_cancelled_modal_is_forgiven() -> None:
    entry = Entry("project images", "SEVERE", "console-api", CANCEL)
    assert forgiven(entry).name == "modal-cancel"
    assert severe([entry]) == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        # Another reason is another story: an API call that failed, an error object.
        ("console-api", CANCEL.replace(": cancel", ": escape key press")),
        ("console-api", CANCEL.replace('cancel"', 'cancel (more)"')),
        (
            "console-api",
            CANCEL.replace(
                '"Possibly unhandled rejection: cancel"',
                '"Possibly unhandled rejection: {\\"status\\":500}"',
            ),
        ),
        # Not from Horizon's compressed scripts, or not a console call.
        ("console-api", CANCEL.replace("/static/dashboard/js/output.f43b26f96f67.js", "/x.js")),
        ("javascript", CANCEL),
    ],
)
def test_modal_cancel_rule_stays_narrow(source: str, message: str) -> None:
    entry = Entry("project images", "SEVERE", source, message)
    assert severe([entry]) == [entry]


ROW_GONE = (
    "http://10.0.0.11/horizon/project/instances/?action=row_update&table=instances&obj_id="
    "4c0821c1-0de7-4559-af86-aeca1f36d323 - Failed to load resource: the server responded with "
    "a status of 404 (Not Found)"
)


def test_a_deleted_servers_row_update_404_is_forgiven_only_after_the_delete() -> None:
    after = Entry("project instances after delete", "SEVERE", "network", ROW_GONE)
    assert severe([after]) == []
    elsewhere = Entry("project instances", "SEVERE", "network", ROW_GONE)
    assert severe([elsewhere]) == [elsewhere]
    other_table = Entry(
        "project instances after delete",
        "SEVERE",
        "network",
        ROW_GONE.replace("instances&", "volumes&"),
    )
    assert severe([other_table]) == [other_table]
