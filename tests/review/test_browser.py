"""The page in a real browser: two readers label the "to label" list by keyboard, their decisions outlive a
reload, the scan they disagree on reaches the adjudicator, who settles it, and the export button writes a
CSV fine-tuning reads. Headless Chromium drives the page served by uvicorn; every wait is on the page's state,
bounded, never a sleep."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
from rich.console import Console
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from pipeline.data.labelled import labelled_items
from review.browser import chromium, needs_chromium
from review.conftest import TOKENS

pytestmark = [pytest.mark.slow, needs_chromium]  # a real browser, started once for the module
WAIT_S = 20  # the longest any one step of the page may take before the test fails
FINDING = "consolidation, right lower lobe"


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[webdriver.Chrome]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


class Page:
    """The review page as a reader uses it: what it shows is read in the page's own terms (element ids, the
    worklists' ``data-key``), and each action waits until the page has answered it."""

    def __init__(self, driver: webdriver.Chrome, url: str) -> None:
        self.driver, self.url = driver, url

    def until(self, check: Callable[[], Any], what: str) -> Any:
        wait = WebDriverWait(self.driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))
        return wait.until(lambda _: check(), message=f"the page never showed {what}")

    def text(self, element_id: str) -> str:
        return self.driver.find_element(By.ID, element_id).text

    def shown(self, element_id: str) -> bool:
        return self.driver.find_element(By.ID, element_id).is_displayed()

    def keys(self, name: str) -> list[str]:
        """The scans of a worklist (``to-label``, ``flagged``, ``disagreements``), in the page's order."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map((li) => li.dataset.key)", f"#worklist-{name} li"
        )

    def done(self, name: str) -> list[str]:
        return self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map((li) => li.dataset.key)",
            f"#worklist-{name} li.done",
        )

    def chosen(self) -> list[str]:
        return [b.get_attribute("data-decision") for b in self.driver.find_elements(By.CSS_SELECTOR, "button.chosen")]

    def drawn(self, key: str) -> bool:
        """The viewer shows ``key`` and its image has arrived (an object URL of a decoded PNG)."""
        return self.text("scan-key") == key and self.driver.execute_script(
            "const img = document.getElementById('image'); "
            "return img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0"
        )

    def sign_in(self, reader: str) -> None:
        self.until(lambda: self.shown("token"), "the sign-in form")
        self.driver.find_element(By.ID, "token").send_keys(TOKENS[reader], Keys.ENTER)
        self.until(lambda: self.shown("app") and self.text("who").startswith(f"{reader} ("), f"{reader} signed in")
        assert not self.shown("signin-form")

    def sign_out(self) -> None:
        self.driver.find_element(By.ID, "signout").click()
        self.until(lambda: self.shown("signin-form") and not self.shown("app"), "the sign-in form again")
        viewer = self.driver.execute_script(
            "return [document.getElementById('scan-key').textContent, document.getElementById('finding').value]"
        )
        assert viewer == ["", ""]  # nothing of this reader's is left for the next one

    def open(self, name: str, key: str) -> None:
        def click() -> bool:
            self.driver.find_element(By.CSS_SELECTOR, f'#worklist-{name} li[data-key="{key}"]').click()
            return True

        self.until(click, f"{key} in the {name} list")
        self.until(lambda: self.drawn(key), f"{key} drawn")

    def press(self, key: str) -> None:
        """A key press where the reader's focus is (the page, not a form field)."""
        ActionChains(self.driver).send_keys(key).perform()

    def decide_by_key(self, letter: str, decision: str, then: str) -> None:
        """Press ``letter`` on the open scan; the page saves ``decision`` and shows ``then`` (the next scan to
        read, or the same one when the list is done)."""
        key = self.text("scan-key")
        self.press(letter)
        self.until(lambda: self.text("status") == f"{key}: {decision} saved", f"{decision} saved for {key}")
        self.until(lambda: self.drawn(then), f"{then} drawn after {key}")


def test_readers_label_by_keyboard_disagree_and_the_adjudicator_settles_before_the_export(
    browser, site, reviewed, lists, tmp_path
):
    page = Page(browser, site.url)
    first, second, third = lists["to_label"]
    browser.get(site.url)

    # ann picks the first scan of her list and reads the three by keyboard alone: the page moves on by itself.
    page.sign_in("ann")
    assert page.keys("to-label") == lists["to_label"] and page.text("count-to-label") == "0/3"
    page.open("to-label", first)
    assert browser.switch_to.active_element.tag_name == "body"
    page.decide_by_key("a", "abnormal", then=second)
    # A finding typed (letters of shortcuts among it) is text, and Ctrl+A selects: neither decides.
    browser.find_element(By.ID, "finding").send_keys(FINDING)
    page.press(Keys.TAB)  # out of the finding, onto the buttons
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).perform()
    page.decide_by_key("n", "normal", then=third)
    page.decide_by_key("n", "normal", then=third)
    assert page.text("count-to-label") == "3/3" and page.chosen() == ["normal"]

    # The arrow keys page through a volume's slices.
    volume = reviewed["volume"].series_key
    page.open("flagged", volume)
    at, slices = map(int, page.text("slice-label").split("/"))
    assert slices > 1
    page.press(Keys.ARROW_RIGHT if at < slices else Keys.ARROW_LEFT)
    moved = f"{at + 1 if at < slices else at - 1}/{slices}"
    page.until(lambda: page.text("slice-label") == moved, f"slice {moved}")

    # A reload keeps the session, and the decisions are there; sign-out (a state change: CSRF) still works.
    browser.refresh()
    page.until(lambda: page.shown("app") and page.text("count-to-label") == "3/3", "ann's list done after a reload")
    assert page.done("to-label") == lists["to_label"]
    for key, decision in zip(lists["to_label"], ["abnormal", "normal", "normal"], strict=True):
        page.open("to-label", key)
        assert page.chosen() == [decision]
        assert browser.find_element(By.ID, "finding").get_attribute("value") == (FINDING if key == second else "")
    page.sign_out()
    browser.refresh()
    page.until(lambda: page.shown("signin-form"), "the sign-in form after a reload: the session is closed")

    # bob calls the third scan abnormal: it is a disagreement, and kappa is shown.
    page.sign_in("bob")
    assert page.text("count-to-label") == "0/3" and page.text("scan-key") == ""
    page.open("to-label", first)
    page.decide_by_key("a", "abnormal", then=second)
    page.decide_by_key("n", "normal", then=third)
    page.decide_by_key("a", "abnormal", then=third)
    page.until(lambda: page.keys("disagreements") == [third], "the disagreement")
    assert page.text("kappa").startswith("κ ")
    assert page.text("prepared").endswith("worklist scans ready")  # the server's pass, finished by now
    page.sign_out()

    # cleo, the adjudicator, settles it: the list empties.
    page.sign_in("cleo")
    assert page.text("who") == "cleo (adjudicator)" and page.keys("disagreements") == [third]
    page.open("disagreements", third)
    page.decide_by_key("n", "normal", then=third)
    page.until(lambda: page.keys("disagreements") == [], "the disagreement settled")

    # The export button writes the settled labels, in the form finetune --labels reads.
    browser.find_element(By.ID, "export").click()
    page.until(lambda: page.text("status") == "exported 2 normal, 1 abnormal", "the export's counts")
    expected = {first: 1, second: 0, third: 0}
    table = pd.read_csv(tmp_path / "labels.csv", dtype={"series_key": str})
    assert dict(zip(table.series_key, table.label, strict=True)) == expected
    found = labelled_items(
        reviewed["out"] / "manifest.parquet", tmp_path / "labels.csv", None, 2, 0, Console(file=io.StringIO())
    )
    assert {it["scan"]: it["label"] for it in found} == expected

    # Nothing the page showed names a patient or a source path, and no script failed on the way.
    assert not [s for s in reviewed["secrets"] if s in browser.page_source]
    assert [e["message"] for e in browser.get_log("browser") if e["source"] == "javascript"] == []
