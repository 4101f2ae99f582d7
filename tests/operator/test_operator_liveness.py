"""The operator's liveness: kopf's own endpoint, on HEALTH_PORT (default 8081, 0: none)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fleetgram.operator.main import liveness_endpoint
from tests.emulators import kube_api
from tests.emulators.kube_api import KubeEmulator
from tests.operator.harness import NS, make_pool, make_secrets

kube_emulator = kube_api.kube_emulator  # the fixture


def test_the_liveness_endpoint_is_kopfs_on_health_port() -> None:
    assert liveness_endpoint({}) == "http://0.0.0.0:8081/healthz"
    assert liveness_endpoint({"HEALTH_PORT": "9100"}) == "http://0.0.0.0:9100/healthz"
    assert liveness_endpoint({"HEALTH_PORT": "0"}) is None
    with pytest.raises(ValueError, match="HEALTH_PORT"):
        liveness_endpoint({"HEALTH_PORT": "http"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            status: int = resp.status
            return status
    except OSError:
        return None


@pytest.mark.k8s
def test_healthz_answers_200_while_the_operator_runs(kube_emulator: KubeEmulator,
                                                     tmp_path: Path) -> None:
    emu = kube_emulator
    make_secrets(emu, 1)
    make_pool(emu, 1, minWorkers=1)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(ALLOWED_USER_IDS="42", FLEETGRAM_NAMESPACE=NS, HEALTH_PORT=str(port),
               KUBECONFIG=os.environ["KUBECONFIG"], TELEGRAM_API_URL="http://127.0.0.1:9")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    command = [str(Path(sys.executable).parent / "fleetgram"), "--env-file", str(empty),
               "operator"]
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        emu.wait_for_sync(lambda: emu.get("deployments", "fleetgram-worker1", NS), 20)
        deadline = time.monotonic() + 10
        while healthz(port) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert healthz(port) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert healthz(port) is None  # gone with the operator
