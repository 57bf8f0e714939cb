"""The CI check: the code's message contract against the snapshot of the last release. A breaking change without a
new version fails; additions pass; recorded version 1 bodies of real services still decode."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from saga_common.contract import messages
from saga_common.contract.messages import EVENT_TYPES, Event, OrderCreated, decode
from saga_dev import contract_compat
from saga_dev.contract_compat import SNAPSHOT, breaking_changes, contract

CORPUS = Path(__file__).parent / "data" / "contract-v1"


@pytest.fixture(scope="module")
def released() -> dict:
    return json.loads(SNAPSHOT.read_text())


def test_the_code_breaks_nothing_of_the_last_release(released):
    assert breaking_changes(released, contract()) == []
    assert contract_compat.main([]) == 0


def test_the_release_snapshot_is_the_contract_before_version_2(released):
    """Recorded from the release before order.created v2: every type, version 1 only."""
    assert set(released["events"]) == set(EVENT_TYPES)
    assert all(list(event["versions"]) == ["1"] for event in released["events"].values())
    assert released["events"]["order.created"]["versions"]["1"]["fields"]["amount"]["anyOf"]


def _change(edit):
    def changed():
        current = copy.deepcopy(contract())
        edit(current["events"])
        return current

    return changed


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda e: e["order.created"]["versions"]["1"]["fields"].pop("deadline"), "version 1: field deadline removed"),
        (
            lambda e: e["order.rejected"]["versions"]["1"]["fields"]["reason"]["enum"].append("fraud"),
            "order.rejected version 1: field reason retyped",
        ),
        (
            lambda e: e["order.created"]["versions"]["1"]["fields"].update(customer_id={"type": "string"}),
            "order.created version 1: field customer_id retyped",
        ),
        (
            lambda e: e["order.cancelled"]["versions"]["1"]["required"].append("reason"),
            "order.cancelled version 1: field reason is newly required",
        ),
        (lambda e: e.update({"order.placed": e.pop("order.created")}), "routing key order.created removed"),
        (lambda e: e["order.created"]["versions"].pop("1"), "order.created version 1 removed"),
        (lambda e: e["credit.released"].update(consumer="customer-service"), "credit.released is bound to"),
    ],
    ids=[
        "removed-field",
        "widened-enum",
        "retyped-field",
        "new-required-field",
        "renamed-key",
        "removed-version",
        "rebound",
    ],
)
def test_a_breaking_change_fails_the_check(released, edit, says):
    problems = breaking_changes(released, _change(edit)())
    assert any(says in problem for problem in problems), problems


@pytest.mark.parametrize(
    "edit",
    [
        lambda e: e["order.created"]["versions"]["1"]["fields"].update(note={"type": "string"}),
        lambda e: e["order.created"]["versions"].update({"3": e["order.created"]["versions"]["2"]}),
        lambda e: e.update({"order.shipped": e["order.created"]}),
    ],
    ids=["optional-field", "new-version", "new-type"],
)
def test_additions_pass(released, edit):
    assert breaking_changes(released, _change(edit)()) == []


def test_a_model_edited_in_place_is_caught(released, monkeypatch):
    """The check reads the models themselves: retyping a released version's field in the code fails it."""

    class EditedOrderCreated(Event):
        routing_key: ClassVar[str] = "order.created"
        type: Literal["order.created"] = "order.created"
        customer_id: str
        amount: str
        currency: str

    versions = messages.VERSIONS | {"order.created": {**messages.VERSIONS["order.created"], 1: EditedOrderCreated}}
    monkeypatch.setattr(contract_compat, "VERSIONS", versions)
    problems = breaking_changes(released, contract())
    assert "order.created version 1: field customer_id retyped" in "\n".join(problems)
    assert "order.created version 1: field product_id removed" in problems
    assert "order.created version 1: field currency is newly required" in problems
    assert contract_compat.main([]) == 1


def corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.json"))


def test_the_corpus_has_every_type():
    bodies = [json.loads(path.read_bytes()) for path in corpus()]
    assert {body["type"] for body in bodies} == set(EVENT_TYPES)
    assert {body["version"] for body in bodies} == {1}


@pytest.mark.parametrize("path", corpus(), ids=lambda path: path.stem)
def test_every_recorded_v1_body_still_decodes_into_the_newest_shape(path):
    body = path.read_bytes()
    event = decode(body, max_bytes=256 * 1024)
    assert type(event) is EVENT_TYPES[event.type]
    recorded = json.loads(body)
    assert (str(event.message_id), event.order_id) == (recorded["message_id"], recorded["order_id"])
    if event.type == "order.created":
        assert event.amount.value == OrderCreated.model_validate(recorded).amount
