"""The BotTask and WorkerPool CRDs: valid CRD objects, and their schemas admit and refuse
the right objects (checked by the emulated API server's admission, offline)."""
from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.emulators.kube_api import ApiError, KubeEmulator, SchemaError

ROOT = Path(__file__).resolve().parents[1]
CRDS = {'bottasks': ROOT / 'crds' / 'bottask.yaml',
        'workerpools': ROOT / 'crds' / 'workerpool.yaml'}
EXAMPLES = {'bottasks': ROOT / 'crds' / 'examples' / 'bottask.yaml',
            'workerpools': ROOT / 'crds' / 'examples' / 'workerpool.yaml'}


def load(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, path
    return docs[0]


@pytest.fixture()
def emu() -> KubeEmulator:
    """Not started: admission runs in-process, no HTTP needed."""
    return KubeEmulator(crds=CRDS.values(), namespaces=['default'])


@pytest.mark.parametrize('plural', sorted(CRDS))
def test_crd_is_a_valid_apiextensions_v1_object(plural):
    crd = load(CRDS[plural])
    for version in ('1.28', '1.30', kubernetes_validate.latest_version()):
        kubernetes_validate.validate(crd, version, strict=True)
    assert crd['apiVersion'] == 'apiextensions.k8s.io/v1'
    assert crd['metadata']['name'] == f'{plural}.fleetgram.dev'
    spec = crd['spec']
    assert spec['group'] == 'fleetgram.dev' and spec['scope'] == 'Namespaced'
    assert [v['name'] for v in spec['versions']] == ['v1alpha1']
    assert spec['versions'][0]['subresources'] == {'status': {}}


def test_crd_validation_catches_a_broken_crd():
    crd = load(CRDS['bottasks'])
    crd['spec']['versions'][0]['schema']['openAPIV3Schema']['properties']['spec']['type'] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(crd, '1.30', strict=True)


def test_bottask_names_and_printer_columns():
    crd = load(CRDS['bottasks'])
    names = crd['spec']['names']
    assert (names['kind'], names['plural'], names['singular'], names['shortNames']) == (
        'BotTask', 'bottasks', 'bottask', ['bt'])
    columns = [(c['name'], c['jsonPath'], c.get('priority', 0))
               for c in crd['spec']['versions'][0]['additionalPrinterColumns']]
    assert columns == [
        ('Priority', '.spec.priority', 0), ('Phase', '.status.phase', 0),
        ('Worker', '.status.worker', 0), ('Title', '.spec.title', 0),
        ('Attempts', '.status.attempts', 1), ('Age', '.metadata.creationTimestamp', 0)]


def test_workerpool_names_and_printer_columns():
    crd = load(CRDS['workerpools'])
    assert crd['spec']['names']['shortNames'] == ['wp']
    columns = [c['name'] for c in crd['spec']['versions'][0]['additionalPrinterColumns']]
    assert columns == ['Min', 'Max', 'Ready', 'Idle', 'Busy', 'Pending', 'Age']
    rules = crd['spec']['versions'][0]['schema']['openAPIV3Schema']['properties']['spec'][
        'x-kubernetes-validations']
    assert rules == [{'rule': 'self.minWorkers <= self.maxWorkers',
                      'message': 'minWorkers must not exceed maxWorkers'}]


@pytest.mark.parametrize('plural', sorted(EXAMPLES))
def test_examples_are_admitted_with_defaults(emu, plural):
    example = load(EXAMPLES[plural])
    # kubernetes_validate bundles no schema for custom resources: the emulator's admission
    # (the CRD's openAPIV3Schema, defaults and CEL rule) is what checks them.
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(example, '1.30', strict=True)
    made = emu.create(example)
    assert made['metadata']['uid'] and made['metadata']['resourceVersion']
    if plural == 'bottasks':
        assert made['spec']['source'] == 'master' and made['spec']['cancel'] is False
        assert made['spec']['priority'] == 3
    else:
        assert [s['key'] for s in made['spec']['tokenSecrets']] == ['token'] * 3
        assert made['spec']['leaseSeconds'] == 30
        assert made['spec']['finishedTaskTTLSeconds'] == 86400


def refused(emu: KubeEmulator, obj: dict) -> ApiError:
    with pytest.raises(ApiError) as e:
        emu.create(obj)
    assert e.value.code == 422 and e.value.reason == 'Invalid'
    return e.value


def bad_task(**spec: object) -> dict:
    task = copy.deepcopy(load(EXAMPLES['bottasks']))
    for key, value in spec.items():
        if value is None:
            task['spec'].pop(key, None)
        else:
            task['spec'][key] = value
    return task


@pytest.mark.parametrize(('change', 'field', 'words'), [
    ({'priority': 11}, 'spec.priority', 'should be less than or equal to 10'),
    ({'priority': 0}, 'spec.priority', 'should be greater than or equal to 1'),
    ({'priority': 'high'}, 'spec.priority', 'must be of type integer'),
    ({'prompt': ''}, 'spec.prompt', 'should be at least 1 chars long'),
    ({'prompt': 'x' * 32001}, 'spec.prompt', 'Too long'),
    ({'title': 't' * 201}, 'spec.title', 'Too long'),
    ({'prompt': None}, 'spec.prompt', 'Required value'),
    ({'userId': None}, 'spec.userId', 'Required value'),
    ({'chatId': '42'}, 'spec.chatId', 'must be of type integer'),
    ({'pinnedWorker': 'worker0'}, 'spec.pinnedWorker', "should match '^worker[1-9][0-9]*$'"),
    ({'pinnedWorker': 'bob'}, 'spec.pinnedWorker', 'should match'),
    ({'source': 'cron'}, 'spec.source', 'supported values: "master", "direct"'),
    ({'cancel': 'yes'}, 'spec.cancel', 'must be of type boolean'),
    ({'messageId': '42'}, 'spec.messageId', 'must be of type integer'),
    ({'messageId': 0}, 'spec.messageId', 'should be greater than or equal to 1'),
])
def test_bad_bottasks_are_refused_naming_the_field(emu, change, field, words):
    error = refused(emu, bad_task(**change))
    assert [c['field'] for c in error.details['causes']] == [field]
    assert f'{field}: ' in error.message and words in error.message


def test_pinned_worker_accepts_slot_names(emu):
    for i, slot in enumerate(['worker1', 'worker9', 'worker12']):
        task = bad_task(pinnedWorker=slot)
        task['metadata']['name'] = f't-pin{i}'
        assert emu.create(task)['spec']['pinnedWorker'] == slot


def test_message_id_is_optional_and_kept(emu):
    assert 'messageId' not in emu.create(bad_task(messageId=None))['spec']
    task = bad_task(messageId=12345)
    task['metadata']['name'] = 't-msg01'
    assert emu.create(task)['spec']['messageId'] == 12345  # declared: not pruned


def bad_pool(**spec: object) -> dict:
    pool = copy.deepcopy(load(EXAMPLES['workerpools']))
    for key, value in spec.items():
        if value is None:
            pool['spec'].pop(key, None)
        else:
            pool['spec'][key] = value
    return pool


@pytest.mark.parametrize(('change', 'field', 'words'), [
    ({'minWorkers': 4, 'maxWorkers': 2}, 'spec', 'minWorkers must not exceed maxWorkers'),
    ({'minWorkers': 6, 'maxWorkers': None}, 'spec', 'minWorkers must not exceed maxWorkers'),
    ({'tokenSecrets': None}, 'spec.tokenSecrets', 'Required value'),
    ({'tokenSecrets': []}, 'spec.tokenSecrets', 'should have at least 1 items'),
    ({'tokenSecrets': [{'key': 'token'}]}, 'spec.tokenSecrets[0].name', 'Required value'),
    ({'template': None}, 'spec.template', 'Required value'),
    ({'template': {'model': 'x'}}, 'spec.template.image', 'Required value'),
    ({'maxWorkers': 51}, 'spec.maxWorkers', 'less than or equal to 50'),
    ({'maxWorkers': 0}, 'spec.maxWorkers', 'greater than or equal to 1'),
    ({'minWorkers': -1}, 'spec.minWorkers', 'greater than or equal to 0'),
    ({'leaseSeconds': 4}, 'spec.leaseSeconds', 'greater than or equal to 5'),
    ({'maxAttempts': 0}, 'spec.maxAttempts', 'greater than or equal to 1'),
    ({'template': {'image': 'w', 'imagePullPolicy': 'Sometimes'}},
     'spec.template.imagePullPolicy', 'Unsupported value'),
])
def test_bad_workerpools_are_refused_naming_the_field(emu, change, field, words):
    error = refused(emu, bad_pool(**change))
    assert [c['field'] for c in error.details['causes']] == [field]
    assert words in error.message


def test_status_schema_is_closed_and_typed(emu):
    emu.create(load(EXAMPLES['bottasks']))
    patched = emu.patch('bottasks', 't-7k2qf', {'status': {
        'phase': 'Completed', 'worker': 'worker1', 'attempts': 1, 'summary': 'done',
        'completedAt': '2026-01-01T00:00:00Z', 'kopf': {'progress': {}},
        'usage': {'inputTokens': 1, 'outputTokens': 2, 'cacheReadTokens': 0,
                  'cacheWriteTokens': 0, 'costUsd': 0.001}}}, subresource='status')
    assert 'kopf' not in patched['status']  # pruned: undeclared status fields are dropped
    assert patched['status']['usage']['costUsd'] == 0.001
    with pytest.raises(ApiError) as e:
        emu.patch('bottasks', 't-7k2qf', {'status': {'summary': 's' * 1001}},
                  subresource='status')
    assert 'status.summary' in e.value.message
    with pytest.raises(ApiError) as e:
        emu.patch('bottasks', 't-7k2qf', {'status': {'completedAt': 'yesterday'}},
                  subresource='status')
    assert 'status.completedAt' in e.value.message
    emu.create(load(EXAMPLES['workerpools']))
    pool = emu.patch('workerpools', 'fleetgram', {'status': {
        'slots': [{'name': 'worker1', 'state': 'idle', 'deployment': 'fleetgram-worker1'}],
        'ready': 1, 'idle': 1, 'busy': 0, 'pending': 0, 'observedGeneration': 1,
        'lastScale': {'action': 'up', 'reason': 'pending', 'at': '2026-01-01T00:00:00Z'},
        'conditions': [{'type': 'Ready', 'status': 'True', 'reason': 'Ok', 'message': '',
                        'lastTransitionTime': '2026-01-01T00:00:00Z'}]}}, subresource='status')
    assert pool['status']['slots'][0]['state'] == 'idle'
    with pytest.raises(ApiError):
        emu.patch('workerpools', 'fleetgram', {'status': {'slots': [{'state': 'sleepy'}]}},
                  subresource='status')


def test_preserve_unknown_fields_false_is_refused_like_the_api_server(tmp_path):
    crd = load(CRDS['bottasks'])
    crd['spec']['versions'][0]['schema']['openAPIV3Schema']['properties']['status'][
        'x-kubernetes-preserve-unknown-fields'] = False
    path = tmp_path / 'crd.yaml'
    path.write_text(yaml.safe_dump(crd))
    with pytest.raises(ApiError) as e:
        KubeEmulator(crds=[path])
    assert 'must be true or undefined' in e.value.message
    with pytest.raises(SchemaError, match='must be true or undefined'):
        from tests.emulators.kube_api import _crd_to_type
        _crd_to_type(crd)
