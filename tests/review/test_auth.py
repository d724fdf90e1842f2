"""Only signed-in readers see anything, state changes need the CSRF header, bad requests get one line."""

from __future__ import annotations

import httpx
from conftest import TEST_KEY

from pipeline.pseudonym import pseudonym
from review.conftest import TOKENS, review_config, serving


def test_requests_without_a_valid_session_are_refused(site, reviewed):
    client = site.client()
    key = reviewed["images"][reviewed["names"][0]]
    for path in ("/api/worklists", "/api/agreement", f"/api/scans/{key}", f"/api/scans/{key}/image.png"):
        assert client.get(path).status_code == 401, path
    assert client.post(f"/api/scans/{key}/decision", json={"decision": "normal"}).status_code == 401
    assert client.post("/api/signin", json={"token": "not-a-token-of-anyone"}).status_code == 401
    client.cookies.set("medssl_review", "forged-session")
    assert client.get("/api/worklists").status_code == 401


def test_sign_in_sets_a_strict_http_only_cookie_and_state_changes_need_csrf(site, reviewed):
    client = site.client()
    answer = client.post("/api/signin", json={"token": TOKENS["ann"]})
    assert answer.status_code == 200 and answer.json()["reader"] == "ann"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    key = reviewed["images"][reviewed["names"][0]]
    assert client.get("/api/worklists").status_code == 200
    assert client.post(f"/api/scans/{key}/decision", json={"decision": "normal"}).status_code == 403
    wrong = {"X-CSRF-Token": "guessed"}
    assert client.post(f"/api/scans/{key}/decision", json={"decision": "normal"}, headers=wrong).status_code == 403
    right = {"X-CSRF-Token": answer.json()["csrf"]}
    assert client.post(f"/api/scans/{key}/decision", json={"decision": "normal"}, headers=right).status_code == 201
    assert client.get("/api/me").json()["csrf"] == answer.json()["csrf"]
    assert client.post("/api/signout", headers=right).status_code == 200
    assert client.get("/api/worklists").status_code == 401


def test_malformed_requests_get_a_one_line_reason(site, reviewed):
    client = site.client("ann")
    key = reviewed["images"][reviewed["names"][0]]
    cases = [
        (client.post(f"/api/scans/{key}/decision", content=b"{not json"), 400),
        (client.post(f"/api/scans/{key}/decision", json=["normal"]), 400),
        (client.post(f"/api/scans/{key}/decision", json={"decision": "maybe"}), 400),
        (client.post(f"/api/scans/{key}/decision", json={"decision": "normal", "seconds": "long"}), 400),
        (client.post("/api/scans/0000000000000000/decision", json={"decision": "normal"}), 404),
        (client.get(f"/api/scans/{key}/image.png?slice=x"), 400),
        (client.get(f"/api/scans/{key}/image.png?slice=5"), 400),
        (client.get(f"/api/scans/{key}/image.png?preset=lung"), 400),
        (client.post("/api/signin", content=b"\xff"), 400),
    ]
    for answer, status in cases:
        assert answer.status_code == status, answer.text
        assert list(answer.json()) == ["error"] and "\n" not in answer.json()["error"]
        assert "Traceback" not in answer.text


def test_readers_from_the_environment_sign_in(reviewed, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSSL_REVIEW_TOKENS", "dora:adjudicator:dora-token-0123456789")
    with serving(review_config(reviewed, tmp_path, readers=[])) as url:
        answer = httpx.post(f"{url}/api/signin", json={"token": "dora-token-0123456789"})
    assert answer.status_code == 200 and answer.json()["role"] == "adjudicator"
    assert answer.json()["pseudonym"] == pseudonym(TEST_KEY.encode(), "reader|dora")
