"""The chart's RBAC grants exactly what the components use. A representative set of cluster
stories runs here (in one test, so that it is self-contained whatever process runs it)
through the chart installed into the RBAC-enforcing emulator; the emulator's authorization
log then says who made which request. No request may be denied, and every rule of every
rendered Role and ClusterRole must have allowed some request of its ServiceAccount."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleetgram.domain import utcnow
from fleetgram.kube.objects import BOTTASKS
from tests.cluster.harness import NS, Cluster, user_of
from tests.e2e.harness import MASTER, World, wait_until, worker_bot
from tests.emulators.kube_api import AuthorizationRecord, KubeEmulator, rule_allows

pytestmark = [pytest.mark.k8s, pytest.mark.postgres, pytest.mark.e2e]

# Rules no story here can reach, each with where it is exercised instead.
NOT_REACHED = {
    ("operator", "", "persistentvolumeclaims", "get"): "agent workspaces (test_cluster_agent.py, "
                                                           "same chart and RBAC)",
    ("operator", "", "persistentvolumeclaims", "create"): "agent workspaces (same)",
    ("operator", "fleetgram.dev", "bottasks", "delete"): "finishedTaskTTLSeconds cleanup "
                                                         "(tests/operator)",
}


def grants(cluster: Cluster) -> list[tuple[set[str], str, dict]]:
    """(users, role name, rule) for every rule the chart binds to ServiceAccounts. A binding's
    subjects share its rules (each worker slot has an account of its own), so a rule counts as
    used when any of them used it."""
    roles = {(o["kind"], o["metadata"]["name"]): o for o in cluster.objects
             if o["kind"] in ("Role", "ClusterRole")}
    out = []
    for binding in cluster.objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if "helm.sh/hook" in (binding["metadata"].get("annotations") or {}):
            continue  # the uninstall hook's, tested in test_uninstall.py
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ref["name"])]
        users = {user_of(s["name"], s.get("namespace", NS)) for s in binding["subjects"]}
        out += [(users, role["metadata"]["name"], rule) for rule in role["rules"]]
    return out


def used(rule: dict, verb: str, group: str, resource: str, users: set[str],
         log: list[AuthorizationRecord]) -> bool:
    one = {**rule, "verbs": [verb], "apiGroups": [group], "resources": [resource]}
    return any(a.allowed and a.user in users and rule_allows(
        one, a.verb, a.group, a.resource, a.subresource, a.name) for a in log)


async def test_the_charts_roles_grant_what_the_stories_use_and_nothing_else(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.tokens_per_second = 20  # slow answers keep prompts pending: the fleet grows
    cluster = Cluster(kube_emulator, world, tokens=4, minWorkers=1, maxWorkers=4,
                      scaleUpThreshold=2, scaleDownDelaySeconds=1, leaseSeconds=10)
    async with cluster.running():
        await world.open_chats(world.ada, workers=4)
        await wait_until(lambda: cluster.deployments(), 20, "worker1")
        # A prompt runs to the end; more of them scale the fleet up, then down.
        ids = [await world.prompt(f"job number {i}") for i in range(5)]
        # A pending prompt is cancelled before it runs.
        waiting = await world.prompt("never run me")
        await world.ada.send(MASTER, f"/cancel {waiting}")
        # Three or more: the fleet scales down only with more than two idle workers (the
        # seed's rule), and the stop is one of the stories this test needs.
        await wait_until(lambda: len(cluster.deployments()) >= 3, 40, "scale up to 3+")
        await world.ada.send(MASTER, "/workers")
        await world.ada.wait_for_text(MASTER, "Workers:")
        # A prompt written in a worker's own chat.
        await world.ada.send(worker_bot(1), "explain the build system")
        await wait_until(lambda: any(
            o["spec"].get("source") == "direct" for o in kube_emulator.objects(BOTTASKS, NS)),
            20, "the direct task")
        world.claude.tokens_per_second = 2000
        await wait_until(lambda: all(cluster.phase(i) in ("Completed", "Cancelled")
                                     for i in ids), 60, "all done")
        await wait_until(lambda: ((kube_emulator.get("workerpools", "fleetgram", NS) or {})
                                  .get("status") or {}).get("lastScale", {}).get("action")
                         == "stop", 30, "scale down")
        # The retention purge of finished BotTasks (the master's housekeeping).
        await cluster.master.store.purge_finished(utcnow() + timedelta(days=1))

    log = kube_emulator.authorizations
    denied = sorted({(a.user, a.verb, a.resource, a.subresource) for a in log if not a.allowed})
    assert not denied, denied
    unused = []
    for users, role, rule in grants(cluster):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                unused += [f"{role}: {verb} {group or 'core'}/{resource}"
                           for verb in rule["verbs"]
                           if (role.rsplit("-", 1)[-1], group, resource, verb)
                           not in NOT_REACHED
                           and not used(rule, verb, group, resource, users, log)]
    assert not unused, "granted but never used:\n" + "\n".join(unused)
