"""System tools some tests run for real. scripts/test.sh installs them; a missing one fails
the test that needs it (a skipped test would prove nothing)."""

from __future__ import annotations

import shutil

import pytest


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/test.sh, which installs "
                    "bubblewrap, socat, prometheus (promtool) and chromium with "
                    "chromium-driver (chromedriver)")


def requiring(*tools: str) -> pytest.MarkDecorator:
    """A mark: the test fails at once when one of `tools` is missing."""
    return pytest.mark.usefixtures(*[f"_tool_{t}" for t in tools])


@pytest.fixture
def _tool_bwrap() -> None:
    require("bwrap")


@pytest.fixture
def _tool_socat() -> None:
    require("socat")


@pytest.fixture
def _tool_promtool() -> None:
    require("promtool")


@pytest.fixture
def _tool_prometheus() -> None:
    require("prometheus")


@pytest.fixture
def _tool_git() -> None:
    require("git")


@pytest.fixture
def _tool_chromium() -> None:
    require("chromium")


@pytest.fixture
def _tool_chromedriver() -> None:
    require("chromedriver")
