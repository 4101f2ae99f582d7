"""The emulated API server serves PersistentVolumeClaims (agent workers' workspaces): created,
read and listed through the real client, refused without what the API server requires, and
deleted with their owner."""
from __future__ import annotations

import json

import kubernetes.client
import pytest
from kubernetes.client import ApiException

from tests.emulators import kube_api

pytestmark = pytest.mark.k8s
kube_emulator = kube_api.kube_emulator  # the fixture

GROUP, VERSION, NS = 'fleetgram.dev', 'v1alpha1', 'fleetgram'


def claim(name: str, **spec: object) -> dict:
    body = {'accessModes': ['ReadWriteOnce'], 'resources': {'requests': {'storage': '1Gi'}},
            **spec}
    return {'apiVersion': 'v1', 'kind': 'PersistentVolumeClaim', 'metadata': {'name': name},
            'spec': body}


def test_claims_are_created_read_and_listed_through_the_client(kube_emulator):
    core = kubernetes.client.CoreV1Api()
    made = core.create_namespaced_persistent_volume_claim(NS, claim('ws-1'))
    assert made.metadata.uid and made.spec.volume_mode == 'Filesystem'
    assert core.read_namespaced_persistent_volume_claim('ws-1', NS).spec.resources.requests == {
        'storage': '1Gi'}
    listed = core.list_namespaced_persistent_volume_claim(NS).items
    assert [c.metadata.name for c in listed] == ['ws-1']
    with pytest.raises(ApiException) as e:
        core.create_namespaced_persistent_volume_claim(NS, claim('ws-1'))
    assert e.value.status == 409


@pytest.mark.parametrize(('spec', 'field'), [
    ({'accessModes': []}, 'spec.accessModes'),
    ({'resources': {}}, 'spec.resources[storage]'),
])
def test_a_claim_without_access_modes_or_storage_is_refused(kube_emulator, spec, field):
    core = kubernetes.client.CoreV1Api()
    with pytest.raises(ApiException) as e:
        core.create_namespaced_persistent_volume_claim(NS, claim('ws-bad', **spec))
    assert e.value.status == 422
    assert [c['field'] for c in json.loads(e.value.body)['details']['causes']] == [field]


def test_claims_owned_by_a_pool_go_with_it(kube_emulator):
    pool = kube_emulator.create({
        'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'WorkerPool',
        'metadata': {'name': 'pool', 'namespace': NS},
        'spec': {'tokenSecrets': [{'name': 'tok1'}], 'template': {'image': 'w:1'}}})
    owned = claim('pool-worker1-workspace')
    owned['metadata']['ownerReferences'] = [{
        'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'WorkerPool', 'name': 'pool',
        'uid': pool['metadata']['uid'], 'controller': True, 'blockOwnerDeletion': True}]
    kube_emulator.create(owned, namespace=NS)
    kube_emulator.create(claim('unrelated'), namespace=NS)
    kube_emulator.delete('workerpools', 'pool', NS)
    assert [c['metadata']['name'] for c in kube_emulator.objects('pvc', NS)] == ['unrelated']
