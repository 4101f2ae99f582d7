"""The emulated Kubernetes API server, driven by the real kubernetes client, kopf and kubectl."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import kmock
import kopf
import kopf.testing
import kubernetes.client
import kubernetes.config
import pytest
from kubernetes import watch
from kubernetes.client import ApiException

from tests.emulators import kube_api
from tests.emulators.kube_api import FLEETGRAM_CRDS, KubeEmulator

pytestmark = pytest.mark.k8s
kube_emulator = kube_api.kube_emulator  # the fixture

GROUP, VERSION, NS = 'fleetgram.dev', 'v1alpha1', 'fleetgram'


def task(name: str, **spec: object) -> dict:
    body = {'prompt': 'Write a haiku about queues', 'userId': 1, 'chatId': 2, **spec}
    return {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'BotTask',
            'metadata': {'name': name}, 'spec': body}


@pytest.fixture()
def co(kube_emulator: KubeEmulator) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi()


def create_task(co: kubernetes.client.CustomObjectsApi, name: str, **kw: object) -> dict:
    labels = kw.pop('labels', None)
    body = task(name, **kw)
    if labels:
        body['metadata']['labels'] = labels
    return co.create_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', body)


def error_body(e: ApiException) -> dict:
    return json.loads(e.body)


# ---------------------------------------------------------------------------------------------

def test_uid_resource_version_timestamps_generation(co, kube_emulator):
    a = create_task(co, 't-aaaa1')
    b = create_task(co, 't-aaaa2')
    assert a['metadata']['uid'] != b['metadata']['uid']
    assert re.fullmatch(r'[0-9a-f-]{36}', a['metadata']['uid'])
    rv_a, rv_b = a['metadata']['resourceVersion'], b['metadata']['resourceVersion']
    assert isinstance(rv_a, str) and int(rv_b) > int(rv_a)
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', a['metadata']['creationTimestamp'])
    assert a['metadata']['generation'] == 1
    assert a['spec']['priority'] == 5 and a['spec']['source'] == 'master'  # schema defaults
    assert a['spec']['cancel'] is False

    spec_changed = co.patch_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-aaaa1',
                                                     {'spec': {'priority': 2}})
    assert spec_changed['metadata']['generation'] == 2
    assert int(spec_changed['metadata']['resourceVersion']) > int(rv_b)
    labelled = co.patch_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-aaaa1',
                                                 {'metadata': {'labels': {'x': 'y'}}})
    assert labelled['metadata']['generation'] == 2  # metadata is not spec
    same = co.patch_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-aaaa1',
                                             {'metadata': {'labels': {'x': 'y'}}})
    assert same['metadata']['resourceVersion'] == labelled['metadata']['resourceVersion']
    assert kube_emulator.get('bottasks', 't-aaaa1', NS)['metadata']['labels'] == {'x': 'y'}


def test_stale_writes_conflict(co, kube_emulator):
    first = create_task(co, 't-conf1')
    co.patch_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-conf1',
                                      {'spec': {'title': 'newer'}})
    stale = dict(first, spec=dict(first['spec'], title='stale'))
    with pytest.raises(ApiException) as e:  # PUT with the old resourceVersion
        co.replace_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-conf1', stale)
    assert e.value.status == 409
    body = error_body(e.value)
    assert body['kind'] == 'Status' and body['reason'] == 'Conflict'
    assert 'the object has been modified; please apply your changes to the latest version' \
        in body['message']
    with pytest.raises(ApiException) as e:  # merge patch carrying the old resourceVersion
        co.patch_namespaced_custom_object(
            GROUP, VERSION, NS, 'bottasks', 't-conf1',
            {'metadata': {'resourceVersion': first['metadata']['resourceVersion']},
             'spec': {'title': 'stale'}})
    assert e.value.status == 409
    with pytest.raises(ApiException) as e:  # a status write is checked the same way
        co.patch_namespaced_custom_object_status(
            GROUP, VERSION, NS, 'bottasks', 't-conf1',
            {'metadata': {'resourceVersion': first['metadata']['resourceVersion']},
             'status': {'phase': 'Assigned', 'worker': 'worker1'}})
    assert e.value.status == 409
    with pytest.raises(ApiException) as e:  # JSON patch whose test op fails: 422, as kopf expects
        co.patch_namespaced_custom_object(
            GROUP, VERSION, NS, 'bottasks', 't-conf1',
            [{'op': 'test', 'path': '/metadata/resourceVersion',
              'value': first['metadata']['resourceVersion']},
             {'op': 'replace', 'path': '/spec/title', 'value': 'stale'}],
            _content_type='application/json-patch+json')
    assert e.value.status == 422
    with pytest.raises(ApiException) as e:  # create of an existing name
        create_task(co, 't-conf1')
    assert e.value.status == 409 and error_body(e.value)['reason'] == 'AlreadyExists'
    assert kube_emulator.get('bottasks', 't-conf1', NS)['spec']['title'] == 'newer'

    fresh = co.get_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-conf1')
    fresh['spec']['title'] = 'fresh'
    ok = co.replace_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-conf1', fresh)
    assert ok['spec']['title'] == 'fresh'
    del fresh['metadata']['resourceVersion']
    with pytest.raises(ApiException) as e:  # custom resources need a resourceVersion on PUT
        co.replace_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-conf1', fresh)
    assert e.value.status == 422


def test_watch_from_resource_version_then_live(co, kube_emulator):
    one = create_task(co, 't-wat01')
    since = one['metadata']['resourceVersion']
    create_task(co, 't-wat02')
    co.patch_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-wat01',
                                      {'spec': {'title': 'changed'}})
    co.delete_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-wat02')
    listing = co.list_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks')
    assert int(listing['metadata']['resourceVersion']) == kube_emulator.resource_version
    assert [i['metadata']['name'] for i in listing['items']] == ['t-wat01']

    seen: list[tuple[str, str]] = []
    w = watch.Watch()

    def later() -> None:
        kube_emulator.wait_for_sync(lambda: len(seen) >= 3)
        create_task(co, 't-wat03')

    threading.Thread(target=later, daemon=True).start()
    for event in w.stream(co.list_namespaced_custom_object, GROUP, VERSION, NS, 'bottasks',
                          resource_version=since, timeout_seconds=10):
        seen.append((event['type'], event['object']['metadata']['name']))
        if len(seen) == 4:
            w.stop()
    assert seen == [('ADDED', 't-wat02'), ('MODIFIED', 't-wat01'), ('DELETED', 't-wat02'),
                    ('ADDED', 't-wat03')]

    # Without a resourceVersion: the current objects first, as ADDED.
    w = watch.Watch()
    names = []
    for event in w.stream(co.list_namespaced_custom_object, GROUP, VERSION, NS, 'bottasks',
                          timeout_seconds=10):
        names.append((event['type'], event['object']['metadata']['name']))
        if len(names) == 2:
            w.stop()
    assert names == [('ADDED', 't-wat01'), ('ADDED', 't-wat03')]

    # Forgotten history: 410 Gone, which the client raises when it must not retry.
    kube_emulator.compact()
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(co.list_namespaced_custom_object, GROUP, VERSION, NS,
                                      'bottasks', resource_version=since, timeout_seconds=5):
            pass
    assert e.value.status == 410


def test_status_subresource(co, kube_emulator):
    create_task(co, 't-stat1')
    with_status = co.patch_namespaced_custom_object(
        GROUP, VERSION, NS, 'bottasks', 't-stat1',
        {'spec': {'title': 'main'}, 'status': {'phase': 'Completed'}})
    assert with_status['spec']['title'] == 'main' and 'status' not in with_status
    updated = co.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, 'bottasks', 't-stat1',
        {'spec': {'title': 'ignored'}, 'status': {
            'phase': 'Running', 'worker': 'worker1', 'attempts': 1, 'bogus': True,
            'startedAt': '2026-01-02T03:04:05Z',
            'usage': {'inputTokens': 10, 'outputTokens': 5, 'costUsd': 0.01}}})
    assert updated['spec']['title'] == 'main'
    assert updated['status']['phase'] == 'Running' and 'bogus' not in updated['status']
    assert updated['metadata']['generation'] == with_status['metadata']['generation']
    warnings = [r for r in kube_emulator.requests(verb='patch', subresource='status')]
    assert warnings[-1].status == 200
    with pytest.raises(ApiException) as e:
        co.patch_namespaced_custom_object_status(GROUP, VERSION, NS, 'bottasks', 't-stat1',
                                                 {'status': {'phase': 'Exploded'}})
    assert e.value.status == 422 and 'status.phase' in error_body(e.value)['message']


def test_generate_name_and_namespaces(co, kube_emulator):
    body = task('')
    body['metadata'] = {'generateName': 't-'}
    made = co.create_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', body)
    assert re.fullmatch(r't-[bcdfghjklmnpqrstvwxz2456789]{5}', made['metadata']['name'])
    core = kubernetes.client.CoreV1Api()
    assert {n.metadata.name for n in core.list_namespace().items} == {'default', NS}
    assert core.read_namespace(NS).status.phase == 'Active'
    with pytest.raises(ApiException) as e:
        co.create_namespaced_custom_object(GROUP, VERSION, 'nowhere', 'bottasks', task('t-x'))
    assert e.value.status == 404
    assert error_body(e.value)['message'] == 'namespaces "nowhere" not found'


def test_label_and_field_selectors_on_list_and_watch(co, kube_emulator):
    create_task(co, 't-lab01', labels={'fleetgram.dev/worker': 'worker1', 'tier': 'a'})
    create_task(co, 't-lab02', labels={'fleetgram.dev/worker': 'worker2'})
    create_task(co, 't-lab03')

    def names(**kw: str) -> list[str]:
        got = co.list_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', **kw)
        return [i['metadata']['name'] for i in got['items']]

    assert names(label_selector='fleetgram.dev/worker=worker1') == ['t-lab01']
    assert names(label_selector='fleetgram.dev/worker!=worker1') == ['t-lab02', 't-lab03']
    assert names(label_selector='fleetgram.dev/worker in (worker1,worker2)') == [
        't-lab01', 't-lab02']
    assert names(label_selector='fleetgram.dev/worker notin (worker1)') == ['t-lab02', 't-lab03']
    assert names(label_selector='fleetgram.dev/worker') == ['t-lab01', 't-lab02']
    assert names(label_selector='!fleetgram.dev/worker') == ['t-lab03']
    assert names(label_selector='fleetgram.dev/worker,tier=a') == ['t-lab01']
    assert names(field_selector='metadata.name=t-lab02') == ['t-lab02']
    assert names(field_selector='metadata.name!=t-lab02') == ['t-lab01', 't-lab03']
    with pytest.raises(ApiException) as e:
        names(field_selector='spec.priority=5')
    assert e.value.status == 400

    # A worker watching only its own tasks sees one moved away as DELETED, one moved in as ADDED.
    since = kube_emulator.resource_version
    co.patch_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-lab01',
                                      {'metadata': {'labels': {'fleetgram.dev/worker': 'worker2'}}})
    co.patch_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-lab03',
                                      {'metadata': {'labels': {'fleetgram.dev/worker': 'worker1'}}})
    w = watch.Watch()
    seen = []
    for event in w.stream(co.list_namespaced_custom_object, GROUP, VERSION, NS, 'bottasks',
                          label_selector='fleetgram.dev/worker=worker1',
                          resource_version=str(since), timeout_seconds=10):
        seen.append((event['type'], event['object']['metadata']['name']))
        if len(seen) == 2:
            w.stop()
    assert seen == [('DELETED', 't-lab01'), ('ADDED', 't-lab03')]


def test_owner_references_cascade_and_orphan(kube_emulator):
    co = kubernetes.client.CustomObjectsApi()
    apps, core = kubernetes.client.AppsV1Api(), kubernetes.client.CoreV1Api()
    pool = co.create_namespaced_custom_object(GROUP, VERSION, NS, 'workerpools', {
        'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'WorkerPool', 'metadata': {'name': 'pool'},
        'spec': {'tokenSecrets': [{'name': 'tok1'}], 'template': {'image': 'w:1'}}})
    owner = [{'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'WorkerPool', 'name': 'pool',
              'uid': pool['metadata']['uid'], 'controller': True, 'blockOwnerDeletion': True}]
    for i in (1, 2):
        apps.create_namespaced_deployment(NS, {
            'apiVersion': 'apps/v1', 'kind': 'Deployment',
            'metadata': {'name': f'fleetgram-worker{i}', 'ownerReferences': owner},
            'spec': {'replicas': 1, 'selector': {'matchLabels': {'slot': f'worker{i}'}},
                     'template': {'metadata': {'labels': {'slot': f'worker{i}'}},
                                  'spec': {'containers': [{'name': 'w', 'image': 'w:1'}]}}}})
    core.create_namespaced_secret(NS, {'metadata': {'name': 'keep'}, 'stringData': {'a': 'b'}})
    assert kube_emulator.get('secrets', 'keep', NS)['data'] == {'a': 'Yg=='}
    co.delete_namespaced_custom_object(GROUP, VERSION, NS, 'workerpools', 'pool')
    assert kube_emulator.objects('deployments', NS) == []
    assert [s['metadata']['name'] for s in kube_emulator.objects('secrets', NS)] == ['keep']

    pool = kube_emulator.create({**pool, 'metadata': {'name': 'pool2', 'namespace': NS}})
    owner[0].update(name='pool2', uid=pool['metadata']['uid'])
    kube_emulator.create({'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {
        'name': 'cm', 'namespace': NS, 'ownerReferences': owner}})
    co.delete_namespaced_custom_object(GROUP, VERSION, NS, 'workerpools', 'pool2',
                                       propagation_policy='Orphan')
    orphan = kube_emulator.get('configmaps', 'cm', NS)
    assert orphan is not None and 'ownerReferences' not in orphan['metadata']


def test_finalizers_block_deletion(co, kube_emulator):
    body = task('t-fin01')
    body['metadata']['finalizers'] = ['fleetgram.dev/requeue']
    co.create_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', body)
    co.delete_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-fin01')
    marked = kube_emulator.get('bottasks', 't-fin01', NS)
    assert marked['metadata']['deletionTimestamp']
    assert kube_emulator.requests(verb='delete')[-1].status == 202
    with pytest.raises(ApiException) as e:
        co.patch_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-fin01',
                                          {'metadata': {'finalizers': ['a', 'b']}})
    assert e.value.status == 422
    co.patch_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-fin01',
                                      {'metadata': {'finalizers': None}})
    assert kube_emulator.get('bottasks', 't-fin01', NS) is None
    # As for real: removing the last finalizer deletes at once, without a MODIFIED event.
    assert [c.type for c in kube_emulator.changes('bottasks', 't-fin01')] == [
        'ADDED', 'MODIFIED', 'DELETED']
    assert kube_emulator.changes('bottasks', 't-fin01')[-1].object['metadata'].get(
        'finalizers') is None


def test_schema_refusals_name_the_field(co, kube_emulator):
    with pytest.raises(ApiException) as e:
        create_task(co, 't-bad01', priority=11)
    assert e.value.status == 422
    body = error_body(e.value)
    assert body['reason'] == 'Invalid' and body['details']['kind'] == 'BotTask'
    assert body['details']['causes'][0]['field'] == 'spec.priority'
    assert 'spec.priority in body should be less than or equal to 10' in body['message']
    with pytest.raises(ApiException) as e:
        create_task(co, 't-bad02', pinnedWorker='worker0')
    assert 'spec.pinnedWorker' in error_body(e.value)['message']
    wp = {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'WorkerPool', 'metadata': {'name': 'wp'},
          'spec': {'minWorkers': 4, 'maxWorkers': 2, 'tokenSecrets': [{'name': 't'}],
                   'template': {'image': 'w:1'}}}
    with pytest.raises(ApiException) as e:
        co.create_namespaced_custom_object(GROUP, VERSION, NS, 'workerpools', wp)
    assert error_body(e.value)['message'].endswith(
        'spec: Invalid value: "object": minWorkers must not exceed maxWorkers')
    wp['spec'].update(minWorkers=1)
    made = co.create_namespaced_custom_object(GROUP, VERSION, NS, 'workerpools', wp)
    assert made['spec']['tokenSecrets'] == [{'name': 't', 'key': 'token'}]
    assert made['spec']['leaseSeconds'] == 30
    with pytest.raises(ApiException) as e:  # the CEL rule holds on updates too
        co.patch_namespaced_custom_object(GROUP, VERSION, NS, 'workerpools', 'wp',
                                          {'spec': {'minWorkers': 3}})
    assert e.value.status == 422


def test_unknown_fields_pruned_with_warning_or_refused_when_strict(co, kube_emulator):
    data, status, headers = co.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, NS, 'bottasks', task('t-unk01', colour='blue'))
    assert status == 201
    assert headers['Warning'] == '299 - "unknown field \\"spec.colour\\""'
    assert 'colour' not in data['spec']
    with pytest.raises(ApiException) as e:
        co.create_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks',
                                           task('t-unk02', colour='blue'),
                                           field_validation='Strict')
    assert e.value.status == 400
    assert 'unknown field "spec.colour"' in error_body(e.value)['message']
    assert kube_emulator.get('bottasks', 't-unk02', NS) is None
    record = kube_emulator.requests(verb='create')[0]
    assert record.status == 201 and record.body['spec']['colour'] == 'blue'


def test_discovery_for_the_client(kube_emulator):
    groups = kubernetes.client.ApisApi().get_api_versions()
    names = {g.name for g in groups.groups}
    assert {GROUP, 'apps', 'coordination.k8s.io', 'apiextensions.k8s.io'} <= names
    res = kubernetes.client.CustomObjectsApi().get_api_resources(GROUP, VERSION)
    by_name = {r.name: r for r in res.resources}
    assert by_name['bottasks'].short_names == ['bt'] and by_name['bottasks'].namespaced
    assert by_name['workerpools'].short_names == ['wp']
    assert 'bottasks/status' in by_name
    leases = kubernetes.client.CoordinationV1Api()
    lease = leases.create_namespaced_lease(NS, {
        'metadata': {'name': 'worker1'},
        'spec': {'holderIdentity': 'worker1', 'leaseDurationSeconds': 30,
                 'renewTime': '2026-01-01T00:00:00.000000Z'}})
    assert lease.spec.holder_identity == 'worker1'


def test_fault_injection_and_kmock_reactions(co, kube_emulator):
    create_task(co, 't-flt01')
    kube_emulator.inject_fault(verb='patch', plural='bottasks', subresource='status', code=500)
    with pytest.raises(ApiException) as e:
        co.patch_namespaced_custom_object_status(GROUP, VERSION, NS, 'bottasks', 't-flt01',
                                                 {'status': {'phase': 'Assigned'}})
    assert e.value.status == 500
    co.patch_namespaced_custom_object_status(GROUP, VERSION, NS, 'bottasks', 't-flt01',
                                             {'status': {'phase': 'Assigned'}})
    # kmock's DSL answers ahead of the emulator (here: once), and records kmock.Request objects.
    kube_emulator.kmock['get', kmock.resource(GROUP, VERSION, 'bottasks')][:1] << 503
    with pytest.raises(ApiException) as e:
        co.get_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-flt01')
    assert e.value.status == 503
    got = co.get_namespaced_custom_object(GROUP, VERSION, NS, 'bottasks', 't-flt01')
    assert got['status'] == {'phase': 'Assigned'}
    gets = list(kube_emulator.kmock[kmock.resource(GROUP, VERSION, 'bottasks')])
    assert gets[-1].name == 't-flt01' and gets[-1].namespace == NS
    assert [r.status for r in kube_emulator.requests(verb='get', plural='bottasks')] == [503, 200]


async def test_async_start_stop_and_history(tmp_path):
    async with KubeEmulator(crds=FLEETGRAM_CRDS) as emu:
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=emu.kubeconfig(tmp_path / 'kc'),
                                           client_configuration=config)
        api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
        # The sync client blocks its caller: off the loop, the emulator has its own thread.
        await asyncio.to_thread(api.create_namespaced_config_map, 'default',
                                {'metadata': {'name': 'cm1'}, 'data': {'k': 'v'}})
        items = await asyncio.to_thread(api.list_namespaced_config_map, 'default')
        assert [i.metadata.name for i in items.items] == ['cm1']
        last = emu.history[-1]
        assert (last.method, last.path, last.status) == (
            'GET', '/api/v1/namespaces/default/configmaps', 200)
        assert emu.history[-2].verb == 'create' and emu.history[-2].status == 201


def test_kopf_operator_reacts_and_patches_status(kube_emulator, caplog):
    caplog.set_level(logging.INFO)
    registry = kopf.OperatorRegistry()
    deleted: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**kwargs):  # the default login, via the kubeconfig the fixture points at
        return kopf.login_via_client(**kwargs)

    @kopf.on.create(GROUP, VERSION, 'bottasks', registry=registry)
    def assign(body, spec, patch, **_):
        patch.status['phase'] = 'Assigned'
        patch.status['worker'] = 'worker1'
        patch.status['attempts'] = 1
        kopf.info(body, reason='Assigned', message=f'worker1 (priority {spec["priority"]})')

    @kopf.on.delete(GROUP, VERSION, 'bottasks', registry=registry)
    def forget(name, **_):
        deleted.append(name)

    settings = kopf.OperatorSettings()
    args = ['run', '--standalone', f'--namespace={NS}', '--verbose']
    with kopf.testing.KopfRunner(args, registry=registry, settings=settings, timeout=30) as run:
        kube_emulator.create(task('t-kopf1'), namespace=NS)
        obj = kube_emulator.wait_for_sync(
            lambda: (kube_emulator.get('bottasks', 't-kopf1', NS) or {}).get('status'), 20)
        assert obj == {'phase': 'Assigned', 'worker': 'worker1', 'attempts': 1}
        task_now = kube_emulator.get('bottasks', 't-kopf1', NS)
        assert task_now['metadata']['finalizers'] == ['kopf.zalando.org/KopfFinalizerMarker']
        event = kube_emulator.wait_for_sync(lambda: [
            e for e in kube_emulator.objects('events', NS)
            if e['involvedObject']['name'] == 't-kopf1'], 10)[0]
        assert (event['reason'], event['message']) == ('Assigned', 'worker1 (priority 5)')
        assert event['involvedObject']['uid'] == task_now['metadata']['uid']
        kube_emulator.delete('bottasks', 't-kopf1', NS)
        kube_emulator.wait_for_sync(lambda: kube_emulator.get('bottasks', 't-kopf1', NS) is None,
                                    20)
    assert run.exception is None and run.exit_code == 0
    assert deleted == ['t-kopf1']
    verbs = {(r.verb, r.plural, r.subresource) for r in kube_emulator.history}
    assert ('list', 'namespaces', None) in verbs or ('watch', 'bottasks', None) in verbs
    assert ('patch', 'bottasks', 'status') in verbs and ('create', 'events', None) in verbs
    # kopf removed its finalizer with a JSON patch guarded by a resourceVersion test op.
    json_patches = [r for r in kube_emulator.requests(verb='patch', plural='bottasks')
                    if r.content_type == 'application/json-patch+json']
    assert json_patches and json_patches[-1].body[0]['op'] == 'test'


@pytest.mark.skipif(shutil.which('kubectl') is None, reason='kubectl is not installed')
def test_kubectl_get_bottasks_reads_like_a_queue(kube_emulator, tmp_path):
    kube_emulator.create(task('t-7k2qf', title='Summarise notes', priority=2), namespace=NS)
    kube_emulator.patch('bottasks', 't-7k2qf', {'status': {
        'phase': 'Running', 'worker': 'worker2', 'attempts': 1}}, NS, subresource='status')
    kube_emulator.create({'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'WorkerPool',
                          'metadata': {'name': 'fleetgram', 'namespace': NS},
                          'spec': {'maxWorkers': 3, 'tokenSecrets': [{'name': 'tok1'}],
                                   'template': {'image': 'w:1'}}})
    env = dict(os.environ, KUBECONFIG=os.environ['KUBECONFIG'],
               KUBECACHEDIR=str(tmp_path / 'cache'), HOME=str(tmp_path))

    def kubectl(*args: str) -> str:
        out = subprocess.run(['kubectl', *args], env=env, capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    queue = kubectl('get', 'bottasks').splitlines()
    assert queue[0].split() == ['NAME', 'PRIORITY', 'PHASE', 'WORKER', 'TITLE', 'AGE']
    assert queue[1].split()[:6] == ['t-7k2qf', '2', 'Running', 'worker2', 'Summarise', 'notes']
    wide = kubectl('get', 'bt', '-o', 'wide').splitlines()
    assert wide[0].split() == ['NAME', 'PRIORITY', 'PHASE', 'WORKER', 'TITLE', 'ATTEMPTS', 'AGE']
    pools = kubectl('get', 'wp').splitlines()
    assert pools[0].split() == ['NAME', 'MIN', 'MAX', 'READY', 'IDLE', 'BUSY', 'PENDING', 'AGE']
    assert pools[1].split()[:3] == ['fleetgram', '1', '3']
    assert json.loads(kubectl('get', 'bottask', 't-7k2qf', '-o', 'json'))['spec']['priority'] == 2


def test_crds_reach_the_emulator_as_objects(kube_emulator):
    crds = {c['metadata']['name']: c for c in kube_emulator.objects('customresourcedefinitions')}
    assert set(crds) == {'bottasks.fleetgram.dev', 'workerpools.fleetgram.dev'}
    conditions = {c['type']: c['status'] for c in crds['bottasks.fleetgram.dev']['status'][
        'conditions']}
    assert conditions['Established'] == 'True'
    assert Path(FLEETGRAM_CRDS[0]).name == 'bottask.yaml'


def _stream(emu: KubeEmulator, path: str, count: int) -> list[dict]:
    """Read ``count`` watch events with plain urllib (the raw wire format)."""
    import urllib.request
    events = []
    with urllib.request.urlopen(emu.url + path, timeout=10) as response:
        assert response.headers['Content-Type'].startswith('application/json')
        for line in response:
            events.append(json.loads(line))
            if len(events) == count:
                break
    return events


def test_initial_events_bookmarks_and_closed_watches(kube_emulator):
    kube_emulator.create(task('t-bkm01'), namespace=NS)
    base = f'/apis/{GROUP}/{VERSION}/namespaces/{NS}/bottasks?watch=1'
    first = _stream(kube_emulator, base + '&sendInitialEvents=true&allowWatchBookmarks=true'
                    '&resourceVersionMatch=NotOlderThan', 2)
    assert [e['type'] for e in first] == ['ADDED', 'BOOKMARK']
    assert first[1]['object']['metadata']['annotations'] == {'k8s.io/initial-events-end': 'true'}
    assert first[1]['object']['metadata']['resourceVersion'] == str(
        kube_emulator.resource_version)

    kube_emulator._bookmark_interval = 0.2  # periodic bookmarks while nothing happens
    rv = kube_emulator.resource_version
    ticks = _stream(kube_emulator, base + f'&resourceVersion={rv}&allowWatchBookmarks=true', 2)
    assert [e['type'] for e in ticks] == ['BOOKMARK', 'BOOKMARK']

    threading.Timer(0.3, kube_emulator.close_watches).start()
    import urllib.request
    with urllib.request.urlopen(kube_emulator.url + base + f'&resourceVersion={rv}',
                                timeout=10) as response:
        assert response.read() == b''  # ended by the server, no events: reconnect from rv


def test_strategic_merge_for_builtins_only(kube_emulator):
    apps = kubernetes.client.AppsV1Api()
    apps.create_namespaced_deployment(NS, {
        'metadata': {'name': 'fleetgram-worker1'},
        'spec': {'selector': {'matchLabels': {'slot': 'worker1'}},
                 'template': {'metadata': {'labels': {'slot': 'worker1'}}, 'spec': {
                     'containers': [{'name': 'worker', 'image': 'w:1',
                                     'env': [{'name': 'A', 'value': '1'}]},
                                    {'name': 'sidecar', 'image': 's:1'}]}}}})
    patched = apps.patch_namespaced_deployment('fleetgram-worker1', NS, {'spec': {'template': {
        'spec': {'containers': [{'name': 'worker', 'image': 'w:2',
                                 'env': [{'name': 'B', 'value': '2'}]}]}}}})
    containers = patched.spec.template.spec.containers
    assert [(c.name, c.image) for c in containers] == [('worker', 'w:2'), ('sidecar', 's:1')]
    assert [e.name for e in containers[0].env] == ['A', 'B']
    assert patched.spec.replicas == 1 and patched.metadata.generation == 2
    with pytest.raises(ApiException) as e:
        apps.create_namespaced_deployment(NS, {
            'metadata': {'name': 'bad'},
            'spec': {'selector': {'matchLabels': {'slot': 'worker1'}},
                     'template': {'metadata': {'labels': {'slot': 'worker2'}},
                                  'spec': {'containers': [{'name': 'w', 'image': 'w:1'}]}}}})
    assert e.value.status == 422 and 'selector' in error_body(e.value)['message']
    create_task(kubernetes.client.CustomObjectsApi(), 't-smp01')
    api = kubernetes.client.ApiClient()
    with pytest.raises(ApiException) as e:  # custom resources take no strategic merge patch
        kubernetes.client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP, VERSION, NS, 'bottasks', 't-smp01', {'spec': {'title': 'x'}},
            _content_type='application/strategic-merge-patch+json')
    assert e.value.status == 415


def test_deployment_controller_and_namespace_deletion(tmp_path):
    with KubeEmulator(namespaces=['default', 'team'], deployment_controller=True) as emu:
        dep = emu.create({'apiVersion': 'apps/v1', 'kind': 'Deployment',
                          'metadata': {'name': 'w', 'namespace': 'team'},
                          'spec': {'selector': {'matchLabels': {'a': 'b'}}, 'template': {
                              'metadata': {'labels': {'a': 'b'}},
                              'spec': {'containers': [{'name': 'c', 'image': 'i'}]}}}})
        assert 'status' not in dep
        ready = emu.get('deployments', 'w', 'team')['status']
        assert ready['readyReplicas'] == 1 and ready['observedGeneration'] == 1
        emu.patch('deployments', 'w', {'spec': {'replicas': 0}}, 'team')
        assert 'readyReplicas' not in emu.get('deployments', 'w', 'team')['status']
        emu.create({'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {
            'name': 's', 'namespace': 'team', 'finalizers': ['x/y']}})
        emu.delete('namespaces', 'team')
        assert emu.get('namespaces', 'team')['status']['phase'] == 'Terminating'
        assert emu.objects('deployments', 'team') == []
        with pytest.raises(kube_api.ApiError) as e:
            emu.create({'apiVersion': 'v1', 'kind': 'ConfigMap',
                        'metadata': {'name': 'late', 'namespace': 'team'}})
        assert e.value.code == 403
        emu.patch('secrets', 's', {'metadata': {'finalizers': None}}, 'team')
        assert emu.get('namespaces', 'team') is None


def test_crds_over_the_api_and_paginated_lists(kube_emulator):
    import yaml
    ext = kubernetes.client.ApiextensionsV1Api()
    crd = yaml.safe_load(Path(FLEETGRAM_CRDS[0]).read_text())
    crd['metadata']['name'] = 'notes.example.dev'
    crd['spec'].update(group='example.dev', names={
        'kind': 'Note', 'plural': 'notes', 'singular': 'note', 'listKind': 'NoteList'})
    ext.create_custom_resource_definition(crd)
    co = kubernetes.client.CustomObjectsApi()
    for i in range(5):
        body = task(f'n-{i}')
        body['apiVersion'], body['kind'] = 'example.dev/v1alpha1', 'Note'
        co.create_namespaced_custom_object('example.dev', VERSION, NS, 'notes', body)
    page = co.list_namespaced_custom_object('example.dev', VERSION, NS, 'notes', limit=2)
    names = [i['metadata']['name'] for i in page['items']]
    while page['metadata'].get('continue'):
        page = co.list_namespaced_custom_object('example.dev', VERSION, NS, 'notes', limit=2,
                                                _continue=page['metadata']['continue'])
        names += [i['metadata']['name'] for i in page['items']]
    assert names == [f'n-{i}' for i in range(5)]
    bad = yaml.safe_load(Path(FLEETGRAM_CRDS[0]).read_text())
    bad['metadata']['name'] = 'wrong.example.dev'
    with pytest.raises(ApiException) as e:  # name must be plural.group
        ext.create_custom_resource_definition(bad)
    assert e.value.status == 422
    ext.delete_custom_resource_definition('notes.example.dev')
    with pytest.raises(ApiException) as e:
        co.list_namespaced_custom_object('example.dev', VERSION, NS, 'notes')
    assert e.value.status == 404
    assert kube_emulator.load_crds(FLEETGRAM_CRDS) == ['bottasks.fleetgram.dev',
                                                      'workerpools.fleetgram.dev']
