"""RBAC in the emulated API server (``KubeEmulator(rbac=True)``): bearer tokens of
ServiceAccounts, the rbac.authorization.k8s.io/v1 API, and every request authorized as
kube-apiserver's RBAC authorizer does (https://kubernetes.io/docs/reference/access-authn-authz/
rbac/), with its 401 and 403 Status bodies. Emulators made without ``rbac=True`` allow all."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.emulators.kube_api import FLEETGRAM_CRDS, KubeEmulator

NS = 'fleetgram'
WORKER = f'system:serviceaccount:{NS}:worker'


@pytest.fixture()
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator(crds=FLEETGRAM_CRDS, namespaces=('default', NS, 'other'),
                      rbac=True) as emulator:
        for ns in (NS, 'other'):
            emulator.create({'apiVersion': 'v1', 'kind': 'ServiceAccount',
                             'metadata': {'name': 'worker', 'namespace': ns}})
        yield emulator


def grant(emu: KubeEmulator, rules: list[dict], *, namespace: str = NS, name: str = 'worker',
          cluster_role: bool = False, subject: dict | None = None) -> None:
    """A Role (or ClusterRole) bound by a RoleBinding in `namespace` to the SA `worker`."""
    kind = 'ClusterRole' if cluster_role else 'Role'
    role_meta = {'name': name} if cluster_role else {'name': name, 'namespace': namespace}
    emu.create({'apiVersion': 'rbac.authorization.k8s.io/v1', 'kind': kind,
                'metadata': role_meta, 'rules': rules})
    emu.create({'apiVersion': 'rbac.authorization.k8s.io/v1', 'kind': 'RoleBinding',
                'metadata': {'name': name, 'namespace': namespace},
                'roleRef': {'apiGroup': 'rbac.authorization.k8s.io', 'kind': kind, 'name': name},
                'subjects': [subject or {'kind': 'ServiceAccount', 'name': 'worker',
                                         'namespace': NS}]})


def client(emu: KubeEmulator, tmp_path: Path, token: str | None = None) -> Any:
    token = token or emu.service_account_token(NS, 'worker')
    path = emu.kubeconfig(tmp_path / f'kubeconfig-{token[:12]}', NS, token=token)
    return kubernetes.config.new_client_from_config(config_file=path)


def custom(emu: KubeEmulator, tmp_path: Path) -> Any:
    return kubernetes.client.CustomObjectsApi(client(emu, tmp_path))


def task(name: str) -> dict:
    return {'apiVersion': 'fleetgram.dev/v1alpha1', 'kind': 'BotTask',
            'metadata': {'name': name, 'namespace': NS},
            'spec': {'prompt': 'p', 'userId': 1, 'chatId': 1}}


def message(e: kubernetes.client.ApiException) -> str:
    return str(json.loads(e.body)['message'])


def refused(call: Any, *args: Any, **kwargs: Any) -> kubernetes.client.ApiException:
    with pytest.raises(kubernetes.client.ApiException) as caught:
        call(*args, **kwargs)
    return caught.value


def test_a_request_nothing_grants_is_403_with_the_api_servers_status(emu, tmp_path):
    e = refused(custom(emu, tmp_path).list_namespaced_custom_object,
                'fleetgram.dev', 'v1alpha1', NS, 'bottasks')
    assert e.status == 403
    body = json.loads(e.body)
    assert body == {
        'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
        'reason': 'Forbidden', 'code': 403,
        'details': {'kind': 'bottasks', 'group': 'fleetgram.dev'},
        'message': f'bottasks.fleetgram.dev is forbidden: User "{WORKER}" cannot list resource '
                   f'"bottasks" in API group "fleetgram.dev" in the namespace "{NS}"'}


def test_a_named_core_resource_is_named_in_the_message(emu, tmp_path):
    core = kubernetes.client.CoreV1Api(client(emu, tmp_path))
    e = refused(core.read_namespaced_secret, 'tok', NS)
    assert e.status == 403 and (
        f'secrets "tok" is forbidden: User "{WORKER}" cannot get resource "secrets" in API '
        f'group "" in the namespace "{NS}"') in message(e)


def test_a_role_grants_its_verbs_on_its_resources_in_its_namespace_only(emu, tmp_path):
    grant(emu, [{'apiGroups': ['fleetgram.dev'], 'resources': ['bottasks'],
                 'verbs': ['create', 'list']}])
    api = custom(emu, tmp_path)
    api.create_namespaced_custom_object('fleetgram.dev', 'v1alpha1', NS, 'bottasks', task('t1'))
    assert len(api.list_namespaced_custom_object(
        'fleetgram.dev', 'v1alpha1', NS, 'bottasks')['items']) == 1
    assert refused(api.delete_namespaced_custom_object, 'fleetgram.dev', 'v1alpha1', NS,
                   'bottasks', 't1').status == 403
    assert refused(api.list_namespaced_custom_object, 'fleetgram.dev', 'v1alpha1', 'other',
                   'bottasks').status == 403
    e = refused(api.list_cluster_custom_object, 'fleetgram.dev', 'v1alpha1', 'bottasks')
    assert 'at the cluster scope' in message(e)


def test_a_subresource_needs_its_own_rule(emu, tmp_path):
    emu.create(task('t1'))
    grant(emu, [{'apiGroups': ['fleetgram.dev'], 'resources': ['bottasks/status'],
                 'verbs': ['patch']}])
    api = custom(emu, tmp_path)
    api.patch_namespaced_custom_object_status('fleetgram.dev', 'v1alpha1', NS, 'bottasks', 't1',
                                              {'status': {'phase': 'Running'}})
    e = refused(api.patch_namespaced_custom_object, 'fleetgram.dev', 'v1alpha1', NS,
                'bottasks', 't1', {'spec': {'prompt': 'changed'}})
    assert e.status == 403 and 'cannot patch resource "bottasks" in API group' in message(e)
    assert emu.get('bottasks', 't1', NS)['spec']['prompt'] == 'p'


def test_a_status_rule_says_bottasks_slash_status_when_denied(emu, tmp_path):
    emu.create(task('t1'))
    e = refused(custom(emu, tmp_path).patch_namespaced_custom_object_status,
                'fleetgram.dev', 'v1alpha1', NS, 'bottasks', 't1', {'status': {}})
    assert 'cannot patch resource "bottasks/status" in API group "fleetgram.dev"' in message(e)


def test_resource_names_allow_only_the_named_object(emu, tmp_path):
    for name in ('mine', 'theirs'):
        emu.create({'apiVersion': 'coordination.k8s.io/v1', 'kind': 'Lease',
                    'metadata': {'name': name, 'namespace': NS}, 'spec': {}})
    grant(emu, [{'apiGroups': ['coordination.k8s.io'], 'resources': ['leases'],
                 'resourceNames': ['mine'], 'verbs': ['get', 'patch', 'list', 'create']}])
    api = kubernetes.client.CoordinationV1Api(client(emu, tmp_path))
    api.patch_namespaced_lease('mine', NS, {'spec': {'holderIdentity': 'me'}})
    assert refused(api.patch_namespaced_lease, 'theirs', NS,
                   {'spec': {'holderIdentity': 'me'}}).status == 403
    assert refused(api.read_namespaced_lease, 'theirs', NS).status == 403


def test_resource_names_never_allow_create_nor_an_unfiltered_list(emu, tmp_path):
    grant(emu, [{'apiGroups': ['coordination.k8s.io'], 'resources': ['leases'],
                 'resourceNames': ['mine'], 'verbs': ['list', 'create']}])
    api = kubernetes.client.CoordinationV1Api(client(emu, tmp_path))
    body = {'metadata': {'name': 'mine'}, 'spec': {}}
    assert refused(api.create_namespaced_lease, NS, body).status == 403
    assert refused(api.list_namespaced_lease, NS).status == 403
    # A list of that one name (a metadata.name field selector) is authorized by its name.
    assert api.list_namespaced_lease(NS, field_selector='metadata.name=mine').items == []


def test_wildcards_and_star_slash_subresource(emu, tmp_path):
    emu.create(task('t1'))
    grant(emu, [{'apiGroups': ['*'], 'resources': ['*/status'], 'verbs': ['*']}])
    api = custom(emu, tmp_path)
    api.get_namespaced_custom_object_status('fleetgram.dev', 'v1alpha1', NS, 'bottasks', 't1')
    assert refused(api.get_namespaced_custom_object, 'fleetgram.dev', 'v1alpha1', NS,
                   'bottasks', 't1').status == 403


def test_a_rolebinding_to_a_clusterrole_grants_it_in_the_bindings_namespace(emu, tmp_path):
    grant(emu, [{'apiGroups': [''], 'resources': ['configmaps'], 'verbs': ['list']}],
          cluster_role=True, namespace='other')
    core = kubernetes.client.CoreV1Api(client(emu, tmp_path))
    core.list_namespaced_config_map('other')
    assert refused(core.list_namespaced_config_map, NS).status == 403


def test_a_clusterrolebinding_grants_everywhere_and_at_the_cluster_scope(emu, tmp_path):
    emu.create({'apiVersion': 'rbac.authorization.k8s.io/v1', 'kind': 'ClusterRole',
                'metadata': {'name': 'ns-reader'},
                'rules': [{'apiGroups': [''], 'resources': ['namespaces', 'configmaps'],
                           'verbs': ['list']}]})
    emu.create({'apiVersion': 'rbac.authorization.k8s.io/v1', 'kind': 'ClusterRoleBinding',
                'metadata': {'name': 'ns-reader'},
                'roleRef': {'apiGroup': 'rbac.authorization.k8s.io', 'kind': 'ClusterRole',
                            'name': 'ns-reader'},
                'subjects': [{'kind': 'Group', 'name': f'system:serviceaccounts:{NS}'}]})
    core = kubernetes.client.CoreV1Api(client(emu, tmp_path))
    assert {n.metadata.name for n in core.list_namespace().items} >= {NS, 'other'}
    core.list_namespaced_config_map('other')


def test_a_binding_to_another_namespaces_service_account_does_not_apply(emu, tmp_path):
    grant(emu, [{'apiGroups': [''], 'resources': ['configmaps'], 'verbs': ['list']}],
          subject={'kind': 'ServiceAccount', 'name': 'worker', 'namespace': 'other'})
    core = kubernetes.client.CoreV1Api(client(emu, tmp_path))
    assert refused(core.list_namespaced_config_map, NS).status == 403


def test_a_token_nobody_issued_is_401_and_the_admin_token_may_do_anything(emu, tmp_path):
    core = kubernetes.client.CoreV1Api(client(emu, tmp_path, token='made-up'))
    e = refused(core.list_namespaced_config_map, NS)
    assert e.status == 401 and json.loads(e.body)['reason'] == 'Unauthorized'
    admin = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(
        config_file=emu.kubeconfig(tmp_path / 'admin', NS)))
    admin.list_namespaced_config_map(NS)


def test_a_token_stops_working_when_its_service_account_is_deleted(emu, tmp_path):
    grant(emu, [{'apiGroups': [''], 'resources': ['configmaps'], 'verbs': ['list']}])
    core = kubernetes.client.CoreV1Api(client(emu, tmp_path))
    core.list_namespaced_config_map(NS)
    emu.delete('serviceaccounts', 'worker', NS)
    assert refused(core.list_namespaced_config_map, NS).status == 401


def test_a_token_request_gives_a_working_token(emu, tmp_path):
    admin = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(
        config_file=emu.kubeconfig(tmp_path / 'admin', NS)))
    made = admin.create_namespaced_service_account_token(
        'worker', NS, {'spec': {'audiences': [], 'expirationSeconds': 600}})
    grant(emu, [{'apiGroups': [''], 'resources': ['configmaps'], 'verbs': ['list']}])
    kubernetes.client.CoreV1Api(client(emu, tmp_path, made.status.token)
                                ).list_namespaced_config_map(NS)
    assert emu.authorizations[-1].user == WORKER and emu.authorizations[-1].allowed


def test_discovery_is_open_to_every_authenticated_user(emu, tmp_path):
    api = kubernetes.client.ApisApi(client(emu, tmp_path))
    assert 'rbac.authorization.k8s.io' in {g.name for g in api.get_api_versions().groups}


def test_the_rbac_api_is_served_for_create_get_list_delete(emu, tmp_path):
    grant(emu, [{'apiGroups': [''], 'resources': ['configmaps'], 'verbs': ['list']}])
    admin = kubernetes.client.RbacAuthorizationV1Api(kubernetes.config.new_client_from_config(
        config_file=emu.kubeconfig(tmp_path / 'admin', NS)))
    assert admin.read_namespaced_role('worker', NS).rules[0].resources == ['configmaps']
    assert [b.metadata.name for b in admin.list_namespaced_role_binding(NS).items] == ['worker']
    admin.delete_namespaced_role_binding('worker', NS)
    core = kubernetes.client.CoreV1Api(client(emu, tmp_path))
    assert refused(core.list_namespaced_config_map, NS).status == 403


def test_every_decision_is_logged_with_its_user_and_what_allowed_it(emu, tmp_path):
    grant(emu, [{'apiGroups': [''], 'resources': ['configmaps'], 'verbs': ['list']}])
    core = kubernetes.client.CoreV1Api(client(emu, tmp_path))
    core.list_namespaced_config_map(NS)
    refused(core.list_namespaced_secret, NS)
    ok, no = emu.authorizations[-2:]
    assert (ok.user, ok.verb, ok.resource, ok.allowed, ok.by) == (
        WORKER, 'list', 'configmaps', True, f'Role {NS}/worker via RoleBinding {NS}/worker')
    assert (no.resource, no.allowed, no.service_account) == ('secrets', False, 'worker')
    assert ('', 'configmaps', 'list', NS) in emu.used_permissions(user=WORKER)


def test_without_rbac_every_request_is_allowed_and_no_rbac_api_is_served(tmp_path):
    with KubeEmulator(namespaces=(NS,)) as plain:
        core = kubernetes.client.CoreV1Api(client(plain, tmp_path, token='anything'))
        core.list_namespaced_secret(NS)
        assert 'rbac.authorization.k8s.io' not in {
            rt.group for rt in plain.resource_types()}
        assert plain.authorizations == []
