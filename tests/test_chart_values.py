"""Chart values as a platform engineer writes them in a values file: ten-digit Telegram user
ids and large numbers render exactly (Helm reads every number of a file as a float64), ids may
be strings of digits, and values.schema.json refuses any key it does not know, naming it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetgram.cli import needs
from fleetgram.config import load_settings
from tests.test_chart import CHART, VALUES, by_kind, helm, objects, render

VALUES_FILE = """
telegram:
  allowedUserIds: [11111111, "1234567890"]
claude:
  maxTokens: 1000000
scaling:
  finishedTaskTTLSeconds: 2592000
  scaleDownDelaySeconds: 86400000
"""
# What the chart's Secrets hold, for turning a rendered env into a process environment.
SECRETS = {'DATABASE_URL': 'postgresql://fleetgram:pw@postgres:5432/fleetgram',
           'MASTER_BOT_TOKEN': '111:master-token', 'ANTHROPIC_API_KEY': 'sk-ant-test'}


def from_file(tmp_path: Path, text: str) -> dict[str, Any]:
    """VALUES, then a values file on top, read by Helm's own `-f` parser."""
    path = tmp_path / 'my-values.yaml'
    path.write_text(text)
    values: dict[str, Any] = json.loads(json.dumps(VALUES))
    for key, sub in helm.values_from_yaml(path.read_text()).items():
        if isinstance(sub, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **sub}
        else:
            values[key] = sub
    return values


def container_env(deployment: dict) -> dict[str, dict]:
    (container,) = deployment['spec']['template']['spec']['containers']
    return {e['name']: e for e in container['env']}


def process_env(env: dict[str, dict]) -> dict[str, str]:
    """The environment a pod would see: values as given, Secrets from SECRETS."""
    out = {}
    for name, entry in env.items():
        if 'value' in entry:
            out[name] = entry['value']
        elif 'secretKeyRef' in entry.get('valueFrom', {}):
            out[name] = SECRETS[name]
        else:
            out[name] = 'fleetgram'  # the namespace, from the downward API
    return out


@pytest.fixture(scope='module')
def big(tmp_path_factory) -> dict[str, str]:
    return render(from_file(tmp_path_factory.mktemp('values'), VALUES_FILE))


def test_ten_digit_user_ids_render_exactly_in_every_deployment_and_the_workerpool(big):
    objs = objects(big)
    for name, deployment in by_kind(objs, 'Deployment').items():
        if 'ALLOWED_USER_IDS' in container_env(deployment):
            assert container_env(deployment)['ALLOWED_USER_IDS']['value'] == \
                '11111111,1234567890', name
    (pool,) = by_kind(objs, 'WorkerPool').values()
    env = {e['name']: e for e in pool['spec']['template']['env']}
    assert env['ALLOWED_USER_IDS']['value'] == '11111111,1234567890'


def test_notes_show_the_first_user_id_as_an_integer(big):
    notes = next(text for name, text in big.items() if name.endswith('NOTES.txt'))
    assert 'userId: 11111111, chatId: 11111111' in notes


def test_no_number_renders_in_exponent_notation(big):
    for name, text in big.items():
        assert 'e+0' not in text, name


def test_large_numbers_render_as_integers(big):
    objs = objects(big)
    (pool,) = by_kind(objs, 'WorkerPool').values()
    assert pool['spec']['finishedTaskTTLSeconds'] == 2592000
    assert pool['spec']['scaleDownDelaySeconds'] == 86400000
    for deployment in by_kind(objs, 'Deployment').values():
        env = container_env(deployment)
        if 'CLAUDE_MAX_TOKENS' in env:
            assert env['CLAUDE_MAX_TOKENS']['value'] == '1000000'


@pytest.mark.parametrize('component', ['operator', 'master'])
def test_the_rendered_env_loads_with_the_components_own_requirements(tmp_path, component):
    values = from_file(tmp_path, 'telegram: {allowedUserIds: [11111111, 1234567890]}')
    deployment = by_kind(objects(render(values)), 'Deployment')[f'fg-fleetgram-{component}']
    settings = load_settings(process_env(container_env(deployment)), dotenv=None,
                             **needs(component))
    assert settings.allowed_user_ids == frozenset({11111111, 1234567890})


def test_user_ids_may_be_strings_of_digits(tmp_path):
    values = from_file(tmp_path, 'telegram: {allowedUserIds: ["1234567890", "42"]}')
    master = by_kind(objects(render(values)), 'Deployment')['fg-fleetgram-master']
    assert container_env(master)['ALLOWED_USER_IDS']['value'] == '1234567890,42'


@pytest.mark.parametrize('ids', ['["12a"]', '["-5"]', '[1.5]', '[""]'])
def test_user_ids_that_are_not_whole_positive_numbers_are_refused(tmp_path, ids):
    with pytest.raises(helm.HelmError) as e:
        render(from_file(tmp_path, f'telegram: {{allowedUserIds: {ids}}}'))
    assert 'allowedUserIds' in str(e.value)


@pytest.mark.parametrize(('text', 'key'), [
    ('workerTokenz: []', 'workerTokenz'),
    ('worker: {nodeSelectr: {}}', 'nodeSelectr'),
    ('master: {podAnotations: {a: b}}', 'podAnotations'),
    ('operator: {serviceAccount: {nmae: x}}', 'nmae'),
    ('image: {master: {digets: "sha256:0"}}', 'digets'),
    ('networkPolicy: {postgres: {cdir: 10.0.0.0/8}}', 'cdir'),
    ('metrics: {serviceMonitor: {intervall: 1m}}', 'intervall'),
    ('master: {resources: {requets: {cpu: 1}}}', 'requets'),
    ('operator: {securityContext: {readOnlyRootFileSystem: true}}', 'readOnlyRootFileSystem'),
    ('health: {prot: 8081}', 'prot'),
    ('addWorker: {spareSlot: 2}', 'spareSlot'),
])
def test_an_unknown_key_is_refused_with_a_message_naming_it(tmp_path, text, key):
    with pytest.raises(helm.HelmError) as e:
        render(from_file(tmp_path, text))
    assert key in str(e.value)


def _objects_without_additional_properties(node: Any, path: str = '#') -> list[str]:
    found = []
    if isinstance(node, dict):
        if node.get('type') == 'object' and 'additionalProperties' not in node \
                and path != '#/definitions/k8sObject':
            found.append(path)
        for key, sub in node.items():
            found += _objects_without_additional_properties(sub, f'{path}/{key}')
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            found += _objects_without_additional_properties(sub, f'{path}/{i}')
    return found


def test_every_object_of_the_schema_says_which_keys_it_takes():
    """Only the Kubernetes objects passed through to the API server (k8sObject) are open."""
    schema = json.loads((CHART / 'values.schema.json').read_text())
    assert _objects_without_additional_properties(schema) == []


def test_the_default_values_satisfy_the_schema():
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.values)
