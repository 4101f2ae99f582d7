"""WorkerPool spec.template's pod settings: the CRD admits them and refuses unknown or bad
ones, the chart renders them from a values file, and the worker Deployment the operator makes
from the admitted pool is a valid Kubernetes object."""
from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate
import pytest
import yaml

from fleetgram.operator.manifests import deployment_manifest
from tests.emulators import kube_api
from tests.emulators.kube_api import ApiError, KubeEmulator
from tests.operator.builders import NOW

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / 'crds' / 'workerpool.yaml'
NS = 'fleetgram'
kube_emulator = kube_api.kube_emulator

POD_SETTINGS: dict[str, Any] = {
    'imagePullSecrets': [{'name': 'regcred'}],
    'nodeSelector': {'disk': 'ssd'},
    'tolerations': [{'key': 'bots', 'operator': 'Equal', 'value': 'yes',
                     'effect': 'NoExecute', 'tolerationSeconds': 60}],
    'affinity': {'podAntiAffinity': {'preferredDuringSchedulingIgnoredDuringExecution': [
        {'weight': 50, 'podAffinityTerm': {'topologyKey': 'kubernetes.io/hostname',
                                           'labelSelector': {'matchLabels': {'a': 'b'}}}}]}},
    'priorityClassName': 'fleet-high',
    'podAnnotations': {'prometheus.io/scrape': 'true'},
    'podLabels': {'team': 'bots'},
    'podSecurityContext': {'runAsUser': 20002, 'fsGroupChangePolicy': 'OnRootMismatch',
                           'supplementalGroups': [3000],
                           'seccompProfile': {'type': 'RuntimeDefault'}},
    'securityContext': {'readOnlyRootFilesystem': True, 'capabilities': {'drop': ['ALL']}},
    'resources': {'requests': {'cpu': '50m', 'memory': '128Mi'}, 'limits': {'memory': 1073741824}},
    'extraVolumes': [{'name': 'ca', 'configMap': {'name': 'corp-ca'}}],
    'extraVolumeMounts': [{'name': 'ca', 'mountPath': '/etc/ssl/corp', 'readOnly': True}],
    'envFrom': [{'configMapRef': {'name': 'fleet-settings'}, 'prefix': 'X_'}],
    'serviceAccountName': 'fleetgram-worker',
    'healthPort': 9100,
}


def workerpool(**template: Any) -> dict[str, Any]:
    return {'apiVersion': 'fleetgram.dev/v1alpha1', 'kind': 'WorkerPool',
            'metadata': {'name': 'fleet', 'namespace': NS},
            'spec': {'tokenSecrets': [{'name': 't1'}],
                     'template': {'image': 'registry.example.com/worker:1', **template}}}


@pytest.fixture()
def emu() -> KubeEmulator:
    """Not started: admission runs in-process, no HTTP needed."""
    return KubeEmulator(crds=[CRD], namespaces=[NS])


def refused(emu: KubeEmulator, obj: dict) -> ApiError:
    with pytest.raises(ApiError) as e:
        emu.create(obj)
    assert e.value.code == 422 and e.value.reason == 'Invalid'
    return e.value


def test_every_pod_setting_is_admitted_and_kept_as_given(emu):
    made = emu.create(workerpool(**copy.deepcopy(POD_SETTINGS)))
    assert {k: made['spec']['template'][k] for k in POD_SETTINGS} == POD_SETTINGS


def test_the_health_port_defaults_to_8081(emu):
    assert emu.create(workerpool())['spec']['template']['healthPort'] == 8081


@pytest.mark.parametrize(('template', 'field'), [
    ({'tolerations': [{'operator': 'Maybe'}]}, 'spec.template.tolerations[0].operator'),
    ({'healthPort': 70000}, 'spec.template.healthPort'),
    ({'imagePullSecrets': [{}]}, 'spec.template.imagePullSecrets[0].name'),
    ({'nodeSelector': {'disk': 3}}, 'spec.template.nodeSelector[disk]'),
    ({'podSecurityContext': {'runAsNonRoot': 'yes'}},
     'spec.template.podSecurityContext.runAsNonRoot'),
    ({'extraVolumeMounts': [{'name': 'ca'}]}, 'spec.template.extraVolumeMounts[0].mountPath'),
    ({'extraVolumes': [{'configMap': {'name': 'x'}}]}, 'spec.template.extraVolumes[0].name'),
])
def test_a_bad_pod_setting_is_refused_naming_the_field(emu, template, field):
    error = refused(emu, workerpool(**template))
    assert field in [c['field'] for c in error.details['causes']]


@pytest.mark.parametrize('template', [
    {'nodeSelectr': {'disk': 'ssd'}},                         # a misspelt setting
    {'securityContext': {'readOnlyRootFilesytem': False}},    # a misspelt container field
    {'affinity': {'nodeAfinity': {}}},                        # a misspelt affinity part
    {'extraVolumeMounts': [{'name': 'ca', 'mountPath': '/x', 'readonly': True}]},
])
def test_an_unknown_template_field_is_refused_under_strict_validation(kube_emulator, template):
    api = kubernetes.client.CustomObjectsApi()
    with pytest.raises(kubernetes.client.ApiException) as e:
        api.create_namespaced_custom_object('fleetgram.dev', 'v1alpha1', NS, 'workerpools',
                                            workerpool(**template), field_validation='Strict')
    assert e.value.status == 400 and 'unknown field' in e.value.body


def test_an_unknown_template_field_is_dropped_otherwise(emu):
    made = emu.create(workerpool(nodeSelectr={'disk': 'ssd'}))
    assert 'nodeSelectr' not in made['spec']['template']


def _preserving(schema: dict, path: str) -> list[str]:
    found = [path] if schema.get('x-kubernetes-preserve-unknown-fields') else []
    for key, sub in (schema.get('properties') or {}).items():
        found += _preserving(sub, f'{path}.{key}')
    if isinstance(schema.get('items'), dict):
        found += _preserving(schema['items'], f'{path}[*]')
    if isinstance(schema.get('additionalProperties'), dict):
        found += _preserving(schema['additionalProperties'], f'{path}{{*}}')
    return found


def test_only_kubernetes_types_keep_unknown_fields_in_the_template():
    crd = yaml.safe_load(CRD.read_text())
    template = crd['spec']['versions'][0]['schema']['openAPIV3Schema']['properties']['spec'][
        'properties']['template']
    assert sorted(_preserving(template, 'template')) == [
        'template.affinity.nodeAffinity', 'template.affinity.podAffinity',
        'template.affinity.podAntiAffinity', 'template.env[*]', 'template.extraVolumes[*]']


def test_the_deployment_made_from_an_admitted_pool_is_a_valid_kubernetes_object(emu):
    for engine in ('chat', 'agent'):
        pool = workerpool(**copy.deepcopy(POD_SETTINGS))
        pool['metadata']['name'] = f'fleet-{engine}'
        pool['spec']['engine'] = engine
        made = emu.create(pool)
        deployment = deployment_manifest(made, 'worker1', 0, NOW)
        kubernetes_validate.validate(deployment, '1.30', strict=True)
        pod = deployment['spec']['template']['spec']
        assert pod['nodeSelector'] == {'disk': 'ssd'}
        assert pod['imagePullSecrets'] == [{'name': 'regcred'}]


# --------------------------------------------------------------------------- the chart

VALUES_FILE = textwrap.dedent('''\
    telegram:
      allowedUserIds: [1111111111, 2222222222]
      masterToken: {value: "111:master-token"}
    workerTokens:
      - {value: "201:worker-one"}
      - {existingSecret: tok-two, key: bot}
    anthropic:
      apiKey: {existingSecret: anthropic, existingSecretKey: key}
    database:
      url: {value: "postgresql://fleetgram:pw@postgres:5432/fleetgram"}
    claude: {model: claude-sonnet-4-5, maxTokens: 64000}
    scaling: {minWorkers: 1, maxWorkers: 2, finishedTaskTTLSeconds: 2592000}
    imagePullSecrets: [{name: regcred}]
    worker:
      nodeSelector: {disk: ssd}
      tolerations: [{key: bots, operator: Exists, effect: NoSchedule}]
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              - matchExpressions: [{key: zone, operator: In, values: [a]}]
      priorityClassName: fleet-high
      podAnnotations: {prometheus.io/scrape: "true"}
      podLabels: {team: bots}
      podSecurityContext: {runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001,
                           fsGroup: 10001, seccompProfile: {type: RuntimeDefault}}
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true,
                        capabilities: {drop: [ALL]}}
      resources: {requests: {cpu: 50m, memory: 128Mi}, limits: {memory: 512Mi}}
      extraVolumes: [{name: ca, configMap: {name: corp-ca}}]
      extraVolumeMounts: [{name: ca, mountPath: /etc/ssl/corp, readOnly: true}]
      envFrom: [{configMapRef: {name: fleet-settings}}]
    ''')


@pytest.fixture(scope='module')
def chart_pool() -> dict[str, Any]:
    from tests.test_chart import objects, render
    values = yaml.safe_load(VALUES_FILE)
    (pool,) = [o for o in objects(render(values)) if o['kind'] == 'WorkerPool']
    return pool


def test_the_chart_renders_the_worker_pod_settings_into_the_pool(chart_pool):
    values = yaml.safe_load(VALUES_FILE)
    template = chart_pool['spec']['template']
    assert template['imagePullSecrets'] == [{'name': 'regcred'}]
    for key in ('nodeSelector', 'tolerations', 'affinity', 'priorityClassName',
                'podAnnotations', 'podLabels', 'podSecurityContext', 'securityContext',
                'resources', 'extraVolumes', 'extraVolumeMounts', 'envFrom'):
        assert template[key] == values['worker'][key], key
    assert template['healthPort'] == 8081


def test_the_chart_prints_large_numbers_as_integers(chart_pool):
    spec = chart_pool['spec']
    assert spec['finishedTaskTTLSeconds'] == 2592000 and spec['template']['maxTokens'] == 64000
    env = {e['name']: e.get('value') for e in spec['template']['env']}
    assert env['ALLOWED_USER_IDS'] == '1111111111,2222222222'
    assert env['CLAUDE_MAX_TOKENS'] == '64000'


def test_the_charts_pool_is_admitted_and_makes_a_valid_worker_deployment(emu, chart_pool):
    made = emu.create(chart_pool, namespace=NS)
    deployment = deployment_manifest(made, 'worker1', 0, NOW)
    kubernetes_validate.validate(deployment, '1.30', strict=True)
    pod = deployment['spec']['template']['spec']
    assert pod['imagePullSecrets'] == [{'name': 'regcred'}]
    assert pod['priorityClassName'] == 'fleet-high'
    (container,) = pod['containers']
    assert container['securityContext']['readOnlyRootFilesystem'] is True
    assert container['livenessProbe']['httpGet']['path'] == '/healthz'


def test_the_uninstall_hook_objects_are_valid_pre_delete_hooks():
    from tests.test_chart import objects, render
    rendered = objects(render(yaml.safe_load(VALUES_FILE)))
    hooks = [o for o in rendered
             if (o['metadata'].get('annotations') or {}).get('helm.sh/hook') == 'pre-delete']
    assert sorted(o['kind'] for o in hooks) == ['Job', 'Role', 'RoleBinding', 'ServiceAccount']
    for obj in hooks:
        kubernetes_validate.validate(obj, '1.30', strict=True)
        annotations = obj['metadata']['annotations']
        assert annotations['helm.sh/hook-delete-policy'] == \
            'before-hook-creation,hook-succeeded'
    weights = {o['kind']: int(o['metadata']['annotations']['helm.sh/hook-weight'])
               for o in hooks}
    assert weights['Job'] > max(weights['ServiceAccount'], weights['Role'],
                                weights['RoleBinding'])  # its credentials exist first
    (job,) = [o for o in hooks if o['kind'] == 'Job']
    pod = job['spec']['template']['spec']
    (container,) = pod['containers']
    assert container['args'][:1] == ['uninstall-fleet']
    assert pod['serviceAccountName'] == next(
        o['metadata']['name'] for o in hooks if o['kind'] == 'ServiceAccount')
    assert pod['imagePullSecrets'] == [{'name': 'regcred'}]
