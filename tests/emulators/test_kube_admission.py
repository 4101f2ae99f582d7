"""ValidatingAdmissionPolicy in the emulated API server (``KubeEmulator(rbac=True)``), as a
real one (1.30+) applies it: bound policies only, matchConstraints and matchConditions, CEL
validations evaluated by a real CEL interpreter, the denial's code and Status text."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.emulators.kube_api import FLEETGRAM_CRDS, KubeEmulator

NS = 'fleetgram'
ADMISSION = 'admissionregistration.k8s.io/v1'


@pytest.fixture()
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator(crds=FLEETGRAM_CRDS, namespaces=('default', NS), rbac=True) as emulator:
        for name in ('worker1', 'worker2'):
            emulator.create({'apiVersion': 'v1', 'kind': 'ServiceAccount',
                             'metadata': {'name': name, 'namespace': NS}})
            emulator.create({'apiVersion': 'rbac.authorization.k8s.io/v1', 'kind': 'Role',
                             'metadata': {'name': name, 'namespace': NS},
                             'rules': [{'apiGroups': ['fleetgram.dev'],
                                        'resources': ['bottasks', 'bottasks/status'],
                                        'verbs': ['get', 'create', 'patch']}]})
            emulator.create({'apiVersion': 'rbac.authorization.k8s.io/v1',
                             'kind': 'RoleBinding', 'metadata': {'name': name, 'namespace': NS},
                             'roleRef': {'apiGroup': 'rbac.authorization.k8s.io',
                                         'kind': 'Role', 'name': name},
                             'subjects': [{'kind': 'ServiceAccount', 'name': name,
                                           'namespace': NS}]})
        yield emulator


def api(emu: KubeEmulator, tmp_path: Path, account: str) -> Any:
    token = emu.service_account_token(NS, account)
    path = emu.kubeconfig(tmp_path / f'kubeconfig-{account}', NS, token=token)
    return kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(
        config_file=path))


def task(name: str, owner: str) -> dict:
    return {'apiVersion': 'fleetgram.dev/v1alpha1', 'kind': 'BotTask',
            'metadata': {'name': name, 'namespace': NS},
            'spec': {'prompt': 'p', 'userId': 1, 'chatId': 1, 'pinnedWorker': owner}}


def policy(validations: list[dict], *, conditions: list[dict] | None = None,
           resources: tuple[str, ...] = ('bottasks',), failure: str = 'Fail',
           bind: bool = True, emu: KubeEmulator) -> None:
    spec: dict[str, Any] = {
        'failurePolicy': failure,
        'matchConstraints': {'resourceRules': [{
            'apiGroups': ['fleetgram.dev'], 'apiVersions': ['*'],
            'operations': ['CREATE', 'UPDATE'], 'resources': list(resources)}]},
        'validations': validations,
    }
    if conditions:
        spec['matchConditions'] = conditions
    emu.create({'apiVersion': ADMISSION, 'kind': 'ValidatingAdmissionPolicy',
                'metadata': {'name': 'owners'}, 'spec': spec})
    if bind:
        emu.create({'apiVersion': ADMISSION, 'kind': 'ValidatingAdmissionPolicyBinding',
                    'metadata': {'name': 'owners-binding'},
                    'spec': {'policyName': 'owners', 'validationActions': ['Deny']}})


OWN_TASKS = {'expression': "request.userInfo.username == "
                           "'system:serviceaccount:fleetgram:' + object.spec.pinnedWorker",
             'message': 'only your own tasks', 'reason': 'Forbidden'}


def create(client: Any, body: dict) -> dict:
    return client.create_namespaced_custom_object('fleetgram.dev', 'v1alpha1', NS, 'bottasks',
                                                  body)


def test_a_bound_policy_denies_a_failed_validation_with_403_and_the_api_servers_text(
        emu: KubeEmulator, tmp_path: Path) -> None:
    policy([OWN_TASKS], emu=emu)
    created = create(api(emu, tmp_path, 'worker1'), task('t1', 'worker1'))
    assert created['metadata']['name'] == 't1'
    with pytest.raises(kubernetes.client.ApiException) as denied:
        create(api(emu, tmp_path, 'worker1'), task('t2', 'worker2'))
    assert denied.value.status == 403
    assert json.loads(denied.value.body)['message'] == (
        'bottasks.fleetgram.dev "t2" is forbidden: ValidatingAdmissionPolicy \'owners\' '
        "with binding 'owners-binding' denied request: only your own tasks")
    assert emu.get('bottasks', 't2', NS) is None


def test_a_policy_without_a_binding_does_nothing(emu: KubeEmulator, tmp_path: Path) -> None:
    policy([OWN_TASKS], bind=False, emu=emu)
    create(api(emu, tmp_path, 'worker1'), task('t1', 'worker2'))
    assert emu.get('bottasks', 't1', NS) is not None


def test_an_update_is_judged_on_the_old_object_too(emu: KubeEmulator, tmp_path: Path) -> None:
    policy([{'expression': "request.operation != 'UPDATE' || request.userInfo.username == "
                           "'system:serviceaccount:fleetgram:' + oldObject.spec.pinnedWorker",
             'message': 'not yours', 'reason': 'Forbidden'}],
           resources=('bottasks', 'bottasks/status'), emu=emu)
    emu.create(task('t1', 'worker2'), namespace=NS)
    patch = {'status': {'phase': 'Running'}}
    with pytest.raises(kubernetes.client.ApiException) as denied:
        api(emu, tmp_path, 'worker1').patch_namespaced_custom_object_status(
            'fleetgram.dev', 'v1alpha1', NS, 'bottasks', 't1', patch)
    assert denied.value.status == 403 and 'not yours' in denied.value.body
    api(emu, tmp_path, 'worker2').patch_namespaced_custom_object_status(
        'fleetgram.dev', 'v1alpha1', NS, 'bottasks', 't1', patch)
    assert emu.get('bottasks', 't1', NS)['status']['phase'] == 'Running'


def test_the_status_subresource_is_matched_only_when_listed(
        emu: KubeEmulator, tmp_path: Path) -> None:
    policy([{'expression': 'false', 'message': 'never', 'reason': 'Forbidden'}],
           conditions=[{'name': 'updates', 'expression': "request.operation == 'UPDATE'"}],
           emu=emu)
    emu.create(task('t1', 'worker1'), namespace=NS)
    api(emu, tmp_path, 'worker1').patch_namespaced_custom_object_status(
        'fleetgram.dev', 'v1alpha1', NS, 'bottasks', 't1', {'status': {'phase': 'Running'}})
    with pytest.raises(kubernetes.client.ApiException) as denied:
        api(emu, tmp_path, 'worker1').patch_namespaced_custom_object(
            'fleetgram.dev', 'v1alpha1', NS, 'bottasks', 't1', {'spec': {'priority': 1}})
    assert denied.value.status == 403


def test_a_false_match_condition_skips_the_policy(emu: KubeEmulator, tmp_path: Path) -> None:
    policy([OWN_TASKS], conditions=[{'name': 'worker2-only', 'expression':
                                     "request.userInfo.username.endsWith(':worker2')"}], emu=emu)
    create(api(emu, tmp_path, 'worker1'), task('t1', 'worker2'))  # worker1 is not judged
    with pytest.raises(kubernetes.client.ApiException):
        create(api(emu, tmp_path, 'worker2'), task('t2', 'worker1'))


def test_without_reason_or_message_the_denial_is_422_failed_expression(
        emu: KubeEmulator, tmp_path: Path) -> None:
    policy([{'expression': "object.spec.prompt != 'p'"}], emu=emu)
    with pytest.raises(kubernetes.client.ApiException) as denied:
        create(api(emu, tmp_path, 'worker1'), task('t1', 'worker1'))
    assert denied.value.status == 422
    assert "denied request: failed expression: object.spec.prompt != 'p'" in denied.value.body


def test_an_expression_error_denies_under_fail_and_admits_under_ignore(
        emu: KubeEmulator, tmp_path: Path) -> None:
    policy([{'expression': 'object.spec.noSuchField == 1', 'reason': 'Forbidden'}], emu=emu)
    with pytest.raises(kubernetes.client.ApiException) as denied:
        create(api(emu, tmp_path, 'worker1'), task('t1', 'worker1'))
    assert denied.value.status == 403 and 'resulted in error' in denied.value.body
    emu.delete('validatingadmissionpolicybindings', 'owners-binding')
    emu.delete('validatingadmissionpolicies', 'owners')
    policy([{'expression': 'object.spec.noSuchField == 1', 'reason': 'Forbidden'}],
           failure='Ignore', emu=emu)
    create(api(emu, tmp_path, 'worker1'), task('t1', 'worker1'))
    assert emu.get('bottasks', 't1', NS) is not None


def test_variables_are_not_evaluated_for_a_request_the_match_conditions_exclude(
        emu: KubeEmulator, tmp_path: Path) -> None:
    emu.create({'apiVersion': ADMISSION, 'kind': 'ValidatingAdmissionPolicy',
                'metadata': {'name': 'owners'}, 'spec': {
                    'matchConstraints': {'resourceRules': [{
                        'apiGroups': ['fleetgram.dev'], 'apiVersions': ['*'],
                        'operations': ['CREATE'], 'resources': ['bottasks']}]},
                    'matchConditions': [{'name': 'worker2', 'expression':
                                         "request.userInfo.username.endsWith(':worker2')"}],
                    'variables': [{'name': 'slot', 'expression':
                                   "{'system:serviceaccount:fleetgram:worker2': 'worker2'}"
                                   "[request.userInfo.username]"}],
                    'validations': [{'expression': 'object.spec.pinnedWorker == variables.slot',
                                     'reason': 'Forbidden'}]}})
    emu.create({'apiVersion': ADMISSION, 'kind': 'ValidatingAdmissionPolicyBinding',
                'metadata': {'name': 'owners-binding'},
                'spec': {'policyName': 'owners', 'validationActions': ['Deny']}})
    create(api(emu, tmp_path, 'worker1'), task('t1', 'worker2'))  # not judged: no map entry
    create(api(emu, tmp_path, 'worker2'), task('t2', 'worker2'))
    with pytest.raises(kubernetes.client.ApiException) as denied:
        create(api(emu, tmp_path, 'worker2'), task('t3', 'worker1'))
    assert denied.value.status == 403
