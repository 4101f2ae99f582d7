"""The demo page in a real headless browser (Debian's chromium through chromedriver): what a
visitor types and presses, and what they see stream in."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from fleetgram.demo.world import MASTER
from tests.demo.conftest import DemoThread
from tests.tools import requiring

pytestmark = [pytest.mark.e2e, requiring("chromium", "chromedriver")]

PROMPTS = ("write the code", "write the tests", "write the docs")
T = TypeVar("T")

# What the page shows in each worker chat, read in one go: the live draft and the bot's
# messages (text and how often each was edited).
_WORKER_CHATS = """
return [...document.querySelectorAll('section.chat[data-role="worker"]')].map(pane => {
  const draft = pane.querySelector('.draft');
  return {
    bot: pane.dataset.chat,
    draft: draft.hidden ? '' : draft.textContent,
    answers: [...pane.querySelectorAll('.msg.bot')].map(
      m => ({text: m.textContent, edits: Number(m.dataset.edits)})),
  };
});
"""


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(argument)
    service = Service(executable_path=shutil.which("chromedriver") or "chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(condition: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def pane(browser: WebDriver, bot: str) -> Any:
    return browser.find_element(By.CSS_SELECTOR, f'section.chat[data-chat="{bot}"]')


def pane_text(browser: WebDriver, bot: str) -> str:
    """The chat's visible text; empty until the page has drawn the chat."""
    lists = browser.find_elements(By.CSS_SELECTOR, f'section.chat[data-chat="{bot}"] .list')
    return lists[0].text if lists else ""


def type_into(browser: WebDriver, bot: str, text: str) -> None:
    """Type `text` into a chat's box and press Enter; wait until the box is empty (sent)."""
    box = pane(browser, bot).find_element(By.CSS_SELECTOR, "form.compose textarea")
    box.send_keys(text, Keys.ENTER)
    wait_until(lambda: box.get_attribute("value") == "", f"{text!r} to be sent")


def press(browser: WebDriver, bot: str, button: str, under: str) -> None:
    """Press the inline button labelled `button` under the bot message containing `under`.
    The page redraws a message when it changes, so a button found may be replaced before the
    click lands: then it is looked up again."""
    xpath = (f'//section[@data-chat="{bot}"]//div[contains(@class, "msg")]'
             f'[contains(., "{under}")]//div[@class="kb"]//button[.="{button}"]')

    def click() -> bool:
        try:
            found = browser.find_elements(By.XPATH, xpath)
            if found:
                found[0].click()
            return bool(found)
        except StaleElementReferenceException:
            return False

    wait_until(click, f"the {button!r} button under {under!r}")


def open_page(browser: WebDriver, url: str) -> None:
    browser.get(url)
    wait_until(lambda: "fleet of Claude workers" in pane_text(browser, MASTER),
               "the master's welcome")


def test_three_prompts_typed_into_the_master_stream_in_three_worker_chats_at_once(
        demo_thread: DemoThread, browser: WebDriver) -> None:
    demo = demo_thread.demo
    assert demo is not None
    open_page(browser, demo.url)
    for prompt in PROMPTS:
        type_into(browser, MASTER, prompt)

    streamed: set[str] = set()  # worker chats seen with a growing, unfinished answer
    answered: dict[str, str] = {}  # worker chat -> the prompt its finished answer is for

    def watch() -> bool:
        for chat in browser.execute_script(_WORKER_CHATS):
            final = [a for a in chat["answers"] if "from the Claude API emulator" in a["text"]]
            growing = "You asked" in chat["draft"] or any(
                a["edits"] and a not in final for a in chat["answers"])
            if growing and not final:
                streamed.add(chat["bot"])
            for prompt in PROMPTS:
                if any(f"You asked: {prompt}" in a["text"] for a in final):
                    answered[chat["bot"]] = prompt
        return set(answered.values()) == set(PROMPTS)

    wait_until(watch, "three answers", timeout=20.0)
    assert len(answered) == 3, f"three different worker chats answer: {answered}"
    assert streamed == set(answered), f"each answer was seen streaming: {streamed}"

    # A fourth prompt while Claude pauses: its receipt's Cancel button stops it.
    async def pause() -> None:
        assert demo.world.claude_emulator is not None
        demo.world.claude_emulator.tokens_per_second = 0

    demo_thread.run(pause())
    type_into(browser, MASTER, "write the changelog")
    press(browser, MASTER, "Cancel", under="write the changelog")
    wait_until(lambda: any("⏹" in line and "cancelled" in line
                           for line in pane_text(browser, MASTER).splitlines()),
               "the cancellation notice")


def test_what_bots_write_is_shown_as_text_never_run_as_markup(
        demo_thread: DemoThread, browser: WebDriver) -> None:
    assert demo_thread.demo is not None
    open_page(browser, demo_thread.demo.url)
    title = browser.title
    payload = '<img src=x onerror="document.title=\'owned\'"> <b>not bold</b>'
    type_into(browser, MASTER, payload)
    wait_until(lambda: payload in pane_text(browser, MASTER) and "🆕" in pane_text(
        browser, MASTER), "the prompt, shown as typed, and its receipt")
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    assert not [b for b in browser.find_elements(By.CSS_SELECTOR, "main b")
                if b.text == "not bold"]
    assert browser.title == title
