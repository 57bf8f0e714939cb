"""The requests a user copies from the chart's NOTES, docs/deploy-kind.md and the Makefile work on the chart as
installed: authentication is on there, so each one carries a token, and a read that promises an outcome waits
for it. (The cluster tier runs them on a real cluster; this catches a doc that drifts, offline.)"""

from __future__ import annotations

import re

import pytest

from saga_dev.chart import ROOT
from tests.support.chart import render

pytestmark = pytest.mark.chart


def order_requests(text: str) -> list[str]:
    """Every curl of the order API, with its continuation lines."""
    curls = [match.group(0) for match in re.finditer(r"curl (?:[^\n]*\\\n)*[^\n]*", text)]
    return [curl for curl in curls if "/orders/" in curl]


def documented_texts() -> dict[str, str]:
    notes = render().templates["saga/templates/NOTES.txt"]
    return {"NOTES.txt": notes, "docs/deploy-kind.md": (ROOT / "docs" / "deploy-kind.md").read_text()}


@pytest.mark.parametrize("where", ["NOTES.txt", "docs/deploy-kind.md"])
def test_every_documented_order_request_carries_a_token(where: str) -> None:
    requests = order_requests(documented_texts()[where])
    assert len(requests) >= 2, f"{where}: no order requests found"
    for request in requests:
        assert 'Authorization: Bearer $TOKEN"' in request, f"{where}: without a token it answers 401:\n{request}"


@pytest.mark.parametrize("where", ["NOTES.txt", "docs/deploy-kind.md"])
def test_the_read_that_promises_an_outcome_waits_for_it(where: str) -> None:
    reads = [r for r in order_requests(documented_texts()[where]) if "-X POST" not in r]
    assert reads and all(re.search(r"/orders/\d+\?wait=\d+", read) for read in reads), reads


@pytest.mark.parametrize("where", ["NOTES.txt", "docs/deploy-kind.md"])
def test_the_token_comes_from_make_token(where: str) -> None:
    assert re.search(r"TOKEN=\$\(make -s token CUSTOMER=1[^)]*\)", documented_texts()[where])


def test_notes_name_the_signer_secret_make_token_reads() -> None:
    notes = render().templates["saga/templates/NOTES.txt"]
    assert "TOKEN_SIGNER=saga-token-signer" in notes
    assert "TOKEN_SIGNER ?= $(HELM_RELEASE)-token-signer" in (ROOT / "Makefile").read_text()


def test_notes_send_users_of_an_identity_provider_there() -> None:
    notes = render(
        {
            "auth": {
                "issuer": "https://idp.example",
                "jwksUrl": "https://idp.example/jwks.json",
                "jwksCidrs": ["10.0.0.0/8"],
            }
        }
    ).templates["saga/templates/NOTES.txt"]
    assert "make -s token" not in notes and "identity provider (https://idp.example)" in notes
