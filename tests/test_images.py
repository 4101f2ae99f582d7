"""The images: built from pinned requirements (requirements/images.txt, which holds every
runtime dependency of pyproject.toml and of the agent extra at a version its specifier
allows) on an exactly versioned base image, with a .dockerignore that keeps secrets, data,
tests and caches out of the build context; and deploy/kind-e2e.sh, which must work with fake
tokens (it waits for the BotTask to be accepted, not for a phase only a worker can give)."""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / 'requirements' / 'images.txt'
KIND = ROOT / 'deploy' / 'kind-e2e.sh'


def pins() -> dict[str, Version]:
    out = {}
    for line in LOCK.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            name, _, version = line.partition('==')
            assert version, f'{line!r} is not pinned with =='
            out[canonicalize_name(name)] = Version(version)
    return out


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    return [Requirement(r) for r in
            project['dependencies'] + project['optional-dependencies']['agent']]


@pytest.mark.parametrize('requirement', project_requirements(), ids=str)
def test_every_runtime_dependency_is_pinned_to_an_allowed_version(requirement):
    pinned = pins()
    name = canonicalize_name(requirement.name)
    assert name in pinned, f'{name} is not in requirements/images.txt'
    assert requirement.specifier.contains(pinned[name], prereleases=True), \
        f'{name}=={pinned[name]} does not satisfy {requirement.specifier}'


def test_extras_of_the_dependencies_are_pinned_too():
    """python-telegram-bot[rate-limiter] needs aiolimiter, psycopg[binary] psycopg-binary."""
    pinned = pins()
    assert {'aiolimiter', 'psycopg-binary'} <= set(pinned)


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    text = (ROOT / dockerfile).read_text()
    joined = re.sub(r'\\\n', ' ', text)
    return [tuple(line.split(None, 1)) for line in joined.splitlines()  # type: ignore[misc]
            if line.strip() and not line.lstrip().startswith('#')]


@pytest.mark.parametrize('dockerfile', ['Dockerfile.master', 'Dockerfile.worker'])
def test_the_image_installs_with_the_pinned_requirements(dockerfile):
    runs = [args for op, args in instructions(dockerfile) if op == 'RUN']
    copies = [args for op, args in instructions(dockerfile) if op == 'COPY']
    assert any('requirements/images.txt' in args for args in copies)
    pip = [args for args in runs if re.search(r'\bpip (wheel|install)\b', args)]
    assert pip and all('--constraint' in args for args in pip)
    assert all('--no-index' in args for args in pip if 'pip install' in args)


@pytest.mark.parametrize('dockerfile', ['Dockerfile.master', 'Dockerfile.worker'])
def test_the_base_image_is_pinned_to_an_exact_version_or_a_digest(dockerfile):
    froms = [args.split()[0] for op, args in instructions(dockerfile) if op == 'FROM']
    assert froms
    for image in froms:
        assert re.fullmatch(r'python:3\.11\.\d+-slim-\w+', image) or '@sha256:' in image, image


def dockerignore() -> list[str]:
    return [line.strip() for line in (ROOT / '.dockerignore').read_text().splitlines()
            if line.strip() and not line.startswith('#')]


@pytest.mark.parametrize('pattern', ['.git', '.venv', '.env', 'tests', 'fleetgram-data',
                                     '**/__pycache__', '.pytest_cache', '.ruff_cache', '*.sqlite3'])
def test_dockerignore_keeps_it_out_of_the_build_context(pattern):
    assert pattern in dockerignore()


def test_dockerignore_keeps_what_the_images_copy():
    copied = {args.split()[0] for dockerfile in ('Dockerfile.master', 'Dockerfile.worker')
              for op, args in instructions(dockerfile)
              if op == 'COPY' and not args.startswith('--from')}
    copied |= {'requirements/images.txt', 'pyproject.toml', 'README.md'}
    ignored = dockerignore()
    for path in copied:
        assert not any(Path(path).match(p) or path.split('/')[0] == p for p in ignored), path


def test_kind_script_parses():
    bash = shutil.which('bash')
    assert bash
    subprocess.run([bash, '-n', str(KIND)], check=True)


def test_kind_script_waits_for_acceptance_not_a_phase_by_default():
    text = KIND.read_text()
    assert 'WAIT_PHASE=${WAIT_PHASE:-}' in text  # no phase unless asked for
    assert re.search(r'^wait_for_acceptance "\$name"', text, re.M)
    assert re.search(r'if \[\[ \$status -eq 0 && -n "\$WAIT_PHASE" \]\]; then\n'
                     r'.*\n\s+wait_for_phase "\$name"', text)
    # .status.phase is read in wait_for_phase only
    code = '\n'.join(line for line in text.splitlines() if not line.lstrip().startswith('#'))
    body = code[code.index('wait_for_phase() {'):]
    body = body[:body.index('\n}\n')]
    assert code.count('.status.phase') == body.count('.status.phase') == 1


def test_kind_script_installs_from_a_values_file_with_a_ten_digit_user_id():
    text = KIND.read_text()
    assert 'ALLOWED_USER_ID=${ALLOWED_USER_ID:-1234567890}' in text
    assert re.search(r'helm upgrade --install .* -f "\$values"', text)
    assert '--set' not in text
