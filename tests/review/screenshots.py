"""The review page's screenshots in docs/ (review-worklist.png, review-flagged.png, review-disagreements.png),
taken in headless Chromium over a real ingest output, e.g. the demo's:

    PYTHONPATH=.:tests python -m review.screenshots demo-out/manifest.parquet

Run by hand when the page changes, never by the test suite. The ingest output is only read: the decisions
database, the worklist files and the export live in a temporary folder. The to-label list is a few of the
bigger chest X-rays and an MR series; the flagged list is the champion's scores for those kinds of scan
(beside the manifest, as ``medssl score`` writes them), so each list fits the page.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
from pathlib import Path

import httpx
import pandas as pd
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from pipeline.config import load_config
from review.browser import chromium
from review.conftest import serving

DOCS = Path(__file__).resolve().parents[2] / "docs"
READERS = {"ann": "reader", "bob": "reader", "cleo": "adjudicator"}
WAIT_S = 30


def lists(manifest: Path, folder: Path) -> tuple[Path, Path]:
    """(suggest CSV, scores table): six 2D X-rays and an MR series to label; the scores of such scans."""
    rows = pd.read_parquet(manifest)
    rows = rows[rows.status == "accepted"]
    xrays = [k for k, s in zip(rows.series_key, rows["shape"], strict=True) if list(s) == [64, 64, 1]]
    volumes = list(rows[(rows.kind == "dicom") & (rows.modality == "MR")].series_key)
    suggested = folder / "suggested.csv"
    pd.DataFrame({"series_key": xrays[:6] + volumes[:1], "label": ""}).to_csv(suggested, index=False)
    scores = pd.read_csv(manifest.parent / "scores.csv", dtype={"series_key": str})
    kept = folder / "scores.csv"
    scores[scores.series_key.isin(set(xrays + volumes))].to_csv(kept, index=False)
    return suggested, kept


def seed(url: str, tokens: dict[str, str], keys: list[str]) -> None:
    """ann and bob read the first four scans and differ on two; the page then has progress and disagreements."""
    calls = {"ann": ["normal", "abnormal", "normal", "abnormal"], "bob": ["normal", "abnormal", "abnormal", "normal"]}
    for reader, decisions in calls.items():
        with httpx.Client(base_url=url, timeout=30) as client:
            csrf = client.post("/api/signin", json={"token": tokens[reader]}).raise_for_status().json()["csrf"]
            for key, decision in zip(keys, decisions, strict=False):
                answer = client.post(
                    f"/api/scans/{key}/decision", json={"decision": decision}, headers={"X-CSRF-Token": csrf}
                )
                answer.raise_for_status()


def shoot(driver: webdriver.Chrome, url: str, tokens: dict[str, str], keys: list[str], out: Path) -> None:
    wait = WebDriverWait(driver, WAIT_S)

    def sign_in(reader: str) -> None:
        driver.get(url)
        wait.until(lambda d: d.find_element(By.ID, "token").is_displayed())
        driver.find_element(By.ID, "token").send_keys(tokens[reader], Keys.ENTER)
        wait.until(lambda d: d.find_element(By.ID, "app").is_displayed())

    def open_first(name: str, key: str | None = None) -> None:
        selector = f'#worklist-{name} li[data-key="{key}"]' if key else f"#worklist-{name} li"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, selector))[0].click()
        wait.until(
            lambda d: d.execute_script(
                "const img = document.getElementById('image'); return img.src.startsWith('blob:') && "
                "img.complete && img.naturalWidth > 0 && document.getElementById('scan-key').textContent !== ''"
            )
        )

    sign_in("ann")
    open_first("to-label", keys[4])
    driver.save_screenshot(str(out / "review-worklist.png"))
    open_first("flagged")
    driver.save_screenshot(str(out / "review-flagged.png"))
    driver.find_element(By.ID, "signout").click()
    sign_in("cleo")
    open_first("disagreements")
    driver.save_screenshot(str(out / "review-disagreements.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path, help="an ingest manifest.parquet with scores.csv beside it")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder the PNGs go to (default: docs/)")
    args = parser.parse_args()
    tokens = {name: secrets.token_urlsafe(24) for name in READERS}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        suggested, scores = lists(args.manifest, folder)
        config = load_config(
            None,
            {
                "review.manifest": str(args.manifest),
                "review.suggested": str(suggested),
                "review.scores": str(scores),
                "review.database": f"sqlite:///{folder / 'review.db'}",
                "review.out": str(folder / "labels.csv"),
                "review.readers": [{"name": n, "role": r, "token": tokens[n]} for n, r in READERS.items()],
                "tracking.enabled": False,
            },
        )
        keys = list(pd.read_csv(suggested, dtype=str).series_key)
        with serving(config) as url, chromium(folder / "profile") as driver:
            seed(url, tokens, keys)
            shoot(driver, url, tokens, keys, args.out)
    print(f"wrote {args.out}/review-{{worklist,flagged,disagreements}}.png")


if __name__ == "__main__":
    main()
