"""The pull's PACS login goes with a publish only to that same server: a results PACS elsewhere must not
receive its password or token."""

from __future__ import annotations

from pipeline.config import load_config
from pipeline.publish.run import _login


def test_the_pull_login_is_sent_only_to_the_server_it_belongs_to():
    config = load_config(
        None,
        {
            "ingest.dicomweb.url": "https://pacs.example.org/dicom-web",
            "ingest.dicomweb.auth": {"method": "bearer", "token_env": "PACS_TOKEN"},
        },
    )
    assert _login(config, "https://pacs.example.org/dicom-web").method == "bearer"
    assert _login(config, "https://results.example.org/dicom-web").method == "none"
    assert _login(config, "http://pacs.example.org/dicom-web").method == "none"  # not over plain http either
