"""The chart in agent mode: `worker.engine: agent` with its settings and workspace renders
into the WorkerPool (numbers as numbers, whatever Helm's float64 does to them), the objects
validate, the emulated API server admits them, and the operator may make workspace claims."""
from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.emulators.kube_api import FLEETGRAM_CRDS, KubeEmulator
from tests.test_chart import CHART, NS, RELEASE, VALUES, by_kind, helm, objects, render

# As a user writes it in my-values.yaml: real numbers, not strings.
AGENT_VALUES_FILE = """
worker:
  engine: agent
  agent:
    permissionMode: edits
    approvalTimeoutSeconds: 600
    taskBudgetUSD: 2.5
    taskMaxTurns: 1000000
    verbose: 0
    sandbox: true
    oauthToken: {existingSecret: claude-oauth, existingSecretKey: oauth-token}
  workspace:
    type: persistentVolumeClaim
    size: "20Gi"
    storageClassName: fast-ssd
    repo: https://git.example/team/app.git
    repoSecret: app-git-credentials
"""


def values_with(text: str) -> dict[str, Any]:
    values: dict[str, Any] = json.loads(json.dumps(VALUES))
    values.update(yaml.safe_load(text))
    return values


def the_pool(objs: list[dict]) -> dict:
    (pool,) = by_kind(objs, 'WorkerPool').values()
    return pool


@pytest.fixture(scope='module')
def rendered() -> list[dict]:
    return objects(render(values_with(AGENT_VALUES_FILE)))


def test_the_workerpool_carries_the_engine_the_agent_settings_and_the_workspace(rendered):
    spec = the_pool(rendered)['spec']
    assert spec['engine'] == 'agent'
    assert spec['agent'] == {
        'permissionMode': 'edits', 'approvalTimeoutSeconds': 600, 'taskBudgetUSD': 2.5,
        'taskMaxTurns': 1000000, 'verbose': 0, 'sandbox': True,
        'oauthTokenSecret': {'name': 'claude-oauth', 'key': 'oauth-token'}}
    assert spec['workspace'] == {
        'type': 'persistentVolumeClaim', 'size': '20Gi', 'storageClassName': 'fast-ssd',
        'accessModes': ['ReadWriteOnce'], 'repo': 'https://git.example/team/app.git',
        'repoSecret': 'app-git-credentials'}


def test_agent_workers_get_the_agent_resources(rendered):
    assert the_pool(rendered)['spec']['template']['resources'] == {
        'requests': {'cpu': '100m', 'memory': '512Mi'}, 'limits': {'memory': '1Gi'}}


def test_the_agent_rendering_validates_and_is_admitted(rendered):
    for obj in rendered:
        if obj['kind'] not in ('WorkerPool', 'ServiceMonitor'):
            kubernetes_validate.validate(obj, '1.30', strict=True)
    emu = KubeEmulator(crds=FLEETGRAM_CRDS, namespaces=['default', NS])
    made = emu.create(the_pool(rendered), namespace=NS)  # the CRD's schema checks it
    assert made['spec']['agent']['taskBudgetUSD'] == 2.5
    assert made['spec']['workspace']['size'] == '20Gi'
    report = helm.lint(CHART, values_with(AGENT_VALUES_FILE), strict=True, namespace=NS)
    assert report['errors'] == []


def test_an_oauth_token_given_as_a_value_is_kept_in_a_secret_of_the_chart():
    objs = objects(render(values_with(
        'worker: {engine: agent, agent: {oauthToken: {value: sk-ant-oat01-abc}}}')))
    name = f'{RELEASE}-fleetgram-claude-code-oauth'
    assert by_kind(objs, 'Secret')[name]['stringData'] == {'token': 'sk-ant-oat01-abc'}
    assert the_pool(objs)['spec']['agent']['oauthTokenSecret'] == {'name': name, 'key': 'token'}
    assert 'sk-ant-oat01-abc' not in json.dumps(the_pool(objs))


def test_the_default_is_a_chat_pool_without_workspace():
    objs = objects(render())
    spec = the_pool(objs)['spec']
    assert spec['engine'] == 'chat' and 'agent' not in spec and 'workspace' not in spec
    assert spec['template']['resources']['limits'] == {'memory': '512Mi'}
    assert f'{RELEASE}-fleetgram-claude-code-oauth' not in by_kind(objs, 'Secret')


def test_whole_budgets_are_numbers_not_exponents():
    objs = objects(render(values_with(
        'worker: {engine: agent, agent: {taskBudgetUSD: 3000000, approvalTimeoutSeconds: '
        '1200000}}')))
    agent = the_pool(objs)['spec']['agent']
    assert (agent['taskBudgetUSD'], agent['approvalTimeoutSeconds']) == (3000000, 1200000)


@pytest.mark.parametrize(('text', 'words'), [
    ('worker: {engine: robot}', '/worker/engine'),
    ('worker: {workspace: {type: hostPath}}', '/worker/workspace/type'),
    ('worker: {workspace: {size: lots}}', '/worker/workspace/size'),
    ('worker: {workspace: {mountPath: /data}}', 'mountPath'),
    ('worker: {agent: {permissionMode: yolo}}', '/worker/agent/permissionMode'),
    ('worker: {agent: {taskBudgetUSD: -1}}', '/worker/agent/taskBudgetUSD'),
])
def test_bad_agent_values_fail_with_a_message(text, words):
    with pytest.raises(helm.HelmError) as e:
        render(values_with(text))
    assert words in str(e.value)


def test_the_operator_may_get_and_create_workspace_claims_only(rendered):
    role = by_kind(rendered, 'Role')[f'{RELEASE}-fleetgram-operator']
    (rule,) = [r for r in role['rules'] if 'persistentvolumeclaims' in r['resources']]
    assert rule == {'apiGroups': [''], 'resources': ['persistentvolumeclaims'],
                    'verbs': ['get', 'create']}


OAUTH_ONLY = """
anthropic:
  apiKey: {existingSecret: "", value: ""}
worker:
  engine: agent
  agent:
    oauthToken: {existingSecret: claude-oauth, existingSecretKey: oauth-token}
"""


def _env_of(obj: dict) -> dict[str, dict]:
    container = obj['spec']['template']['spec']['containers'][0]
    return {e['name']: e for e in container.get('env', [])}


def test_a_subscription_token_alone_is_enough_and_reaches_the_workers_only():
    objs = objects(render(values_with(OAUTH_ONLY)))
    for name, deployment in by_kind(objs, 'Deployment').items():
        env = _env_of(deployment)
        assert 'ANTHROPIC_API_KEY' not in env, name
        assert 'CLAUDE_CODE_OAUTH_TOKEN' not in env, name  # master and operator call no Claude
        assert env['WORKER_ENGINE']['value'] == 'agent', name
    pool = the_pool(objs)
    assert pool['spec']['agent']['oauthTokenSecret'] == {'name': 'claude-oauth',
                                                         'key': 'oauth-token'}
    assert not any(e['name'] == 'ANTHROPIC_API_KEY' for e in pool['spec']['template']['env'])


def test_without_a_key_or_a_subscription_token_the_install_fails_with_a_message():
    with pytest.raises(helm.HelmError) as e:
        render(values_with('anthropic:\n  apiKey: {existingSecret: "", value: ""}\n'))
    assert 'worker.agent.oauthToken' in str(e.value)
