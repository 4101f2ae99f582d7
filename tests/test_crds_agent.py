"""The WorkerPool CRD's agent mode fields (engine, agent, workspace): admitted with their
defaults, refused with the field named when wrong (the emulated API server's admission)."""
from __future__ import annotations

import copy

import pytest

from tests.emulators.kube_api import ApiError, KubeEmulator
from tests.test_crds import CRDS, EXAMPLES, load


@pytest.fixture()
def emu() -> KubeEmulator:
    return KubeEmulator(crds=CRDS.values(), namespaces=['default'])


def agent_pool(**spec: object) -> dict:
    pool = copy.deepcopy(load(EXAMPLES['workerpools']))
    pool['spec'].update({'engine': 'agent', **spec})
    return pool


def refused(emu: KubeEmulator, obj: dict) -> ApiError:
    with pytest.raises(ApiError) as e:
        emu.create(obj)
    assert e.value.code == 422 and e.value.reason == 'Invalid'
    return e.value


def test_a_pool_without_engine_is_a_chat_pool(emu):
    pool = copy.deepcopy(load(EXAMPLES['workerpools']))
    made = emu.create(pool)
    assert made['spec']['engine'] == 'chat'
    assert 'workspace' not in made['spec'] and 'agent' not in made['spec']


def test_an_agent_pool_is_admitted_with_the_workspace_defaults(emu):
    made = emu.create(agent_pool(
        agent={'permissionMode': 'edits', 'approvalTimeoutSeconds': 600, 'taskBudgetUSD': 2.5,
               'taskMaxTurns': 30, 'verbose': 2, 'sandbox': False,
               'oauthTokenSecret': {'name': 'claude-oauth'}},
        workspace={'type': 'persistentVolumeClaim', 'repo': 'https://git.example/a.git',
                   'repoSecret': 'git-creds', 'storageClassName': 'fast'}))
    spec = made['spec']
    assert spec['engine'] == 'agent'
    assert spec['agent']['taskBudgetUSD'] == 2.5  # a real number, kept as one
    assert spec['agent']['oauthTokenSecret'] == {'name': 'claude-oauth', 'key': 'token'}
    assert spec['workspace'] == {
        'type': 'persistentVolumeClaim', 'size': '10Gi', 'accessModes': ['ReadWriteOnce'],
        'repo': 'https://git.example/a.git', 'repoSecret': 'git-creds',
        'storageClassName': 'fast'}
    second = agent_pool(workspace={})
    second['metadata']['name'] = 'second'
    assert emu.create(second)['spec']['workspace']['type'] == 'emptyDir'


@pytest.mark.parametrize(('spec', 'field', 'words'), [
    ({'engine': 'robot'}, 'spec.engine', 'supported values: "chat", "agent"'),
    ({'workspace': {'type': 'hostPath'}}, 'spec.workspace.type',
     'supported values: "persistentVolumeClaim", "emptyDir"'),
    ({'workspace': {'size': 'ten gigs'}}, 'spec.workspace.size', 'should match'),
    ({'workspace': {'accessModes': ['ReadOnlyMany']}}, 'spec.workspace.accessModes[0]',
     'Unsupported value'),
    ({'workspace': {'repoSecret': ''}}, 'spec.workspace.repoSecret', 'at least 1 chars'),
    ({'agent': {'permissionMode': 'yolo'}}, 'spec.agent.permissionMode',
     'supported values: "ask", "edits", "all", "plan"'),
    ({'agent': {'taskBudgetUSD': 0}}, 'spec.agent.taskBudgetUSD', 'should be greater than 0'),
    ({'agent': {'taskBudgetUSD': 'lots'}}, 'spec.agent.taskBudgetUSD', 'must be of type'),
    ({'agent': {'approvalTimeoutSeconds': 0}}, 'spec.agent.approvalTimeoutSeconds',
     'greater than or equal to 1'),
    ({'agent': {'verbose': 3}}, 'spec.agent.verbose', 'less than or equal to 2'),
    ({'agent': {'oauthTokenSecret': {'key': 'token'}}}, 'spec.agent.oauthTokenSecret.name',
     'Required value'),
])
def test_bad_agent_settings_are_refused_naming_the_field(emu, spec, field, words):
    error = refused(emu, agent_pool(**spec))
    assert [c['field'] for c in error.details['causes']] == [field]
    assert words in error.message
