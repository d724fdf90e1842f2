"""Worklists in their orders, decisions with history, agreement between readers, an adjudicator settling a
disagreement, two readers deciding at once, and no patient name or source path in anything served."""

from __future__ import annotations

import threading

from sklearn.metrics import cohen_kappa_score
from sqlalchemy import create_engine, text

from review.conftest import ANN, BOB, decide, read_all


def test_worklists_follow_the_suggest_csv_and_the_latest_scores(site, lists):
    client = site.client("ann")
    found = client.get("/api/worklists").json()
    assert [i["series_key"] for i in found["to_label"]["items"]] == lists["to_label"]
    assert found["to_label"]["count"] == 3 and found["to_label"]["done"] == 0
    assert all("score" not in i for i in found["to_label"]["items"])  # labelled blinded
    assert [i["series_key"] for i in found["flagged"]["items"]] == lists["flagged"]
    assert [i["score"] for i in found["flagged"]["items"]] == [2.0, 0.9, 0.4]
    assert found["disagreements"] == {"count": 0, "done": 0, "items": [], "settled": 0}
    decide(client, lists["to_label"][1], "normal")
    assert client.get("/api/worklists").json()["to_label"]["done"] == 1


def test_a_new_decision_replaces_the_readers_last_and_history_is_kept(site, reviewed, tmp_path):
    client = site.client("ann")
    key = reviewed["images"][reviewed["names"][0]]
    decide(client, key, "abnormal", finding="consolidation, right lower lobe", seconds=12.5)
    decide(client, key, "normal", seconds=2)
    assert client.get(f"/api/scans/{key}").json()["decision"] == "normal"
    engine = create_engine(f"sqlite:///{tmp_path / 'review.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT decision, current, seconds, reader FROM decisions ORDER BY id")).all()
        mode = conn.execute(text("PRAGMA journal_mode")).scalar()
    assert [(r.decision, bool(r.current), r.seconds) for r in rows] == [("abnormal", False, 12.5), ("normal", True, 2)]
    assert rows[0].reader != "ann" and mode == "wal"  # readers by pseudonym only


def test_kappa_the_disagreements_and_an_adjudicator_settling_one(site, reviewed):
    ann, _, keys = read_all(site, reviewed)
    agreement = ann.get("/api/agreement").json()
    (pair,) = agreement["pairs"]
    expected = cohen_kappa_score([a == "abnormal" for a in ANN], [b == "abnormal" for b in BOB])
    assert pair["scans"] == 6 and abs(pair["kappa"] - expected) < 1e-9
    assert {pair["a"], pair["b"]} & {"ann", "bob"} == set()
    assert agreement["disagreements"] == [keys[2], keys[5]]
    lists = ann.get("/api/worklists").json()["disagreements"]
    assert [i["series_key"] for i in lists["items"]] == [keys[2], keys[5]] and lists["settled"] == 0
    decide(site.client("cleo"), keys[2], "abnormal")
    agreement = ann.get("/api/agreement").json()
    assert agreement["disagreements"] == [keys[5]] and agreement["settled"] == [keys[2]]
    assert len(agreement["pairs"]) == 1  # the adjudicator settles, she is not a third reader in kappa


def test_two_readers_deciding_one_scan_at_once_both_keep_their_decisions(site, reviewed):
    key = reviewed["volume"].series_key
    clients = {name: site.client(name) for name in ("ann", "bob")}
    calls = {"ann": "abnormal", "bob": "normal"}
    start = threading.Barrier(2)
    failures: list[str] = []

    def run(name: str) -> None:
        start.wait()
        for n in range(10):
            answer = clients[name].post(f"/api/scans/{key}/decision", json={"decision": calls[name], "seconds": n})
            if answer.status_code != 201:
                failures.append(answer.text)

    threads = [threading.Thread(target=run, args=(name,)) for name in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert {name: c.get(f"/api/scans/{key}").json()["decision"] for name, c in clients.items()} == calls


def test_nothing_served_names_a_patient_or_a_source_path(site, reviewed):
    ann, _, keys = read_all(site, reviewed)
    ann.get("/")
    ann.get("/static/review.js")
    ann.get("/api/worklists")
    ann.get("/api/agreement")
    ann.get("/api/me")
    for key in keys:
        ann.get(f"/api/scans/{key}")
        ann.get(f"/api/scans/{key}/image.png")
    ann.post("/api/export")
    served = b"\n".join(site.bodies).decode("latin-1")
    assert len(site.bodies) > 20
    leaked = [secret for secret in reviewed["secrets"] if secret in served]
    assert not leaked, leaked
