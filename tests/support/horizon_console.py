"""The browser test's pure parts (tests/test_horizon_browser.py): what counts as a severe
console entry, the entries it forgives and why, how a failure names them, and whether the tools
it needs are here. Tested without a browser in tests/test_horizon_console.py."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.verify import PREFIX

SEVERE = "SEVERE"
MESSAGE_LIMIT = 600  # characters of one console message in a failure (stack traces run long)
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@dataclass(frozen=True)
class Entry:
    """One line of Chromium's console (goog:loggingPrefs browser), and the page it came from."""

    page: str
    level: str
    source: str
    message: str


@dataclass(frozen=True)
class Benign:
    """A severe entry that says nothing about Horizon or the lab, and why it is forgiven."""

    name: str
    reason: str
    source: str
    pattern: re.Pattern[str]
    page: str | None = None  # only on this page (None: on any)

    def matches(self, entry: Entry) -> bool:
        return (
            entry.source == self.source
            and (self.page is None or entry.page == self.page)
            and bool(self.pattern.search(entry.message))
        )


BENIGN: tuple[Benign, ...] = (
    # Only the site's root: Horizon's own icon (<link rel="shortcut icon"> under
    # /horizon/static) missing would be a packaging fault worth failing on.
    Benign(
        "favicon",
        "Chromium asks for /favicon.ico at the site's root by itself when a page names no icon "
        "(Horizon's error pages); nothing there is Horizon's, so its 404 says nothing",
        "network",
        re.compile(r"^https?://[^/\s]+/favicon\.ico - .*\b404\b"),
    ),
    # Only the 'cancel' reason, logged by Horizon's compressed scripts: any other unhandled
    # rejection (an API call failing, "escape key press", an Error) still fails the test.
    Benign(
        "modal-cancel",
        "Horizon 25.3.0 (upstream too): closing an Angular action's modal with Cancel or its x "
        "rejects the action's promise with 'cancel' (wizard.controller.js), and the resource "
        "table's result handler (hz-resource-table.controller.js, $q.when with no error "
        "callback) passes that rejection on to nobody, so AngularJS >= 1.6 logs it. Nothing "
        "fails: the row actions are enabled again and the table is not reloaded",
        "console-api",
        re.compile(
            r"^https?://\S+/static/dashboard/js/output\.[0-9a-f]+\.js \d+:\d+ "
            r'"Possibly unhandled rejection: cancel"$'
        ),
    ),
    # Only the instances table's row update, only on the page after the test deleted its server:
    # a 404 from a row update anywhere else (a server that should exist) still fails the test.
    Benign(
        "row-gone",
        "Horizon polls a deleting server's row (?action=row_update); once nova has removed the "
        "server the answer is 404, which horizon.tables.js takes as 'the object is gone' and "
        "removes the row (25.3.0, horizon.tables.js lines 45-46). Chromium logs every 404 it "
        "loads, expected or not",
        "network",
        re.compile(
            r"^https?://\S+/project/instances/\?action=row_update&table=instances&obj_id="
            r"[0-9a-f-]{36} - .*\b404\b"
        ),
        page="project instances after delete",
    ),
)


def entries(raw: Iterable[Mapping[str, Any]], page: str) -> list[Entry]:
    """Selenium's get_log('browser') records as entries of `page`."""
    return [
        Entry(
            page=page,
            level=str(item.get("level", "")),
            source=str(item.get("source", "")),
            message=str(item.get("message", "")),
        )
        for item in raw
    ]


def forgiven(entry: Entry) -> Benign | None:
    return next((benign for benign in BENIGN if benign.matches(entry)), None)


def severe(found: Iterable[Entry]) -> list[Entry]:
    """The entries the test fails on: every SEVERE one that no BENIGN rule forgives."""
    return [e for e in found if e.level == SEVERE and forgiven(e) is None]


def masked(text: str, secrets: Iterable[str]) -> str:
    """text with every secret value (longest first, so none hides inside another) as ***."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def describe(found: Iterable[Entry], secrets: Iterable[str] = ()) -> str:
    """One line per entry, page first, for an assertion message; long messages cut short and
    secrets masked (a console line may echo a request)."""
    secrets = tuple(secrets)
    lines = []
    for entry in found:
        message = masked(entry.message, secrets)
        if len(message) > MESSAGE_LIMIT:
            message = message[:MESSAGE_LIMIT] + " …"
        lines.append(f"{entry.page}: [{entry.source}] {message}")
    return "\n".join(lines)


def server_name(token: str) -> str:
    """The browser test's server: verify's prefix, so `lab verify`'s sweep removes a leftover."""
    if not re.fullmatch(r"[a-z0-9]{1,16}", token):
        raise ValueError(f"server name token {token!r}: 1-16 lowercase letters or digits")
    return f"{PREFIX}browser-{token}"


def missing_tools(
    chromium: Path = CHROMIUM, chromedriver: Path = CHROMEDRIVER, selenium: bool = True
) -> list[str]:
    """What the browser test lacks, each with how to get it ([] when nothing is missing)."""
    missing = []
    for path, package in ((chromium, "chromium"), (chromedriver, "chromium-driver")):
        if shutil.which(str(path)) is None:  # absent or not executable
            missing.append(f"{path} (apt-get install {package})")
    if not selenium:
        missing.append("the selenium module (pip install selenium)")
    return missing
