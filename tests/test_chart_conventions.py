"""The chart's conventions: name overrides, registry and digest, per-component service
accounts and pod settings, read-only root filesystems, health probes whether metrics are on or
off, least-privilege secrets (the operator gets no bot token and no Claude credentials, the
master only its own token) and the optional NetworkPolicies."""
from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fleetgram.cli import needs
from fleetgram.config import ConfigError, load_settings
from tests.test_chart import CHART, NS, RELEASE, VALUES, by_kind, helm, objects, render
from tests.test_chart_values import container_env, process_env

FULL = f'{RELEASE}-fleetgram'
CREDENTIALS = {'MASTER_BOT_TOKEN', 'ANTHROPIC_API_KEY', 'CLAUDE_CODE_OAUTH_TOKEN', 'WORKER_TOKEN',
               'WORKER_TOKEN_POOL'}


def values_with(text: str) -> dict[str, Any]:
    values: dict[str, Any] = json.loads(json.dumps(VALUES))
    for key, sub in yaml.safe_load(text).items():
        if isinstance(sub, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **sub}
        else:
            values[key] = sub
    return values


def deployments(text: str = '{}') -> dict[str, dict]:
    return by_kind(objects(render(values_with(text))), 'Deployment')


def pod(deployment: dict) -> dict:
    return deployment['spec']['template']['spec']


def the_container(deployment: dict) -> dict:
    (container,) = pod(deployment)['containers']
    return container


def validate(objs: list[dict]) -> None:
    for obj in objs:
        if obj['kind'] not in ('WorkerPool', 'ServiceMonitor', 'PrometheusRule'):
            kubernetes_validate.validate(obj, '1.30', strict=True)


# --------------------------------------------------------------------------- names, images

def test_name_override_replaces_the_chart_name():
    objs = objects(render(values_with('nameOverride: bots')))
    assert set(by_kind(objs, 'Deployment')) == {f'{RELEASE}-bots-master',
                                                f'{RELEASE}-bots-operator'}
    assert by_kind(objs, 'Deployment')[f'{RELEASE}-bots-master']['metadata']['labels'][
        'app.kubernetes.io/name'] == 'bots'


def test_fullname_override_names_every_object():
    objs = objects(render(values_with('fullnameOverride: fleet')))
    assert set(by_kind(objs, 'Deployment')) == {'fleet-master', 'fleet-operator'}
    assert set(by_kind(objs, 'WorkerPool')) == {'fleet'}
    accounts = set(by_kind(objs, 'ServiceAccount'))
    assert {'fleet-master', 'fleet-operator', 'fleet-worker-1'} <= accounts


def test_the_registry_prefixes_both_images_and_a_digest_wins_over_the_tag():
    digest = 'sha256:' + 'a' * 64
    objs = objects(render(values_with(
        f'image: {{registry: registry.example.com/, master: {{repository: fg/master, tag: "1.2",'
        f' digest: "{digest}"}}, worker: {{repository: fg/worker, tag: "1.2"}}}}')))
    for dep in by_kind(objs, 'Deployment').values():
        assert the_container(dep)['image'] == f'registry.example.com/fg/master@{digest}'
    (pool,) = by_kind(objs, 'WorkerPool').values()
    assert pool['spec']['template']['image'] == 'registry.example.com/fg/worker:1.2'


def test_a_digest_that_is_not_sha256_is_refused():
    with pytest.raises(helm.HelmError) as e:
        render(values_with('image: {master: {digest: latest}}'))
    assert 'digest' in str(e.value)


# --------------------------------------------------------------------------- service accounts

def test_with_create_false_the_given_service_account_is_used_and_bound():
    objs = objects(render(values_with(
        'master: {serviceAccount: {create: false, name: platform-master}}\n'
        'worker: {serviceAccount: {create: false, name: platform-worker}}')))
    accounts = set(by_kind(objs, 'ServiceAccount'))
    assert f'{FULL}-operator' in accounts
    assert not {f'{FULL}-master', f'{FULL}-worker', 'platform-master', 'platform-worker'} & accounts
    assert pod(by_kind(objs, 'Deployment')[f'{FULL}-master'])['serviceAccountName'] == \
        'platform-master'
    (pool,) = by_kind(objs, 'WorkerPool').values()
    assert pool['spec']['template']['serviceAccountName'] == 'platform-worker'
    bindings = by_kind(objs, 'RoleBinding')
    assert bindings[f'{FULL}-master']['subjects'][0]['name'] == 'platform-master'
    assert bindings[f'{FULL}-worker']['subjects'][0]['name'] == 'platform-worker'
    assert bindings[f'{FULL}-operator']['subjects'][0]['name'] == f'{FULL}-operator'


def test_a_created_service_account_may_be_named_and_annotated():
    objs = objects(render(values_with(
        'operator: {serviceAccount: {name: op, annotations: {eks.amazonaws.com/role-arn: arn}}}')))
    assert by_kind(objs, 'ServiceAccount')['op']['metadata']['annotations'] == {
        'eks.amazonaws.com/role-arn': 'arn'}
    assert pod(by_kind(objs, 'Deployment')[f'{FULL}-operator'])['serviceAccountName'] == 'op'
    assert by_kind(objs, 'RoleBinding')[f'{FULL}-operator']['subjects'][0]['name'] == 'op'


# --------------------------------------------------------------------------- pod settings

POD_SETTINGS = """
imagePullSecrets: [{{name: regcred}}]
{component}:
  podAnnotations: {{team: bots}}
  podLabels: {{cost-centre: ai}}
  nodeSelector: {{pool: bots}}
  tolerations: [{{key: dedicated, operator: Equal, value: bots, effect: NoSchedule}}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{{matchExpressions: [{{key: arch, operator: In, values: [amd64]}}]}}]
  priorityClassName: bots-high
  resources: {{requests: {{cpu: 10m}}, limits: {{memory: 64Mi}}}}
  extraEnv: [{{name: EXTRA, value: "1"}}]
  envFrom: [{{configMapRef: {{name: more-settings}}}}]
  extraVolumes: [{{name: ca, configMap: {{name: corporate-ca}}}}]
  extraVolumeMounts: [{{name: ca, mountPath: /etc/ssl/corporate, readOnly: true}}]
"""


@pytest.mark.parametrize('component', ['master', 'operator'])
def test_the_pod_settings_of_a_component_reach_its_deployment(component):
    objs = objects(render(values_with(POD_SETTINGS.format(component=component))))
    validate(objs)
    dep = by_kind(objs, 'Deployment')[f'{FULL}-{component}']
    meta, spec, container = dep['spec']['template']['metadata'], pod(dep), the_container(dep)
    assert meta['annotations']['team'] == 'bots' and 'checksum/values' in meta['annotations']
    assert meta['labels']['cost-centre'] == 'ai'
    assert meta['labels']['app.kubernetes.io/component'] == component
    assert spec['imagePullSecrets'] == [{'name': 'regcred'}]
    assert spec['nodeSelector'] == {'pool': 'bots'}
    assert spec['tolerations'][0]['key'] == 'dedicated'
    assert 'nodeAffinity' in spec['affinity']
    assert spec['priorityClassName'] == 'bots-high'
    assert container['resources']['requests']['cpu'] == '10m'  # merged with the defaults
    assert container['resources']['limits'] == {'memory': '64Mi'}
    assert {'name': 'EXTRA', 'value': '1'} in container['env']
    assert container['envFrom'] == [{'configMapRef': {'name': 'more-settings'}}]
    assert {'name': 'ca', 'configMap': {'name': 'corporate-ca'}} in spec['volumes']
    assert {'name': 'ca', 'mountPath': '/etc/ssl/corporate', 'readOnly': True} in \
        container['volumeMounts']
    other = by_kind(objs, 'Deployment')[
        f'{FULL}-{"operator" if component == "master" else "master"}']
    assert 'nodeSelector' not in pod(other) and 'envFrom' not in the_container(other)


def test_a_pod_label_cannot_replace_the_selector_labels():
    dep = deployments('master: {podLabels: {app.kubernetes.io/component: other}}')[
        f'{FULL}-master']
    assert dep['spec']['template']['metadata']['labels']['app.kubernetes.io/component'] == \
        'master'


@pytest.mark.parametrize('component', ['master', 'operator'])
def test_the_root_filesystem_is_read_only_with_a_writable_tmp(component):
    dep = deployments()[f'{FULL}-{component}']
    container = the_container(dep)
    assert container['securityContext']['readOnlyRootFilesystem'] is True
    assert container['securityContext']['allowPrivilegeEscalation'] is False
    assert pod(dep)['securityContext']['runAsNonRoot'] is True
    assert {'name': 'tmp', 'mountPath': '/tmp'} in container['volumeMounts']
    assert {'name': 'tmp', 'emptyDir': {}} in pod(dep)['volumes']


# --------------------------------------------------------------------------- health probes

@pytest.mark.parametrize('metrics', [True, False])
@pytest.mark.parametrize(('component', 'ready'), [('master', '/readyz'),
                                                  ('operator', '/healthz')])
def test_probes_hit_the_health_port_whether_metrics_are_on_or_off(metrics, component, ready):
    dep = deployments(f'metrics: {{enabled: {str(metrics).lower()}}}\nhealth: {{port: 8088}}')[
        f'{FULL}-{component}']
    container = the_container(dep)
    assert {'name': 'health', 'containerPort': 8088, 'protocol': 'TCP'} in container['ports']
    assert any(p['name'] == 'metrics' for p in container['ports']) is metrics
    assert container['livenessProbe']['httpGet'] == {'path': '/healthz', 'port': 'health'}
    assert container['readinessProbe']['httpGet'] == {'path': ready, 'port': 'health'}
    assert container_env(dep)['HEALTH_PORT']['value'] == '8088'


def test_the_health_port_must_differ_from_the_metrics_port():
    with pytest.raises(helm.HelmError) as e:
        render(values_with('health: {port: 9090}'))
    assert 'health.port' in str(e.value)


# --------------------------------------------------------------------------- least privilege

OAUTH = ('worker: {engine: agent, agent: {oauthToken: {existingSecret: claude-oauth}}}\n'
         'anthropic: {apiKey: {existingSecret: "", value: ""}}')


@pytest.mark.parametrize('text', ['{}', OAUTH])
def test_the_operator_gets_no_bot_token_and_no_claude_credentials(text):
    env = container_env(deployments(text)[f'{FULL}-operator'])
    assert not CREDENTIALS & set(env)


@pytest.mark.parametrize('text', ['{}', OAUTH])
def test_the_master_gets_its_own_token_and_no_claude_credentials(text):
    env = container_env(deployments(text)[f'{FULL}-master'])
    assert CREDENTIALS & set(env) == {'MASTER_BOT_TOKEN'}


def test_the_operator_starts_with_its_rendered_env():
    env = process_env(container_env(deployments()[f'{FULL}-operator']))
    settings = load_settings(env, dotenv=None, **needs('operator'))
    assert settings.master_bot_token == '' and settings.anthropic_api_key == ''


def test_the_master_still_requires_its_token():
    env = process_env(container_env(deployments()[f'{FULL}-master']))
    assert load_settings(env, dotenv=None, **needs('master')).master_bot_token
    del env['MASTER_BOT_TOKEN']
    with pytest.raises(ConfigError) as e:
        load_settings(env, dotenv=None, **needs('master'))
    assert 'MASTER_BOT_TOKEN' in str(e.value)


def test_workers_still_require_a_claude_credential():
    assert needs('worker')['need_claude'] and not needs('master')['need_claude']
    assert not any(needs('operator').values())


# --------------------------------------------------------------------------- NetworkPolicy

NETPOL = """
networkPolicy:
  enabled: true
  telegramCIDRs: [149.154.160.0/20, 91.108.4.0/22]
  postgres: {cidr: 10.20.0.5/32, port: 5433}
  apiServer: {cidr: 172.18.0.2/32, port: 443, targetPort: 6443}
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
"""


def policies(text: str) -> dict[str, dict]:
    objs = objects(render(values_with(text)))
    validate(objs)
    return by_kind(objs, 'NetworkPolicy')


def _egress(policy: dict) -> dict[tuple[int, ...], list]:
    return {tuple(p['port'] for p in rule['ports']): rule.get('to', [])
            for rule in policy['spec']['egress']}


def test_no_networkpolicy_unless_enabled():
    assert policies('{}') == {}


def test_each_component_gets_a_policy_selecting_its_pods():
    found = policies(NETPOL)
    assert set(found) == {f'{FULL}-{c}' for c in ('master', 'operator', 'worker')}
    assert found[f'{FULL}-worker']['spec']['podSelector']['matchLabels'] == {
        'app.kubernetes.io/component': 'worker', 'fleetgram.dev/pool': FULL}
    assert found[f'{FULL}-master']['spec']['podSelector']['matchLabels'][
        'app.kubernetes.io/component'] == 'master'
    for policy in found.values():
        assert policy['spec']['policyTypes'] == ['Ingress', 'Egress']


def test_only_the_metrics_port_is_open_and_only_to_the_given_peers():
    for policy in policies(NETPOL).values():
        (rule,) = policy['spec']['ingress']
        assert rule['ports'] == [{'port': 9090, 'protocol': 'TCP'}]
        assert rule['from'] == [{'namespaceSelector': {'matchLabels': {
            'kubernetes.io/metadata.name': 'monitoring'}}}]
    for policy in policies('networkPolicy: {enabled: true}').values():
        assert policy['spec']['ingress'][0]['from'] == [{'podSelector': {}}]  # the namespace


def test_with_metrics_off_nothing_may_connect_in():
    for policy in policies('networkPolicy: {enabled: true}\nmetrics: {enabled: false}').values():
        assert policy['spec']['ingress'] == []


def test_egress_reaches_dns_the_api_server_postgres_and_telegram():
    for policy in policies(NETPOL).values():
        egress = _egress(policy)
        assert egress[(53, 53)] == []
        assert egress[(443, 6443)] == [{'ipBlock': {'cidr': '172.18.0.2/32'}}]
        assert egress[(5433,)] == [{'ipBlock': {'cidr': '10.20.0.5/32'}}]
        # VALUES point telegram.apiUrl at http://telegram-emulator:8081: its port is used
        assert egress[(8081,)] == [{'ipBlock': {'cidr': '149.154.160.0/20'}},
                                   {'ipBlock': {'cidr': '91.108.4.0/22'}}]


def test_only_workers_may_reach_anthropic():
    found = policies(NETPOL + '  anthropicCIDRs: [160.79.104.0/23]\n')
    worker = found[f'{FULL}-worker']['spec']['egress']
    assert worker[-1] == {'ports': [{'port': 443, 'protocol': 'TCP'}],
                          'to': [{'ipBlock': {'cidr': '160.79.104.0/23'}}]}
    for component in ('master', 'operator'):
        assert len(found[f'{FULL}-{component}']['spec']['egress']) == len(worker) - 1


def test_without_cidrs_egress_is_limited_by_port_only():
    policy = policies('networkPolicy: {enabled: true}')[f'{FULL}-master']
    egress = _egress(policy)
    assert egress[(5432,)] == [] and egress[(8081,)] == [] and egress[(443, 6443)] == []


def test_extra_egress_is_added_to_every_policy():
    extra = '  extraEgress: [{ports: [{port: 22, protocol: TCP}]}]\n'
    for policy in policies(NETPOL + extra).values():
        assert policy['spec']['egress'][-1] == {'ports': [{'port': 22, 'protocol': 'TCP'}]}


def test_the_policies_pass_helm_lint():
    report = helm.lint(CHART, values_with(NETPOL), strict=True, namespace=NS)
    assert report['errors'] == []


def test_each_worker_slot_runs_as_its_own_service_account_bound_to_the_worker_role():
    objs = objects(render(values_with('{}')))
    (pool,) = by_kind(objs, 'WorkerPool').values()
    slot_accounts = [s['serviceAccountName'] for s in pool['spec']['tokenSecrets']]
    assert len(set(slot_accounts)) == len(slot_accounts) >= 2
    assert set(slot_accounts) <= set(by_kind(objs, 'ServiceAccount'))
    bound = {s['name'] for s in by_kind(objs, 'RoleBinding')[f'{FULL}-worker']['subjects']}
    assert bound == set(slot_accounts)


def test_the_worker_admission_policy_names_every_slot_and_can_be_turned_off():
    objs = objects(render(values_with('{}')))
    (policy,) = by_kind(objs, 'ValidatingAdmissionPolicy').values()
    (binding,) = by_kind(objs, 'ValidatingAdmissionPolicyBinding').values()
    assert binding['spec']['policyName'] == policy['metadata']['name']
    assert binding['spec']['validationActions'] == ['Deny']
    (pool,) = by_kind(objs, 'WorkerPool').values()
    (condition,) = policy['spec']['matchConditions']
    for slot in pool['spec']['tokenSecrets']:
        assert f":{slot['serviceAccountName']}'" in condition['expression']
    off = objects(render(values_with('rbac: {workerPolicy: false}')))
    assert not by_kind(off, 'ValidatingAdmissionPolicy')
    shared = objects(render(values_with('worker: {serviceAccount: {create: false, name: w}}')))
    assert not by_kind(shared, 'ValidatingAdmissionPolicy')  # workers cannot be told apart
