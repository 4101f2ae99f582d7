"""The operator's API requests per idle minute (Kubernetes mode), as a separate process.

The Kubernetes API emulator is test code (tests/emulators/kube_api.py, built on kmock) and the
cluster is assembled by tests/cluster/harness.py (the Helm chart installed into the emulated
API server with RBAC, the real kopf operator, the master in cluster mode, worker "pods"
started by a fake kubelet), exactly as tests/cluster/test_operator_idle.py runs it. So this
figure needs the project's test extra (`pip install -e .[test]`) and a Postgres server; without
them it prints why it was not measured. It runs in its own process because it sets the
kubernetes client's global configuration.

Measured: the requests of the operator's ServiceAccount other than its watches, during WINDOW
seconds after the pool has settled with two idle workers (which renew their Leases meanwhile),
scaled to a minute (count × 60 / WINDOW). Prints one line of JSON: {"value": ..., "note": ...}.

    python -P benchmarks/operator_idle.py WINDOW POSTGRES_ADMIN_URL
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# tests.* lives at the repository's root; appended (python -P) so nothing shadows stdlib.
sys.path.append(str(Path(__file__).resolve().parent.parent))


def report(value: float | None, note: str) -> None:
    print(json.dumps({"value": value, "note": note}))


async def measure(window: float, admin_url: str) -> tuple[float, str]:
    import kubernetes.client
    import kubernetes.config
    import kubernetes.config.kube_config
    import psycopg

    from fleetgram.emulators.claude_api import ClaudeEmulator
    from fleetgram.emulators.telegram_api import TelegramEmulator
    from tests.cluster.harness import NS, Cluster, user_of
    from tests.e2e.harness import ADA, MALLORY, World, add_bots, wait_until
    from tests.emulators.kube_api import KubeEmulator

    name = f"fg_bench_op_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    emu = KubeEmulator(namespaces=("default", "fleetgram"), rbac=True)
    emu.start_sync()
    telegram = TelegramEmulator(chat_burst=30, chat_rate=20.0)
    claude = ClaudeEmulator(api_key="sk-ant-test-key-0001", tokens_per_second=400.0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = emu.kubeconfig(Path(tmp) / "admin-kubeconfig", namespace="fleetgram")
            os.environ["KUBECONFIG"] = path
            kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = path
            kubernetes.config.KUBE_CONFIG_DEFAULT_LOCATION = path
            kubernetes.client.Configuration._default = None
            kubernetes.config.load_kube_config(config_file=path)
            await telegram.start()
            await claude.start()
            add_bots(telegram, 5)
            world = World(telegram, claude, url, telegram.add_user(ADA, "Ada", "ada"),
                          telegram.add_user(MALLORY, "Mallory"))
            cluster = Cluster(emu, world, minWorkers=2, maxWorkers=3, leaseSeconds=10)
            operator = user_of(cluster.service_accounts["operator"])

            def idle() -> bool:
                pool = emu.get("workerpools", "fleetgram", NS) or {}
                return (pool.get("status") or {}).get("idle") == 2

            async with cluster.running():
                await world.open_chats(world.ada, workers=3)
                await wait_until(idle, 30, "two idle workers")
                await asyncio.sleep(1.0)  # start-up settles
                emu.clear_history()
                await asyncio.sleep(window)
                requests = [r for r in emu.history if r.user == operator and r.verb != "watch"]
    finally:
        await claude.stop()
        await telegram.stop()
        emu.stop_sync()
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return len(requests) * 60 / window, (f"{len(requests)} in {window:g} s, scaled to a minute;"
                                         " 2 idle workers renewing Leases")


def main() -> int:
    window, admin_url = float(sys.argv[1]), sys.argv[2]
    try:
        import tests.cluster.harness
        import tests.emulators.kube_api  # noqa: F401
    except ImportError as error:
        report(None, f"needs the test extra ({error.name} missing)")
        return 0
    try:
        value, note = asyncio.run(measure(window, admin_url))
    except Exception as error:  # the figure is optional: say why, the suite goes on
        report(None, f"not measured: {type(error).__name__}: {str(error)[:120]}")
        return 0
    report(value, note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
