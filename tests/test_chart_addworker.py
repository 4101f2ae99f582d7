"""The chart's /addworker section (addWorker.spareSlots, addWorker.encryptionKey): the spare
slots get everything a values slot gets (account, RBAC, admission-policy entry) except their
Secret, which the operator writes; the key reaches the master and the operator only."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from tests.test_chart import by_kind, helm, objects, render
from tests.test_chart_conventions import FULL, the_container, validate, values_with

KEY = Fernet.generate_key().decode()
TWO_SPARE = f'addWorker: {{spareSlots: 2, encryptionKey: {{value: "{KEY}"}}}}'


def env_names(deployment: dict) -> set[str]:
    return {e['name'] for e in the_container(deployment).get('env', [])}


def test_spare_slots_are_numbered_after_the_token_slots_with_their_secret_and_account():
    (pool,) = by_kind(objects(render(values_with(TWO_SPARE))), 'WorkerPool').values()
    assert len(pool['spec']['tokenSecrets']) == 3
    assert pool['spec']['spareSlots'] == [
        {'slot': 'worker4', 'secretName': f'{FULL}-worker4-token', 'key': 'token',
         'serviceAccountName': f'{FULL}-worker-4'},
        {'slot': 'worker5', 'secretName': f'{FULL}-worker5-token', 'key': 'token',
         'serviceAccountName': f'{FULL}-worker-5'},
    ]


def test_a_spare_slot_has_its_account_bound_its_lease_and_its_admission_policy_entry():
    objs = objects(render(values_with(TWO_SPARE)))
    assert {f'{FULL}-worker-4', f'{FULL}-worker-5'} <= set(by_kind(objs, 'ServiceAccount'))
    subjects = {s['name'] for s in by_kind(objs, 'RoleBinding')[f'{FULL}-worker']['subjects']}
    assert {f'{FULL}-worker-4', f'{FULL}-worker-5'} <= subjects
    worker_role = by_kind(objs, 'Role')[f'{FULL}-worker']
    leases = [r for r in worker_role['rules'] if r.get('resourceNames')]
    assert f'{FULL}-worker5' in leases[0]['resourceNames']
    (policy,) = by_kind(objs, 'ValidatingAdmissionPolicy').values()
    (slot_map,) = policy['spec']['variables']
    assert f":{FULL}-worker-5': 'worker5'" in slot_map['expression']


def test_the_operator_may_create_secrets_and_read_the_spare_ones_but_the_master_may_not():
    roles = by_kind(objects(render(values_with(TWO_SPARE))), 'Role')
    operator = roles[f'{FULL}-operator']['rules']
    assert {'resources': ['secrets'], 'verbs': ['create'], 'apiGroups': ['']} in operator
    (get,) = [r for r in operator if r['resources'] == ['secrets'] and r['verbs'] == ['get']]
    assert f'{FULL}-worker5-token' in get['resourceNames']
    assert not any('secrets' in r['resources'] for r in roles[f'{FULL}-master']['rules'])


def test_without_spare_slots_the_operator_gets_no_secret_create_and_the_pool_none():
    objs = objects(render(values_with('{}')))
    operator = by_kind(objs, 'Role')[f'{FULL}-operator']['rules']
    assert not any(r['resources'] == ['secrets'] and 'create' in r['verbs'] for r in operator)
    (pool,) = by_kind(objs, 'WorkerPool').values()
    assert 'spareSlots' not in pool['spec']


def test_the_key_goes_to_the_master_and_the_operator_from_a_secret_and_never_to_workers():
    objs = objects(render(values_with(TWO_SPARE)))
    deps = by_kind(objs, 'Deployment')
    for component in ('master', 'operator'):
        (entry,) = [e for e in the_container(deps[f'{FULL}-{component}'])['env']
                    if e['name'] == 'TOKEN_ENCRYPTION_KEY']
        assert entry['valueFrom']['secretKeyRef'] == {'name': f'{FULL}-addworker-key',
                                                      'key': 'key'}
    assert by_kind(objs, 'Secret')[f'{FULL}-addworker-key']['stringData']['key'] == KEY
    (pool,) = by_kind(objs, 'WorkerPool').values()
    assert 'TOKEN_ENCRYPTION_KEY' not in {e['name'] for e in pool['spec']['template'].get(
        'env') or []}


def test_an_existing_secret_may_hold_the_key():
    values = values_with('addWorker: {spareSlots: 1, encryptionKey: '
                         '{existingSecret: my-key, existingSecretKey: fernet}}')
    objs = objects(render(values))
    master = by_kind(objs, 'Deployment')[f'{FULL}-master']
    (entry,) = [e for e in the_container(master)['env'] if e['name'] == 'TOKEN_ENCRYPTION_KEY']
    assert entry['valueFrom']['secretKeyRef'] == {'name': 'my-key', 'key': 'fernet'}
    assert f'{FULL}-addworker-key' not in by_kind(objs, 'Secret')


def test_spare_slots_without_a_key_are_refused_with_a_message_naming_it():
    with pytest.raises(helm.HelmError) as e:
        render(values_with('addWorker: {spareSlots: 2}'))
    assert 'addWorker.encryptionKey' in str(e.value)


def test_more_than_fifty_slots_in_all_are_refused():
    with pytest.raises(helm.HelmError) as e:
        render(values_with(f'addWorker: {{spareSlots: 48, encryptionKey: {{value: "{KEY}"}}}}'))
    assert '50 worker slots' in str(e.value)


def test_the_rendered_objects_are_valid_kubernetes_objects():
    validate(objects(render(values_with(TWO_SPARE))))
