"""/addworker on Kubernetes: a bot created from Telegram (Bot API 9.6 managed bots) joins the
fleet in one of the spare slots the chart reserves (`addWorker.spareSlots`). The master stores
its token encrypted in the shared database; the operator writes the slot's Secret (owned by
the WorkerPool) and starts its worker, which runs as the slot's own ServiceAccount under the
chart's RBAC and admission policy. Every part runs as in tests/cluster/harness.py, with RBAC
enforced: a request the chart does not grant fails the test (tests/cluster/conftest.py)."""

from __future__ import annotations

import base64

import pytest

from tests.cluster.harness import NS, POOL, Cluster, uninstall, user_of
from tests.cluster.test_uninstall import pre_delete_hook
from tests.e2e.harness import MASTER, World, wait_until
from tests.e2e.test_addworker import KEY, NEW_BOT, add_worker, offers_the_button
from tests.emulators.kube_api import KubeEmulator

pytestmark = [pytest.mark.k8s, pytest.mark.postgres, pytest.mark.e2e]

UNREACHABLE = "postgresql://fleetgram@127.0.0.1:9/fleetgram?connect_timeout=1"  # port 9: discard
SPARE = {"addWorker": {"spareSlots": 2, "encryptionKey": {"value": KEY}}}


def with_spare_slots(emu: KubeEmulator, world: World, values: dict | None = None,
                     **scaling: object) -> Cluster:
    """`helm install` with two worker tokens and two spare slots (worker3, worker4)."""
    return Cluster(emu, world, tokens=2, values=values or SPARE,
                   env={"TOKEN_ENCRYPTION_KEY": KEY},
                   **{"minWorkers": 1, "maxWorkers": 5, **scaling})


async def test_a_bot_created_from_telegram_becomes_worker3_and_runs_a_pinned_prompt(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.script("hello from the new worker", when="greet")
    cluster = with_spare_slots(kube_emulator, world)
    async with cluster.running():
        joined = await add_worker(world)
        assert f"worker3 (@{NEW_BOT}) is added; the operator starts its worker now" in joined
        started = await world.ada.wait_for_text(MASTER, "🤖 worker3", timeout=15)
        assert started.text == f"🤖 worker3 (@{NEW_BOT}) joined the fleet: its worker is starting."
        await world.ada.start(NEW_BOT)
        task_id = await world.prompt("@worker3 greet me")
        await wait_until(lambda: cluster.phase(task_id) == "Completed", 30, "completed")
        assert cluster.status(task_id)["worker"] == "worker3"
        await world.ada.wait_for_text(NEW_BOT, "hello from the new worker", timeout=15)


async def test_the_operator_writes_the_token_secret_owned_by_the_pool_and_starts_the_worker(
    kube_emulator: KubeEmulator, world: World
) -> None:
    cluster = with_spare_slots(kube_emulator, world)
    async with cluster.running():
        await add_worker(world)
        await kube_emulator.wait_for(
            lambda: "fleetgram-worker3" in cluster.deployments(), 15)
        secret = kube_emulator.get("secrets", "fleetgram-worker3-token", NS)
        assert secret is not None
        token = base64.b64decode(secret["data"]["token"]).decode()
        assert token == world.telegram.bot_token(NEW_BOT)
        pool = kube_emulator.get("workerpools", POOL, NS)
        (owner,) = secret["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("WorkerPool", pool["metadata"]["uid"])
        deployment = kube_emulator.get("deployments", "fleetgram-worker3", NS)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == \
            "fleetgram-worker-3"
        # Who wrote it: the operator's account (the master has no right to Secrets).
        writers = {a.user for a in kube_emulator.authorizations
                   if a.allowed and a.resource == "secrets" and a.verb == "create"}
        assert writers == {user_of(cluster.service_accounts["operator"])}


async def test_the_workerpool_spec_is_left_as_helm_rendered_it(
    kube_emulator: KubeEmulator, world: World
) -> None:
    """A `helm upgrade` re-renders the pool's spec: nothing may live only there."""
    cluster = with_spare_slots(kube_emulator, world)
    rendered = next(o for o in cluster.objects if o["kind"] == "WorkerPool")["spec"]
    async with cluster.running():
        await add_worker(world)
        await wait_until(lambda: any(
            s["name"] == "worker3" for s in
            (kube_emulator.get("workerpools", POOL, NS).get("status") or {}).get("slots", [])),
            15, "worker3 in the pool's status")
        spec = kube_emulator.get("workerpools", POOL, NS)["spec"]
        assert spec["tokenSecrets"] == rendered["tokenSecrets"]
        assert spec["spareSlots"] == rendered["spareSlots"]


@pytest.mark.parametrize("database", ["reachable", "unreachable"])
async def test_a_restarted_operator_keeps_the_added_worker_running(
    kube_emulator: KubeEmulator, world: World, database: str
) -> None:
    """A new operator process must not take worker3's Deployment for an orphan (a slot it
    does not know) before it has read the stored tokens, nor while the database is down."""
    world.claude.script("still here", when="again")
    cluster = with_spare_slots(kube_emulator, world)
    async with cluster.bots():
        with cluster.operator():
            await add_worker(world)
            await kube_emulator.wait_for(
                lambda: "fleetgram-worker3" in cluster.deployments(), 15)
        before = kube_emulator.get("deployments", "fleetgram-worker3", NS)["metadata"]["uid"]
        # A new operator: nothing in memory.
        with cluster.operator(database_url=UNREACHABLE if database == "unreachable" else None):
            task_id = await world.prompt("@worker3 again please")
            await wait_until(lambda: cluster.phase(task_id) == "Completed", 30, "completed")
        after = kube_emulator.get("deployments", "fleetgram-worker3", NS)["metadata"]["uid"]
        assert after == before
        assert not kube_emulator.requests(verb="delete", plural="deployments",
                                          name="fleetgram-worker3")


async def test_an_operator_without_the_key_says_so_in_the_chat_the_bot_was_added_from(
    kube_emulator: KubeEmulator, world: World
) -> None:
    cluster = with_spare_slots(kube_emulator, world)
    cluster.env.pop("TOKEN_ENCRYPTION_KEY")  # the operator's, here (the master has its own)
    async with cluster.running():
        await add_worker(world)
        said = await world.ada.wait_for_text(MASTER, "could not join the fleet", timeout=15)
        assert "TOKEN_ENCRYPTION_KEY" in said.text and said.text.startswith("⚠️ worker3")
        assert kube_emulator.get("secrets", "fleetgram-worker3-token", NS) is None


async def test_workers_lists_the_added_worker(kube_emulator: KubeEmulator,
                                            world: World) -> None:
    cluster = with_spare_slots(kube_emulator, world)
    async with cluster.running():
        await add_worker(world)
        await kube_emulator.wait_for(
            lambda: "fleetgram-worker3" in cluster.deployments(), 15)
        await world.ada.send(MASTER, "/workers")
        answer = await world.ada.wait_for_text(MASTER, "worker3", timeout=10)
        assert "worker4" not in answer.text  # a spare slot nobody took is not a worker


async def test_helm_uninstall_takes_the_added_workers_secret_away(
    kube_emulator: KubeEmulator, world: World
) -> None:
    """The Secret is the operator's, not Helm's: the pool owns it, and the garbage collector
    deletes it with the pool."""
    cluster = with_spare_slots(kube_emulator, world)
    async with cluster.running():
        await add_worker(world)
        await kube_emulator.wait_for(
            lambda: kube_emulator.get("secrets", "fleetgram-worker3-token", NS) is not None, 15)
        assert await pre_delete_hook(cluster)
    uninstall(kube_emulator, cluster.objects)
    assert kube_emulator.get("secrets", "fleetgram-worker3-token", NS) is None
    assert not kube_emulator.objects("secrets", NS)


async def test_when_every_spare_slot_is_taken_addworker_says_so_and_offers_no_button(
    kube_emulator: KubeEmulator, world: World
) -> None:
    values = {"addWorker": {"spareSlots": 1, "encryptionKey": {"value": KEY}}}
    cluster = with_spare_slots(kube_emulator, world, values)
    async with cluster.running():
        await add_worker(world)
        await world.ada.send(MASTER, "/addworker")
        answer = await world.ada.wait_for_text(MASTER, "addWorker.spareSlots", timeout=10)
        assert "no worker slot is free" in answer.text
        assert sum(offers_the_button(m) for m in world.ada.chat(MASTER)) == 1


async def test_without_spare_slots_addworker_names_the_chart_values_to_set(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.telegram.set_bot_management(MASTER, True)
    cluster = Cluster(kube_emulator, world, tokens=2, minWorkers=1)
    async with cluster.running():
        await world.open_chats(world.ada)
        await world.ada.send(MASTER, "/addworker")
        answer = await world.ada.wait_for_text(MASTER, "not configured", timeout=10)
        assert "addWorker.encryptionKey" in answer.text
        assert "addWorker.spareSlots" in answer.text
        assert not any(offers_the_button(m) for m in world.ada.chat(MASTER))
