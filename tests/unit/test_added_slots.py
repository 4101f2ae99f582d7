"""Which slots a pool runs once bots were added from Telegram (fleetgram/kube/added_slots.py):
plain data in, plain data out."""

from __future__ import annotations

from typing import Any

from fleetgram.kube.added_slots import (
    free_spare_slot,
    spare_slots,
    token_slot_names,
    with_added_slots,
)
from fleetgram.kube.objects import slot_names_of


def pool(tokens: int = 2, spare: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": "fleetgram", "namespace": "fleetgram", "uid": "u1"},
        "spec": {
            "tokenSecrets": [{"name": f"t{i + 1}", "key": "token"} for i in range(tokens)],
            "spareSlots": [{"slot": f"worker{i + 1}",
                            "secretName": f"fleetgram-worker{i + 1}-token", "key": "token",
                            "serviceAccountName": f"fleetgram-worker-{i + 1}"}
                           for i in range(tokens, tokens + spare)],
        },
    }


def test_a_pool_without_added_bots_runs_its_token_slots_only() -> None:
    assert slot_names_of(with_added_slots(pool(), set())) == ["worker1", "worker2"]


def test_an_added_bot_runs_in_its_spare_slot_with_its_secret_and_account() -> None:
    effective = with_added_slots(pool(), {"worker3"})
    assert slot_names_of(effective) == ["worker1", "worker2", "worker3"]
    assert effective["spec"]["tokenSecrets"][2] == {
        "slot": "worker3", "name": "fleetgram-worker3-token", "key": "token",
        "serviceAccountName": "fleetgram-worker-3"}


def test_the_pool_object_itself_is_not_changed() -> None:
    original = pool()
    with_added_slots(original, {"worker3", "worker4"})
    assert len(original["spec"]["tokenSecrets"]) == 2
    assert "slot" not in original["spec"]["tokenSecrets"][0]


def test_slots_keep_the_spare_order_whatever_order_they_were_stored_in() -> None:
    assert token_slot_names(with_added_slots(pool(), ["worker4", "worker3"])) == [
        "worker1", "worker2", "worker3", "worker4"]


def test_a_stored_slot_that_is_no_spare_slot_any_more_is_left_out() -> None:
    """workerTokens grew to 3 with a helm upgrade: worker3 is a values slot now."""
    assert slot_names_of(with_added_slots(pool(tokens=3), {"worker3"})) == [
        "worker1", "worker2", "worker3"]
    assert len(with_added_slots(pool(tokens=3), {"worker3"})["spec"]["tokenSecrets"]) == 3


def test_the_next_bot_gets_the_first_free_spare_slot() -> None:
    assert free_spare_slot(pool(), set()).slot == "worker3"  # type: ignore[union-attr]
    assert free_spare_slot(pool(), {"worker3"}).slot == "worker4"  # type: ignore[union-attr]


def test_no_spare_slot_is_free_when_all_are_taken_or_none_is_reserved() -> None:
    assert free_spare_slot(pool(), {"worker3", "worker4"}) is None
    assert free_spare_slot(pool(spare=0), set()) is None


def test_spare_slots_without_a_secret_name_are_ignored() -> None:
    broken = pool()
    broken["spec"]["spareSlots"].append({"slot": "worker5"})
    assert [s.slot for s in spare_slots(broken)] == ["worker3", "worker4"]
