"""The Helm chart, rendered by Helm's own engine (Helm 4's Go SDK, from the helm-python-sdk
wheel), checked against Kubernetes' schemas (kubernetes_validate), applied to the emulated
API server, and its RBAC compared with what a kopf operator really requests.

The chart is rendered by Helm's own engine (helm-python-sdk, a test dependency)."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import kopf
import kopf.testing
import kubernetes_validate
import pytest
import yaml

from tests.emulators.kube_api import FLEETGRAM_CRDS, ApiError, KubeEmulator

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / 'charts' / 'fleetgram'
NS = 'fleetgram'
RELEASE = 'fg'
METRICS = ['fleetgram_tasks_total', 'fleetgram_queue_pending', 'fleetgram_workers',
           'fleetgram_task_duration_seconds', 'fleetgram_claude_tokens_total',
           'fleetgram_claude_cost_usd_total', 'fleetgram_scale_events_total']
VALUES: dict[str, Any] = {
    'telegram': {'allowedUserIds': [111, 222], 'masterToken': {'value': '111:master-token'},
                 'apiUrl': 'http://telegram-emulator:8081'},
    'workerTokens': [{'value': '201:worker-one'}, {'existingSecret': 'tok-two', 'key': 'bot'},
                     {'value': '203:worker-three'}],
    'anthropic': {'apiKey': {'existingSecret': 'anthropic', 'existingSecretKey': 'key'}},
    'database': {'url': {'value': 'postgresql://fleetgram:pw@postgres:5432/fleetgram'}},
    'scaling': {'minWorkers': 1, 'maxWorkers': 3},
    'metrics': {'serviceMonitor': {'enabled': True}, 'dashboard': {'enabled': True}},
}

# Helm's own engine (helm-python-sdk, in the test extras): the chart is rendered for real.
import helm_python as helm  # noqa: E402


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values if values is not None else VALUES, name=RELEASE,
                            namespace=NS, is_install=True)


def objects(manifests: dict[str, str]) -> list[dict]:
    out = []
    for name, text in sorted(manifests.items()):
        if name.endswith('NOTES.txt'):
            continue
        out += [d for d in yaml.safe_load_all(text) if d]
    return out


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o['metadata']['name']: o for o in objs if o['kind'] == kind}


@pytest.fixture(scope='module')
def rendered() -> list[dict]:
    return objects(render())


# --------------------------------------------------------------------------- static checks

def test_chart_metadata_and_values_parse():
    chart = yaml.safe_load((CHART / 'Chart.yaml').read_text())
    assert chart['apiVersion'] == 'v2' and chart['name'] == 'fleetgram'
    assert re.fullmatch(r'\d+\.\d+\.\d+', chart['version'])
    values = yaml.safe_load((CHART / 'values.yaml').read_text())
    assert set(values['image']) >= {'master', 'worker'}
    assert values['telegram']['allowedUserIds'] == []  # fail closed until set
    assert values['metrics']['dashboard']['labels'] == {'grafana_dashboard': '1'}
    json.loads((CHART / 'values.schema.json').read_text())


@pytest.mark.parametrize('name', ['bottask.yaml', 'workerpool.yaml'])
def test_chart_crds_are_copies_of_crds(name):
    assert (CHART / 'crds' / name).read_bytes() == (ROOT / 'crds' / name).read_bytes()
    assert sorted(p.name for p in (CHART / 'crds').iterdir()) == ['bottask.yaml',
                                                                  'workerpool.yaml']


def test_dashboard_uses_exactly_the_documented_metrics():
    dash = json.loads((CHART / 'dashboards' / 'fleetgram.json').read_text())
    exprs = [t['expr'] for p in dash['panels'] for t in p.get('targets', [])]
    used = set(re.findall(r'\bfleetgram_[a-z_]+', ' '.join(exprs)))
    base = {re.sub(r'_(bucket|sum|count)$', '', m) for m in used}
    assert base == set(METRICS)
    assert any('{{state}}' in t.get('legendFormat', '') for p in dash['panels']
               for t in p.get('targets', []) if 'fleetgram_workers' in t['expr'])
    assert 'fleetgram_task_duration_seconds_bucket' in used  # a histogram, by quantile
    assert dash['uid'] == 'fleetgram' and dash['templating']['list'][0]['type'] == 'datasource'


# --------------------------------------------------------------------------- rendered by Helm

def test_helm_lint_is_clean():
    report = helm.lint(CHART, VALUES, strict=True, namespace=NS)
    assert report['errors'] == []
    assert [m for m in report['messages'] if m['severity'] >= 2] == []


def test_every_builtin_object_validates_against_kubernetes_schemas(rendered):
    kinds = sorted({o['kind'] for o in rendered})
    assert kinds == ['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'Deployment', 'Job',
                     'Role', 'RoleBinding', 'Secret', 'Service', 'ServiceAccount',
                     'ServiceMonitor', 'ValidatingAdmissionPolicy',
                     'ValidatingAdmissionPolicyBinding', 'WorkerPool']
    for obj in rendered:
        if obj['kind'] in ('WorkerPool', 'ServiceMonitor'):
            continue  # custom resources: no bundled schema (WorkerPool: see the emulator test)
        kubernetes_validate.validate(obj, '1.30', strict=True)


def test_deployments_run_fleetgram_with_the_contract_env(rendered):
    deployments = by_kind(rendered, 'Deployment')
    assert set(deployments) == {f'{RELEASE}-fleetgram-operator', f'{RELEASE}-fleetgram-master'}
    secrets = set(by_kind(rendered, 'Secret')) | {'tok-two', 'anthropic'}
    accounts = set(by_kind(rendered, 'ServiceAccount'))
    for component in ('operator', 'master'):
        dep = deployments[f'{RELEASE}-fleetgram-{component}']
        assert dep['spec']['replicas'] == 1 and dep['spec']['strategy'] == {'type': 'Recreate'}
        pod = dep['spec']['template']['spec']
        assert pod['serviceAccountName'] in accounts
        assert pod['securityContext']['runAsNonRoot'] is True
        (container,) = pod['containers']
        assert container['command'] == ['fleetgram'] and container['args'] == [component]
        assert container['image'] == 'ghcr.io/fleetgram/fleetgram-master:0.1.0'
        env = {e['name']: e for e in container['env']}
        assert {'FLEETGRAM_MODE', 'FLEETGRAM_NAMESPACE', 'DATABASE_URL', 'TELEGRAM_API_URL',
                'ALLOWED_USER_IDS', 'CLAUDE_MODEL', 'METRICS_PORT', 'HEALTH_PORT'} <= set(env)
        # least privilege: only the master gets its token, neither the Anthropic key
        assert ('MASTER_BOT_TOKEN' in env) is (component == 'master')
        assert 'ANTHROPIC_API_KEY' not in env
        assert env['FLEETGRAM_MODE']['value'] == 'kubernetes'
        assert env['FLEETGRAM_NAMESPACE']['valueFrom']['fieldRef']['fieldPath'] == \
            'metadata.namespace'
        assert env['ALLOWED_USER_IDS']['value'] == '111,222'
        assert env['TELEGRAM_API_URL']['value'] == 'http://telegram-emulator:8081'
        assert env['METRICS_PORT']['value'] == '9090'
        for name in ('DATABASE_URL', 'MASTER_BOT_TOKEN'):
            if name in env:
                assert 'value' not in env[name]  # secrets come from Secrets only
                assert env[name]['valueFrom']['secretKeyRef']['name'] in secrets
        assert container['ports'] == [
            {'name': 'health', 'containerPort': 8081, 'protocol': 'TCP'},
            {'name': 'metrics', 'containerPort': 9090, 'protocol': 'TCP'}]


def test_secrets_and_the_workerpool_token_slots(rendered):
    secrets = by_kind(rendered, 'Secret')
    assert secrets[f'{RELEASE}-fleetgram-master-token']['stringData'] == {
        'token': '111:master-token'}
    assert secrets[f'{RELEASE}-fleetgram-worker1-token']['stringData'] == {
        'token': '201:worker-one'}
    assert 'tok-two' not in secrets and 'anthropic' not in secrets  # existing ones are reused
    (pool,) = by_kind(rendered, 'WorkerPool').values()
    assert pool['spec']['tokenSecrets'] == [
        {'name': f'{RELEASE}-fleetgram-worker1-token', 'key': 'token',
         'serviceAccountName': f'{RELEASE}-fleetgram-worker-1'},
        {'name': 'tok-two', 'key': 'bot', 'serviceAccountName': f'{RELEASE}-fleetgram-worker-2'},
        {'name': f'{RELEASE}-fleetgram-worker3-token', 'key': 'token',
         'serviceAccountName': f'{RELEASE}-fleetgram-worker-3'}]
    assert (pool['spec']['minWorkers'], pool['spec']['maxWorkers']) == (1, 3)
    template = pool['spec']['template']
    assert template['image'] == 'ghcr.io/fleetgram/fleetgram-worker:0.1.0'
    assert 'serviceAccountName' not in template  # each slot runs as its own account
    assert {e['name'] for e in template['env']} >= {'TELEGRAM_API_URL', 'ALLOWED_USER_IDS',
                                                   'DATABASE_URL', 'ANTHROPIC_API_KEY'}


def test_metrics_services_servicemonitor_and_dashboard(rendered):
    services = by_kind(rendered, 'Service')
    assert set(services) == {f'{RELEASE}-fleetgram-{c}-metrics'
                             for c in ('operator', 'master', 'worker')}
    for svc in services.values():
        assert svc['spec']['ports'][0]['name'] == 'metrics'
        assert svc['metadata']['labels']['fleetgram.dev/metrics'] == 'true'
    assert services[f'{RELEASE}-fleetgram-worker-metrics']['spec']['selector'] == {
        'app.kubernetes.io/component': 'worker', 'fleetgram.dev/pool': f'{RELEASE}-fleetgram'}
    (monitor,) = by_kind(rendered, 'ServiceMonitor').values()
    assert monitor['spec']['selector']['matchLabels']['fleetgram.dev/metrics'] == 'true'
    assert monitor['spec']['endpoints'][0]['port'] == 'metrics'
    (dashboard,) = by_kind(rendered, 'ConfigMap').values()
    assert dashboard['metadata']['labels']['grafana_dashboard'] == '1'
    assert json.loads(dashboard['data']['fleetgram.json']) == json.loads(
        (CHART / 'dashboards' / 'fleetgram.json').read_text())


def test_metrics_off_renders_no_services_nor_ports():
    values = json.loads(json.dumps(VALUES))
    values['metrics'] = {'enabled': False}
    objs = objects(render(values))
    assert not by_kind(objs, 'Service') and not by_kind(objs, 'ServiceMonitor')
    for dep in by_kind(objs, 'Deployment').values():
        (container,) = dep['spec']['template']['spec']['containers']
        assert [p['name'] for p in container['ports']] == ['health']  # probes stay
        assert container['readinessProbe']['httpGet']['port'] == 'health'
        assert {e['name']: e.get('value') for e in container['env']}['METRICS_PORT'] == '0'


@pytest.mark.parametrize(('change', 'message'), [
    ({'telegram': {'allowedUserIds': []}}, 'telegram.allowedUserIds is empty'),
    ({'workerTokens': []}, 'workerTokens is empty'),
    ({'workerTokens': [{'key': 'token'}]}, 'workerTokens[0]: set existingSecret or value'),
    ({'scaling': {'minWorkers': 4, 'maxWorkers': 2}}, 'minWorkers must not exceed'),
    ({'database': {'url': {'value': ''}}}, 'database.url'),
    ({'telegram': {'allowedUserIds': ['me']}}, 'allowedUserIds'),  # values.schema.json
])
def test_bad_values_fail_with_a_message(change, message):
    values = json.loads(json.dumps(VALUES))
    for key, sub in change.items():
        if isinstance(sub, dict) and isinstance(values.get(key), dict):
            values[key].update(sub)
        else:
            values[key] = sub
    with pytest.raises(helm.HelmError) as e:
        render(values)
    assert message in str(e.value)


def test_rendered_objects_are_admitted_by_the_emulated_api_server(rendered):
    emu = KubeEmulator(crds=FLEETGRAM_CRDS, namespaces=['default', NS])
    served = {(rt.api_version, rt.kind) for rt in emu.resource_types()}
    applied = []
    for obj in rendered:
        if (obj['apiVersion'], obj['kind']) not in served:
            continue  # RBAC and ServiceMonitor: not served by the emulator
        made = emu.create(obj, namespace=NS)
        applied.append(made['kind'])
    assert sorted(set(applied)) == ['ConfigMap', 'Deployment', 'Secret', 'Service',
                                    'ServiceAccount', 'WorkerPool']
    (pool,) = emu.objects('workerpools', NS)
    assert pool['spec']['leaseSeconds'] == 30  # defaults filled by the CRD schema
    bad = json.loads(json.dumps(next(o for o in rendered if o['kind'] == 'WorkerPool')))
    bad['metadata']['name'] = 'too-many'
    bad['spec']['maxWorkers'] = 0
    with pytest.raises(ApiError) as e:
        emu.create(bad, namespace=NS)
    assert e.value.code == 422


def _rules(role: dict) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in role['rules']
            for group in rule['apiGroups'] for resource in rule['resources']
            for verb in rule['verbs']}


def test_operator_rbac_is_the_documented_set(rendered):
    roles = by_kind(rendered, 'Role')
    operator = roles[f'{RELEASE}-fleetgram-operator']
    # What the operator uses, no more: tests/cluster/test_rbac_grants.py checks each is used.
    assert _rules(operator) == {
        *{('fleetgram.dev', 'bottasks', v) for v in ('list', 'watch', 'patch', 'delete')},
        ('fleetgram.dev', 'bottasks/status', 'patch'),
        *{('fleetgram.dev', 'workerpools', v) for v in ('get', 'list', 'watch', 'patch')},
        ('fleetgram.dev', 'workerpools/status', 'patch'),
        *{('apps', 'deployments', v) for v in ('list', 'watch', 'create', 'patch', 'delete')},
        ('', 'secrets', 'get'),
        ('', 'persistentvolumeclaims', 'get'), ('', 'persistentvolumeclaims', 'create'),
        *{('coordination.k8s.io', 'leases', v) for v in ('list', 'watch')},
        ('', 'events', 'create'),
    }
    (secret_rule,) = [r for r in operator['rules'] if r['resources'] == ['secrets']]
    assert secret_rule['resourceNames'] == [f'{RELEASE}-fleetgram-worker1-token', 'tok-two',
                                            f'{RELEASE}-fleetgram-worker3-token']
    (cluster,) = by_kind(rendered, 'ClusterRole').values()
    assert _rules(cluster) == {('apiextensions.k8s.io', 'customresourcedefinitions', v)
                               for v in ('list', 'watch')} | {
        ('', 'namespaces', v) for v in ('list', 'watch')}
    worker = roles[f'{RELEASE}-fleetgram-worker']
    assert not any(r['resources'] == ['secrets'] for r in worker['rules'])
    for binding in by_kind(rendered, 'RoleBinding').values():
        assert binding['roleRef']['name'] in roles
        assert binding['subjects'][0]['namespace'] == NS


def test_kopf_needs_no_more_than_the_operator_rbac(rendered):
    """Run a kopf operator with the same kind of handlers as fleetgram's (on BotTasks and the
    WorkerPool, with status patches, finalizers, events) against the emulated API server, and
    check every request it made is allowed by the chart's operator Role and ClusterRole."""
    emu = KubeEmulator(crds=FLEETGRAM_CRDS, namespaces=['default', NS])
    emu.start_sync()
    try:
        registry = kopf.OperatorRegistry()

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> Any:
            return emu.connection_info(NS)

        @kopf.on.create('fleetgram.dev', 'v1alpha1', 'bottasks', registry=registry)
        def assign(body: Any, patch: Any, **_: Any) -> None:
            patch.status['phase'] = 'Assigned'
            kopf.info(body, reason='Assigned', message='worker1')

        @kopf.on.delete('fleetgram.dev', 'v1alpha1', 'bottasks', registry=registry)
        def forget(**_: Any) -> None:
            pass

        @kopf.on.resume('fleetgram.dev', 'v1alpha1', 'workerpools', registry=registry)
        @kopf.on.create('fleetgram.dev', 'v1alpha1', 'workerpools', registry=registry)
        def pool(patch: Any, **_: Any) -> None:
            patch.status['ready'] = 0

        settings = kopf.OperatorSettings()
        args = ['run', '--standalone', f'--namespace={NS}']
        with kopf.testing.KopfRunner(args, registry=registry, settings=settings, timeout=30):
            (pool_obj,) = [o for o in rendered if o['kind'] == 'WorkerPool']
            emu.create(pool_obj, namespace=NS)
            emu.create({'apiVersion': 'fleetgram.dev/v1alpha1', 'kind': 'BotTask',
                        'metadata': {'name': 't-rbac1'},
                        'spec': {'prompt': 'p', 'userId': 1, 'chatId': 1}}, namespace=NS)
            emu.wait_for_sync(lambda: (emu.get('bottasks', 't-rbac1', NS) or {}).get(
                'status'), 20)
            emu.wait_for_sync(lambda: emu.objects('events', NS), 10)
            emu.delete('bottasks', 't-rbac1', NS)
            emu.wait_for_sync(lambda: emu.get('bottasks', 't-rbac1', NS) is None, 20)
    finally:
        emu.stop_sync()
    logging.getLogger(__name__).info('kopf used: %s', sorted(map(str, emu.used_permissions())))
    namespaced = _rules(by_kind(rendered, 'Role')[f'{RELEASE}-fleetgram-operator'])
    clusterwide = _rules(next(iter(by_kind(rendered, 'ClusterRole').values())))
    used = emu.used_permissions()
    assert ('fleetgram.dev', 'bottasks/status', 'patch', NS) in used
    for group, resource, verb, namespace in used:
        allowed = clusterwide if namespace is None else namespaced | clusterwide
        assert (group, resource, verb) in allowed, (group, resource, verb, namespace)


# --------------------------------------------------------------------------- images

@pytest.mark.parametrize('component', ['master', 'worker'])
def test_dockerfiles_build_the_package_as_a_non_root_user(component):
    text = (ROOT / f'Dockerfile.{component}').read_text()
    instructions = [line.split(None, 1) for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith('#')
                    and not line.startswith((' ', '\t'))]
    froms = [args for op, args in instructions if op == 'FROM']
    assert all(f.startswith('python:3.11.') for f in froms)
    assert ('USER', '10001:10001') in [(op, args) for op, args in instructions]
    assert json.loads(dict(instructions)['ENTRYPOINT']) == ['fleetgram']
    assert json.loads(dict(instructions)['CMD']) == [component]
    # Every folder that pyproject.toml maps into the package is copied into the image.
    import tomllib
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    folders = set(project['tool']['setuptools']['package-dir'].values())
    copied = {args.split()[0] for op, args in instructions if op == 'COPY'}
    assert folders <= copied and {'pyproject.toml'} <= {
        part for op, args in instructions if op == 'COPY' for part in args.split()}
    assert 'pip install' in text and 'pip wheel' in text
    # The chart's pod security context runs as the image's user.
    values = yaml.safe_load((CHART / 'values.yaml').read_text())
    for component in ('master', 'operator', 'worker'):
        assert values[component]['podSecurityContext']['runAsUser'] == 10001
