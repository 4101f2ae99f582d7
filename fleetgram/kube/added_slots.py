"""Worker slots added from Telegram (/addworker) on Kubernetes: which ones, and where they live.

The chart reserves `addWorker.spareSlots` slots after the ones of `workerTokens`. For each, the
WorkerPool's `spec.spareSlots` names the slot, the Secret its token is to be written to and the
ServiceAccount it runs as; the chart creates that account with its RBAC and its entry in the
worker admission policy, so nothing about a slot's rights is decided at run time (the operator
needs no `bind`, no ServiceAccount or RoleBinding writes).

A spare slot is *in use* once the master has stored a token for it (the `managed_tokens` table
of the shared database, encrypted with TOKEN_ENCRYPTION_KEY). The operator then writes the
slot's Secret and runs it like a slot of `spec.tokenSecrets`. The WorkerPool itself is never
written: `helm upgrade` re-renders it from values, and would drop slots written into its spec.

Pure functions of the pool object: the master and the operator both read the fleet through
`with_added_slots`, so they agree on the slots and their order.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from fleetgram.domain import slot_name


@dataclass(frozen=True)
class SpareSlot:
    slot: str
    secret: str  # the Secret the operator writes the token to
    key: str
    service_account: str | None


def spare_slots(pool: Mapping[str, Any]) -> list[SpareSlot]:
    """The pool's spare slots, in order (none when the chart reserves none)."""
    entries = (pool.get("spec") or {}).get("spareSlots") or []
    return [SpareSlot(str(e["slot"]), str(e["secretName"]), str(e.get("key") or "token"),
                      e.get("serviceAccountName") or None)
            for e in entries if isinstance(e, Mapping) and e.get("slot") and e.get("secretName")]


def token_slot_names(pool: Mapping[str, Any]) -> list[str]:
    """The slots of spec.tokenSecrets: worker1..N, or the name an entry carries (an added
    slot, see `with_added_slots`)."""
    entries = (pool.get("spec") or {}).get("tokenSecrets") or []
    return [str((e.get("slot") if isinstance(e, Mapping) else None) or slot_name(i))
            for i, e in enumerate(entries)]


def free_spare_slot(pool: Mapping[str, Any], taken: Collection[str]) -> SpareSlot | None:
    """The first spare slot that holds no token yet and is not one of the pool's own."""
    own = set(token_slot_names(pool))
    return next((s for s in spare_slots(pool) if s.slot not in taken and s.slot not in own),
                None)


def usable_added(pool: Mapping[str, Any], added: Collection[str]) -> list[str]:
    """Of the slots holding a stored token, those the pool runs: spare slots of this pool
    that no tokenSecrets slot shadows (a `helm upgrade` that grew workerTokens renumbers the
    spare slots: a token stored for an old number is then left out, and reported)."""
    own = set(token_slot_names(pool))
    return [s.slot for s in spare_slots(pool) if s.slot in added and s.slot not in own]


def with_added_slots(pool: Mapping[str, Any], added: Collection[str]) -> dict[str, Any]:
    """The pool as the fleet runs it: spec.tokenSecrets followed by the spare slots in use,
    each as a tokenSecrets entry carrying its slot name. A copy; `pool` is left as it is."""
    usable = set(usable_added(pool, added))
    if not usable:
        return dict(pool)
    effective = dict(pool)
    spec = dict(pool.get("spec") or {})
    entries = [copy.deepcopy(dict(e)) for e in spec.get("tokenSecrets") or []]
    for i, entry in enumerate(entries):
        entry.setdefault("slot", slot_name(i))
    for spare in spare_slots(pool):
        if spare.slot in usable:
            entry = {"slot": spare.slot, "name": spare.secret, "key": spare.key}
            if spare.service_account:
                entry["serviceAccountName"] = spare.service_account
            entries.append(entry)
    spec["tokenSecrets"] = entries
    effective["spec"] = spec
    return effective
