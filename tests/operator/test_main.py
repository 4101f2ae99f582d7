"""`fleetgram operator`: its settings, its outbox, and the command itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fleetgram.config import Settings, load_settings
from fleetgram.operator.main import outbox_for
from fleetgram.operator.outbox import NullOutbox, StoreOutbox
from fleetgram.operator.reconcile import OperatorConfig
from tests.emulators import kube_api
from tests.emulators.kube_api import KubeEmulator
from tests.operator.harness import NS, make_pool, make_secrets

kube_emulator = kube_api.kube_emulator  # the fixture

BASE = {"ALLOWED_USER_IDS": "42", "ANTHROPIC_API_KEY": "sk-test"}


def settings(**env: str) -> Settings:
    return load_settings({**BASE, **env}, dotenv=None, need_master=False, need_workers=False)


def test_the_outbox_is_the_database_when_there_is_one() -> None:
    pg = settings(DATABASE_URL="postgresql://fleetgram@db/fleetgram")
    assert isinstance(outbox_for(pg, {}), StoreOutbox)
    # The built-in SQLite default would be a file in the pod nobody reads: no outbox.
    assert isinstance(outbox_for(settings(), {}), NullOutbox)
    explicit = settings(DATABASE_URL="sqlite:////data/fleetgram.sqlite3")
    env = {"DATABASE_URL": "sqlite:////data/fleetgram.sqlite3"}
    assert isinstance(outbox_for(explicit, env), StoreOutbox)


def test_operator_config_from_the_environment() -> None:
    config = OperatorConfig.from_env({"OPERATOR_INTERVAL": "0.5", "OPERATOR_START_TIMEOUT": "90"},
                                     default_pool="mypool")
    assert config.interval == 0.5 and config.start_timeout == 90
    assert config.reservation_ttl == 10 and config.default_pool == "mypool"
    assert OperatorConfig.from_env({}) == OperatorConfig()


def free_port() -> int:
    """A port nobody listens on now (tests run in parallel: never a fixed one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.k8s
def test_with_its_health_port_taken_the_operator_runs_without_it_and_says_so(
        kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    make_secrets(kube_emulator, 2)
    make_pool(kube_emulator, 2, minWorkers=1)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start_operator(tmp_path, HEALTH_PORT=str(port))
        try:
            kube_emulator.wait_for_sync(
                lambda: kube_emulator.get("deployments", "fleetgram-worker1", NS), 20)
        finally:
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert f"HEALTH_PORT: cannot listen on port {port}" in output


def start_operator(tmp_path: Path, **env_overrides: str) -> subprocess.Popen[str]:
    """`fleetgram operator` as a pod runs it: settings from the environment only."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(BASE, FLEETGRAM_NAMESPACE=NS, OPERATOR_INTERVAL="0.3",
               KUBECONFIG=os.environ["KUBECONFIG"], HEALTH_PORT=str(free_port()),
               METRICS_PORT="0",
               # The operator peeks at stopped workers' chats: never at the real Telegram.
               TELEGRAM_API_URL="http://127.0.0.1:9")
    env.update(env_overrides)
    empty = tmp_path / "empty.env"
    empty.write_text("")
    command = [str(Path(sys.executable).parent / "fleetgram"), "--env-file", str(empty),
               "operator"]
    return subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.k8s
def test_the_fleetgram_operator_command_runs_kopf(kube_emulator: KubeEmulator,
                                                  tmp_path: Path) -> None:
    emu = kube_emulator
    make_secrets(emu, 2)
    make_pool(emu, 2, minWorkers=1)
    proc = start_operator(tmp_path)
    try:
        emu.wait_for_sync(lambda: emu.get("deployments", "fleetgram-worker1", NS), 20)
        emu.wait_for_sync(lambda: (emu.get("workerpools", "fleetgram", NS) or {}).get("status"),
                          10)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "Timer 'reconcile' succeeded" not in output  # kopf's per-second chatter is off
    assert '"msg": "worker started"' in output
