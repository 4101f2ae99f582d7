"""An emulated Kubernetes API server for fleetgram's tests.

Tests talk to it over HTTP with the real ``kubernetes`` client, the real kopf and
kubectl: no cluster, kube-apiserver or Docker engine runs here.

Built on kmock (by kopf's author): the HTTP entry point is a :class:`kmock.RawHandler`
subclass, so every request is recorded as a ``kmock.Request`` and kmock's DSL can inject
reactions ahead of the emulator (``emu.kmock['patch', kmock.resource('fleetgram.dev',
'v1alpha1', 'bottasks')][:1] << 500``). kmock's own ``KubernetesEmulator`` storage is NOT
used: it assigns no uid/resourceVersion (so no 409), cannot parse ``/api/v1/namespaces``,
ignores ``PUT``, selectors and ``?resourceVersion=`` on watches. kmock's ``Server`` is not
used either: it patches aiohttp's resolver process-wide, which is unsafe from the emulator's
own thread. Everything the design relies on is implemented here (see docs/kubernetes.md,
"The emulated API server in tests").

The server runs in its own thread with its own event loop, so the synchronous
``kubernetes`` client (which blocks its caller) can be used from async tests, and kopf can
run in the test's loop (``asyncio``) or in ``kopf.testing.KopfRunner``'s thread.
"""
from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import contextvars
import copy
import dataclasses
import datetime
import json
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import pytest
import yaml

from tests.emulators import kube_admission

__all__ = [
    'ApiError',
    'AuthorizationRecord',
    'KubeEmulator',
    'RequestRecord',
    'ResourceType',
    'SchemaError',
    'kube_emulator',
]

ALL_VERBS = ('create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch')
REPO_ROOT = Path(__file__).resolve().parents[2]
FLEETGRAM_CRDS = (REPO_ROOT / 'crds' / 'bottask.yaml', REPO_ROOT / 'crds' / 'workerpool.yaml')

_DNS1123_SUBDOMAIN = re.compile(
    r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')
_DNS1123_LABEL = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')
_LABEL_VALUE = re.compile(r'^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$')
_LABEL_NAME = re.compile(r'^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$')
_GENERATE_CHARS = 'bcdfghjklmnpqrstvwxz2456789'
_META_FIELDS = {
    'name', 'generateName', 'namespace', 'uid', 'resourceVersion', 'generation',
    'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'labels',
    'annotations', 'ownerReferences', 'finalizers', 'managedFields', 'selfLink',
}
_RFC3339 = re.compile(
    r'^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$')


# --------------------------------------------------------------------------------------------
# Errors, as the API server's Status objects.
# --------------------------------------------------------------------------------------------

class ApiError(Exception):
    """A refusal, rendered as a ``kind: Status`` body with the HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(f'{code} {reason}: {message}')
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        body: dict[str, Any] = {
            'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
            'message': self.message, 'reason': self.reason, 'code': self.code,
        }
        if self.details is not None:
            body['details'] = self.details
        return body


class SchemaError(ValueError):
    """A CRD the emulator refuses to load (as the API server would, or as unsupported here)."""


def _details(rt: ResourceType, name: str | None) -> dict:
    d: dict[str, Any] = {'kind': rt.plural}
    if name:
        d['name'] = name
    if rt.group:
        d['group'] = rt.group
    return d


def _not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, 'NotFound', f'{rt.qualified} "{name}" not found', _details(rt, name))


def _conflict(rt: ResourceType, name: str, why: str | None = None) -> ApiError:
    why = why or ('the object has been modified; please apply your changes to the latest '
                  'version and try again')
    return ApiError(409, 'Conflict', f'Operation cannot be fulfilled on {rt.qualified} '
                    f'"{name}": {why}', _details(rt, name))


def _bad_request(message: str) -> ApiError:
    return ApiError(400, 'BadRequest', message)


@dataclasses.dataclass
class Cause:
    field: str
    reason: str
    message: str

    def text(self) -> str:
        return f'{self.field}: {self.message}' if self.field else self.message


def _invalid(rt: ResourceType, name: str | None, causes: list[Cause]) -> ApiError:
    what = f'{rt.kind}.{rt.group}' if rt.group else rt.kind
    texts = [c.text() for c in causes]
    joined = texts[0] if len(texts) == 1 else '[' + ', '.join(texts) + ']'
    details = {'name': name or '', 'kind': rt.kind,
               'causes': [{'reason': c.reason, 'message': c.message, 'field': c.field}
                          for c in causes]}
    if rt.group:
        details['group'] = rt.group
    return ApiError(422, 'Invalid', f'{what} "{name or ""}" is invalid: {joined}', details)


# --------------------------------------------------------------------------------------------
# Small helpers.
# --------------------------------------------------------------------------------------------

def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace('Z', '+00:00').replace('z', '+00:00'))


def _human_age(ts: str | None) -> str:
    """Like the API server's ConvertToHumanReadableDateType (5s, 3m2s, 2d3h...)."""
    if not ts:
        return '<unknown>'
    secs = int((datetime.datetime.now(datetime.UTC) - _parse_time(ts)).total_seconds())
    if secs < 0:
        return '<invalid>'
    if secs < 120:
        return f'{secs}s'
    mins, hours, days = secs // 60, secs // 3600, secs // 86400
    if mins < 10:
        return f'{mins}m{secs % 60}s' if secs % 60 else f'{mins}m'
    if hours < 3:
        return f'{mins}m'
    if hours < 8:
        return f'{hours}h{mins % 60}m' if mins % 60 else f'{hours}h'
    if hours < 48:
        return f'{hours}h'
    if days < 8:
        return f'{days}d{hours % 24}h' if hours % 24 else f'{days}d'
    return f'{days}d'


def _truthy(value: str | None) -> bool:
    return (value or '').lower() in ('true', '1', 't')


def _jsonpath(obj: Any, path: str) -> Any:
    """Only the simple `.a.b.c` paths used by printer columns."""
    cur = obj
    for part in path.strip().lstrip('.').split('.'):
        if not part:
            continue
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _strip_empty_meta(meta: dict) -> None:
    for key in ('labels', 'annotations', 'finalizers', 'ownerReferences'):
        if key in meta and not meta[key]:
            del meta[key]
    meta.pop('managedFields', None)
    meta.pop('selfLink', None)


# --------------------------------------------------------------------------------------------
# Label and field selectors.
# --------------------------------------------------------------------------------------------

_SEL_RE = re.compile(r'''
    \s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*
    (?: (?P<op>==|=|!=)\s*(?P<val>[-A-Za-z0-9_.]*)
      | (?P<setop>in|notin)\s*\((?P<set>[^)]*)\)
    )?\s*(?:,|$)''', re.VERBOSE)


def parse_label_selector(text: str | None) -> list[tuple[str, str, Any]]:
    """``a=b,c!=d,e in (x,y),f notin (z),g,!h`` -> [(key, op, value)]."""
    reqs: list[tuple[str, str, Any]] = []
    text = (text or '').strip()
    pos = 0
    while pos < len(text):
        m = _SEL_RE.match(text, pos)
        if not m or m.end() == pos:
            raise _bad_request(f'unable to parse requirement: {text[pos:]!r} '
                               f'(labelSelector {text!r})')
        pos = m.end()
        key = m['key']
        if m['neg']:
            if m['op'] or m['setop']:
                raise _bad_request(f'unable to parse requirement: {m.group(0)!r}')
            reqs.append((key, '!', None))
        elif m['op']:
            reqs.append((key, '!=' if m['op'] == '!=' else '=', m['val']))
        elif m['setop']:
            values = {v.strip() for v in m['set'].split(',') if v.strip()}
            reqs.append((key, m['setop'], values))
        else:
            reqs.append((key, 'exists', None))
    return reqs


def labels_match(labels: Mapping[str, str] | None, reqs: list[tuple[str, str, Any]]) -> bool:
    labels = labels or {}
    for key, op, val in reqs:
        has = key in labels
        cur = labels.get(key)
        if op == '=' and cur != val:
            return False
        if op == '!=' and has and cur == val:
            return False
        if op == 'in' and (not has or cur not in val):
            return False
        if op == 'notin' and has and cur in val:
            return False
        if op == 'exists' and not has:
            return False
        if op == '!' and has:
            return False
    return True


def parse_field_selector(text: str | None, rt: ResourceType) -> list[tuple[str, str, str]]:
    reqs: list[tuple[str, str, str]] = []
    for part in (text or '').split(','):
        part = part.strip()
        if not part:
            continue
        m = re.match(r'^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$', part)
        if not m:
            raise _bad_request(f'invalid selector: {part!r}; can\'t understand {part!r}')
        key, op, val = m[1], ('!=' if m[2] == '!=' else '='), m[3]
        if key not in rt.field_selectors:
            raise _bad_request(f'"{key}" is not a known field selector: only '
                               f'"{", ".join(sorted(rt.field_selectors))}"')
        reqs.append((key, op, val))
    return reqs


def fields_match(obj: dict, reqs: list[tuple[str, str, str]]) -> bool:
    for key, op, val in reqs:
        cur = _jsonpath(obj, key)
        cur = '' if cur is None else str(cur).lower() if isinstance(cur, bool) else str(cur)
        if (op == '=') != (cur == val):
            return False
    return True


# --------------------------------------------------------------------------------------------
# A tiny CEL evaluator: only what our x-kubernetes-validations rules use.
# Supported: self / oldSelf, field access, has(), size(), int/float/string/bool/null literals,
# + - * /, comparisons, !, && and ||, parentheses. Anything else is refused at load time.
# --------------------------------------------------------------------------------------------

class CelError(Exception):
    pass


_CEL_TOKEN = re.compile(r'''\s*(?:
    (?P<num>\d+\.\d+|\d+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!().,+\-*/])
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
)''', re.VERBOSE)


class CelRule:
    def __init__(self, rule: str):
        self.rule = rule
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(rule):
            if rule[pos:].strip() == '':
                break
            m = _CEL_TOKEN.match(rule, pos)
            if not m:
                raise SchemaError(f'unsupported CEL syntax at {rule[pos:]!r} in {rule!r}')
            kind = m.lastgroup or ''
            self.tokens.append((kind, m[kind]))
            pos = m.end()
        self.pos = 0
        self.ast = self._or()
        if self.pos != len(self.tokens):
            raise SchemaError(f'unsupported CEL syntax in {rule!r}')
        self.uses_old_self = 'oldSelf' in {t[1] for t in self.tokens if t[0] == 'id'}

    # --- parser ---
    def _peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise SchemaError(f'unexpected end of CEL rule {self.rule!r}')
        tok = self.tokens[self.pos]
        if expected is not None and tok[1] != expected:
            raise SchemaError(f'expected {expected!r} in CEL rule {self.rule!r}')
        self.pos += 1
        return tok

    def _or(self) -> tuple:
        node = self._and()
        while self._peek() == '||':
            self._take()
            node = ('||', node, self._and())
        return node

    def _and(self) -> tuple:
        node = self._cmp()
        while self._peek() == '&&':
            self._take()
            node = ('&&', node, self._cmp())
        return node

    def _cmp(self) -> tuple:
        node = self._add()
        if self._peek() in ('==', '!=', '<', '<=', '>', '>='):
            op = self._take()[1]
            node = (op, node, self._add())
        return node

    def _add(self) -> tuple:
        node = self._mul()
        while self._peek() in ('+', '-'):
            op = self._take()[1]
            node = (op, node, self._mul())
        return node

    def _mul(self) -> tuple:
        node = self._unary()
        while self._peek() in ('*', '/'):
            op = self._take()[1]
            node = (op, node, self._unary())
        return node

    def _unary(self) -> tuple:
        if self._peek() == '!':
            self._take()
            return ('not', self._unary())
        if self._peek() == '-':
            self._take()
            return ('neg', self._unary())
        return self._postfix()

    def _postfix(self) -> tuple:
        node = self._primary()
        while self._peek() == '.':
            self._take()
            kind, name = self._take()
            if kind != 'id':
                raise SchemaError(f'expected a field name in CEL rule {self.rule!r}')
            node = ('.', node, name)
        return node

    def _primary(self) -> tuple:
        kind, text = self._take()
        if kind == 'num':
            return ('lit', float(text) if '.' in text else int(text))
        if kind == 'str':
            return ('lit', json.loads('"' + text[1:-1].replace('"', '\\"') + '"'))
        if text == '(':
            node = self._or()
            self._take(')')
            return node
        if kind == 'id':
            if text in ('true', 'false'):
                return ('lit', text == 'true')
            if text == 'null':
                return ('lit', None)
            if text in ('self', 'oldSelf'):
                return ('var', text)
            if text in ('has', 'size') and self._peek() == '(':
                self._take('(')
                arg = self._or()
                self._take(')')
                if text == 'has' and arg[0] != '.':
                    raise SchemaError(f'has() needs a field selection in {self.rule!r}')
                return (text, arg)
        raise SchemaError(f'unsupported CEL token {text!r} in {self.rule!r}')

    # --- evaluator ---
    def evaluate(self, self_value: Any, old_value: Any = None) -> bool:
        result = self._eval(self.ast, {'self': self_value, 'oldSelf': old_value})
        if not isinstance(result, bool):
            raise CelError(f'rule {self.rule!r} did not evaluate to a bool')
        return result

    def _eval(self, node: tuple, env: dict) -> Any:
        op = node[0]
        if op == 'lit':
            return node[1]
        if op == 'var':
            return env[node[1]]
        if op == '.':
            base = self._eval(node[1], env)
            if not isinstance(base, dict) or node[2] not in base:
                raise CelError(f'no such key: {node[2]}')
            return base[node[2]]
        if op == 'has':
            base = self._eval(node[1][1], env)
            return isinstance(base, dict) and node[1][2] in base
        if op == 'size':
            value = self._eval(node[1], env)
            if not isinstance(value, (str, list, dict)):
                raise CelError('size() of a non-collection')
            return len(value)
        if op == 'not':
            return not self._eval(node[1], env)
        if op == 'neg':
            return -self._eval(node[1], env)
        if op == '&&':
            return bool(self._eval(node[1], env)) and bool(self._eval(node[2], env))
        if op == '||':
            return bool(self._eval(node[1], env)) or bool(self._eval(node[2], env))
        left, right = self._eval(node[1], env), self._eval(node[2], env)
        try:
            return {
                '==': lambda: left == right, '!=': lambda: left != right,
                '<': lambda: left < right, '<=': lambda: left <= right,
                '>': lambda: left > right, '>=': lambda: left >= right,
                '+': lambda: left + right, '-': lambda: left - right,
                '*': lambda: left * right,
                '/': lambda: left // right if isinstance(left, int) and isinstance(right, int)
                else left / right,
            }[op]()
        except TypeError as e:
            raise CelError(f'no such overload: {e}') from None


# --------------------------------------------------------------------------------------------
# Structural schemas: defaulting, pruning and validation, with the API server's messages.
# --------------------------------------------------------------------------------------------

_SCHEMA_KEYS = {
    'type', 'properties', 'required', 'items', 'additionalProperties', 'description', 'title',
    'default', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'minLength',
    'maxLength', 'enum', 'pattern', 'minItems', 'maxItems', 'minProperties', 'maxProperties',
    'format', 'nullable', 'example', 'x-kubernetes-preserve-unknown-fields',
    'x-kubernetes-int-or-string', 'x-kubernetes-validations', 'x-kubernetes-list-type',
    'x-kubernetes-list-map-keys', 'x-kubernetes-map-type', 'x-kubernetes-embedded-resource',
}
_TYPES = {'object', 'array', 'string', 'integer', 'number', 'boolean'}


def _type_name(value: Any) -> str:
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'boolean'
    if isinstance(value, int):
        return 'integer'
    if isinstance(value, float):
        return 'number'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, list):
        return 'array'
    return 'object'


def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


class Schema:
    """One node of a CRD's openAPIV3Schema, compiled."""

    def __init__(self, raw: dict, path: str = '', root: bool = False):
        if not isinstance(raw, dict):
            raise SchemaError(f'{path or "openAPIV3Schema"}: a schema must be an object')
        unknown = set(raw) - _SCHEMA_KEYS
        if unknown:
            raise SchemaError(f'{path or "openAPIV3Schema"}: schema keywords not supported by '
                              f'the emulator: {sorted(unknown)}')
        self.raw = raw
        self.path = path
        self.type = raw.get('type')
        self.preserve = raw.get('x-kubernetes-preserve-unknown-fields')
        self.int_or_string = bool(raw.get('x-kubernetes-int-or-string'))
        where = path or 'openAPIV3Schema'
        if self.preserve is False:
            raise SchemaError(f'{where}.x-kubernetes-preserve-unknown-fields: Invalid value: '
                              'false: must be true or undefined')
        if self.type is None and not self.preserve and not self.int_or_string:
            raise SchemaError(f'{where}.type: Required value: must not be empty for specified '
                              'object fields (structural schema)')
        if self.type is not None and self.type not in _TYPES:
            raise SchemaError(f'{where}.type: Unsupported value: {self.type!r}')
        if root and self.type != 'object':
            raise SchemaError('openAPIV3Schema.type: Invalid value: must be object at the root')
        self.properties = {k: Schema(v, f'{path}.{k}' if path else k)
                           for k, v in (raw.get('properties') or {}).items()}
        if self.properties and self.type != 'object':
            raise SchemaError(f'{where}: properties need type: object')
        add = raw.get('additionalProperties')
        self.additional = Schema(add, f'{path}[*]') if isinstance(add, dict) else None
        if self.additional is not None and self.properties:
            raise SchemaError(f'{where}: additionalProperties and properties are mutually '
                              'exclusive')
        items = raw.get('items')
        if self.type == 'array' and not isinstance(items, dict):
            raise SchemaError(f'{where}.items: Required value: must be specified')
        self.items = Schema(items, f'{path}[*]') if isinstance(items, dict) else None
        self.required = list(raw.get('required') or [])
        self.pattern = re.compile(raw['pattern']) if 'pattern' in raw else None
        self.rules: list[tuple[CelRule, dict]] = []
        for spec in raw.get('x-kubernetes-validations') or []:
            if not isinstance(spec, dict) or 'rule' not in spec:
                raise SchemaError(f'{where}.x-kubernetes-validations: rule is required')
            extra = set(spec) - {'rule', 'message', 'messageExpression', 'reason', 'fieldPath',
                                 'optionalOldSelf'}
            extra |= {'messageExpression'} & set(spec)
            if extra:
                raise SchemaError(f'{where}.x-kubernetes-validations: not supported by the '
                                  f'emulator: {sorted(extra)}')
            self.rules.append((CelRule(spec['rule']), spec))
        if 'default' in raw:
            causes = self.validate(copy.deepcopy(raw['default']), where + '.default')
            if causes:
                raise SchemaError(f'{where}.default: Invalid value: {causes[0].text()}')

    # --- defaulting (and dropping nulls where not nullable, as the API server does) ---
    def apply_defaults(self, value: Any) -> None:
        if isinstance(value, dict) and (self.properties or self.additional):
            for key, sub in self.properties.items():
                if key in value and value[key] is None and not sub.raw.get('nullable'):
                    del value[key]
                if key not in value and 'default' in sub.raw:
                    value[key] = copy.deepcopy(sub.raw['default'])
                if key in value:
                    sub.apply_defaults(value[key])
            if self.additional is not None:
                for item in value.values():
                    self.additional.apply_defaults(item)
        elif isinstance(value, list) and self.items is not None:
            for item in value:
                self.items.apply_defaults(item)

    # --- pruning of unknown fields; returns their paths for warnings / strict refusal ---
    def prune(self, value: Any, path: str, unknown: list[str], root: bool = False) -> None:
        if isinstance(value, dict) and self.type in ('object', None):
            for key in list(value):
                sub_path = f'{path}.{key}' if path else key
                if root and key in ('apiVersion', 'kind', 'metadata'):
                    continue
                if key in self.properties:
                    self.properties[key].prune(value[key], sub_path, unknown)
                elif self.additional is not None:
                    self.additional.prune(value[key], sub_path, unknown)
                elif not self.preserve:
                    del value[key]
                    unknown.append(sub_path)
        elif isinstance(value, list) and self.items is not None:
            for i, item in enumerate(value):
                self.items.prune(item, f'{path}[{i}]', unknown)

    # --- validation ---
    def validate(self, value: Any, path: str, old: Any = None, has_old: bool = False,
                 root: bool = False) -> list[Cause]:
        causes: list[Cause] = []
        if value is None:
            if self.raw.get('nullable'):
                return causes
            causes.append(Cause(path, 'FieldValueTypeInvalid',
                                f'Invalid value: "null": {path} in body must be of type '
                                f'{self.type or "object"}: "null"'))
            return causes
        if not self._type_ok(value):
            want = 'integer or string' if self.int_or_string else self.type
            causes.append(Cause(path, 'FieldValueTypeInvalid',
                                f'Invalid value: "{_type_name(value)}": {path} in body must be '
                                f'of type {want}: "{_type_name(value)}"'))
            return causes
        raw = self.raw
        if 'enum' in raw and value not in raw['enum']:
            supported = ', '.join(json.dumps(v) for v in raw['enum'])
            causes.append(Cause(path, 'FieldValueNotSupported',
                                f'Unsupported value: {_show(value)}: supported values: '
                                f'{supported}'))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if 'minimum' in raw and (value < raw['minimum'] or
                                     (raw.get('exclusiveMinimum') and value == raw['minimum'])):
                rel = 'greater than' if raw.get('exclusiveMinimum') else 'greater than or equal to'
                causes.append(Cause(path, 'FieldValueInvalid',
                                    f'Invalid value: {value}: {path} in body should be {rel} '
                                    f'{raw["minimum"]}'))
            if 'maximum' in raw and (value > raw['maximum'] or
                                     (raw.get('exclusiveMaximum') and value == raw['maximum'])):
                rel = 'less than' if raw.get('exclusiveMaximum') else 'less than or equal to'
                causes.append(Cause(path, 'FieldValueInvalid',
                                    f'Invalid value: {value}: {path} in body should be {rel} '
                                    f'{raw["maximum"]}'))
        if isinstance(value, str):
            if 'minLength' in raw and len(value) < raw['minLength']:
                causes.append(Cause(path, 'FieldValueInvalid',
                                    f'Invalid value: {_show(value)}: {path} in body should be at '
                                    f'least {raw["minLength"]} chars long'))
            if 'maxLength' in raw and len(value) > raw['maxLength']:
                causes.append(Cause(path, 'FieldValueTooLong',
                                    f'Too long: may not be more than {raw["maxLength"]} bytes'))
            if self.pattern is not None and not self.pattern.search(value):
                causes.append(Cause(path, 'FieldValueInvalid',
                                    f'Invalid value: {_show(value)}: {path} in body should '
                                    f'match \'{raw["pattern"]}\''))
            if raw.get('format') == 'date-time' and not _RFC3339.match(value):
                causes.append(Cause(path, 'FieldValueInvalid',
                                    f'Invalid value: {_show(value)}: {path} in body must be of '
                                    f'type date-time: {_show(value)}'))
        if isinstance(value, list):
            if 'minItems' in raw and len(value) < raw['minItems']:
                causes.append(Cause(path, 'FieldValueInvalid',
                                    f'Invalid value: {len(value)}: {path} in body should have '
                                    f'at least {raw["minItems"]} items'))
            if 'maxItems' in raw and len(value) > raw['maxItems']:
                causes.append(Cause(path, 'FieldValueTooMany',
                                    f'Too many: {len(value)}: must have at most '
                                    f'{raw["maxItems"]} items'))
            if self.items is not None:
                for i, item in enumerate(value):
                    causes += self.items.validate(item, f'{path}[{i}]')
        if isinstance(value, dict):
            for key in self.required:
                if key not in value:
                    sub = f'{path}.{key}' if path else key
                    causes.append(Cause(sub, 'FieldValueRequired', 'Required value'))
            olds = old if (has_old and isinstance(old, dict)) else {}
            for key, sub_schema in self.properties.items():
                if key in value and not (root and key == 'metadata'):
                    sub = f'{path}.{key}' if path else key
                    causes += sub_schema.validate(value[key], sub, olds.get(key), key in olds)
            if self.additional is not None:
                for key, item in value.items():
                    causes += self.additional.validate(item, f'{path}[{key}]')
        if not causes:
            for rule, spec in self.rules:
                if rule.uses_old_self and not has_old:
                    continue
                field = path + (spec.get('fieldPath') or '')
                try:
                    ok = rule.evaluate(value, old)
                except CelError as e:
                    causes.append(Cause(field, 'FieldValueInvalid',
                                        f'Invalid value: {_show(value)}: {e} evaluating rule: '
                                        f'{rule.rule}'))
                    continue
                if not ok:
                    message = spec.get('message') or f'failed rule: {rule.rule}'
                    causes.append(Cause(field, spec.get('reason', 'FieldValueInvalid'),
                                        f'Invalid value: {_show(value)}: {message}'))
        return causes

    def _type_ok(self, value: Any) -> bool:
        if self.int_or_string:
            return isinstance(value, (int, str)) and not isinstance(value, bool)
        return {
            None: lambda: True,
            'object': lambda: isinstance(value, dict),
            'array': lambda: isinstance(value, list),
            'string': lambda: isinstance(value, str),
            'integer': lambda: isinstance(value, int) and not isinstance(value, bool),
            'number': lambda: isinstance(value, (int, float)) and not isinstance(value, bool),
            'boolean': lambda: isinstance(value, bool),
        }[self.type]()


# --------------------------------------------------------------------------------------------
# Patches.
# --------------------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Lists that strategic merge patch merges by a key (only those fleetgram's objects contain).
_SMP_KEYS = {
    'containers': 'name', 'initContainers': 'name', 'env': 'name', 'volumes': 'name',
    'volumeMounts': 'mountPath', 'ports': 'containerPort', 'imagePullSecrets': 'name',
    'ownerReferences': 'uid', 'envFrom': None, 'conditions': 'type',
}
_SMP_PRIMITIVE_SETS = {'finalizers'}


def strategic_merge_patch(target: Any, patch: Any, key: str | None = None) -> Any:
    """A light strategic merge: merge-patch, plus lists merged by their known keys."""
    if not isinstance(patch, dict):
        if isinstance(patch, list) and isinstance(target, list):
            if key in _SMP_PRIMITIVE_SETS:
                return list(target) + [v for v in patch if v not in target]
            merge_key = _SMP_KEYS.get(key or '')
            if merge_key and all(isinstance(v, dict) for v in patch + target):
                result = [copy.deepcopy(v) for v in target]
                for item in patch:
                    directive = item.get('$patch')
                    idx = next((i for i, v in enumerate(result)
                                if v.get(merge_key) == item.get(merge_key)), None)
                    if directive == 'delete':
                        if idx is not None:
                            result.pop(idx)
                    elif idx is None:
                        result.append({k: v for k, v in item.items() if k != '$patch'})
                    else:
                        result[idx] = strategic_merge_patch(result[idx], item)
                return result
        return copy.deepcopy(patch)
    if patch.get('$patch') == 'replace':
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != '$patch'}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, value in patch.items():
        if k.startswith('$'):
            continue
        if value is None:
            result.pop(k, None)
        else:
            result[k] = strategic_merge_patch(result.get(k), value, k)
    return result


def _pointer(path: str) -> list[str]:
    if path == '':
        return []
    if not path.startswith('/'):
        raise ValueError(f'invalid JSON pointer {path!r}')
    return [p.replace('~1', '/').replace('~0', '~') for p in path[1:].split('/')]


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise ValueError('a JSON patch must be a list of operations')
    doc = copy.deepcopy(doc)

    def parent(d: Any, parts: list[str]) -> tuple[Any, str]:
        for p in parts[:-1]:
            d = d[int(p)] if isinstance(d, list) else d[p]
        return d, parts[-1]

    def get(d: Any, parts: list[str]) -> Any:
        for p in parts:
            d = d[int(p)] if isinstance(d, list) else d[p]
        return d

    for op in ops:
        kind, parts = op.get('op'), _pointer(op.get('path', ''))
        try:
            if kind == 'test':
                if get(doc, parts) != op.get('value'):
                    raise ValueError(f'testing value {op.get("path")} failed')
                continue
            if kind in ('move', 'copy'):
                value = copy.deepcopy(get(doc, _pointer(op['from'])))
                if kind == 'move':
                    p, k = parent(doc, _pointer(op['from']))
                    p.pop(int(k)) if isinstance(p, list) else p.pop(k)
                kind, op = 'add', {**op, 'value': value}
            if not parts:
                if kind in ('add', 'replace'):
                    doc = copy.deepcopy(op['value'])
                    continue
                raise ValueError('cannot remove the root')
            p, k = parent(doc, parts)
            if kind == 'add':
                if isinstance(p, list):
                    p.insert(len(p) if k == '-' else int(k), copy.deepcopy(op['value']))
                else:
                    p[k] = copy.deepcopy(op['value'])
            elif kind == 'remove':
                p.pop(int(k)) if isinstance(p, list) else p.pop(k)
            elif kind == 'replace':
                if isinstance(p, list):
                    p[int(k)] = copy.deepcopy(op['value'])
                else:
                    if k not in p:
                        raise KeyError(k)
                    p[k] = copy.deepcopy(op['value'])
            else:
                raise ValueError(f'unknown JSON patch operation {kind!r}')
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(f'{kind} operation does not apply: doc is missing path: '
                             f'{op.get("path")}: {e}') from None
    return doc


# --------------------------------------------------------------------------------------------
# Resource types.
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ''
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    generation: bool = False
    custom: bool = False
    schema: Schema | None = None
    printer_columns: list[dict] = dataclasses.field(default_factory=list)
    extra_field_selectors: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f'{self.group}/{self.version}' if self.group else self.version

    @property
    def key(self) -> str:
        return f'{self.api_version}/{self.plural}'

    @property
    def qualified(self) -> str:
        return f'{self.plural}.{self.group}' if self.group else self.plural

    @property
    def field_selectors(self) -> set[str]:
        base = {'metadata.name'}
        if self.namespaced:
            base.add('metadata.namespace')
        return base | set(self.extra_field_selectors)


def _builtin_types() -> list[ResourceType]:
    core = [
        ResourceType('', 'v1', 'namespaces', 'Namespace', False, 'namespace', ('ns',),
                     subresources=frozenset({'status', 'finalize'}),
                     extra_field_selectors=('status.phase',)),
        ResourceType('', 'v1', 'secrets', 'Secret', True, 'secret',
                     extra_field_selectors=('type',)),
        ResourceType('', 'v1', 'configmaps', 'ConfigMap', True, 'configmap', ('cm',)),
        ResourceType('', 'v1', 'events', 'Event', True, 'event', ('ev',),
                     extra_field_selectors=(
                         'involvedObject.kind', 'involvedObject.namespace',
                         'involvedObject.name', 'involvedObject.uid',
                         'involvedObject.apiVersion', 'involvedObject.resourceVersion',
                         'involvedObject.fieldPath', 'reason', 'reportingComponent', 'source',
                         'type')),
        ResourceType('', 'v1', 'pods', 'Pod', True, 'pod', ('po',),
                     subresources=frozenset({'status'}),
                     extra_field_selectors=('spec.nodeName', 'status.phase')),
        ResourceType('', 'v1', 'services', 'Service', True, 'service', ('svc',),
                     subresources=frozenset({'status'})),
        ResourceType('', 'v1', 'serviceaccounts', 'ServiceAccount', True, 'serviceaccount',
                     ('sa',), subresources=frozenset({'token'})),
        ResourceType('', 'v1', 'persistentvolumeclaims', 'PersistentVolumeClaim', True,
                     'persistentvolumeclaim', ('pvc',), subresources=frozenset({'status'})),
        ResourceType('apps', 'v1', 'deployments', 'Deployment', True, 'deployment', ('deploy',),
                     subresources=frozenset({'status'}), generation=True),
        ResourceType('coordination.k8s.io', 'v1', 'leases', 'Lease', True, 'lease'),
        ResourceType('apiextensions.k8s.io', 'v1', 'customresourcedefinitions',
                     'CustomResourceDefinition', False, 'customresourcedefinition',
                     ('crd', 'crds'), subresources=frozenset({'status'}), generation=True),
    ]
    return core


RBAC_GROUP = 'rbac.authorization.k8s.io'
ADMIN_USER = 'kubernetes-admin'
ANONYMOUS_USER = 'system:anonymous'


ADMISSION_GROUP = 'admissionregistration.k8s.io'


def _rbac_types() -> list[ResourceType]:
    """The rbac.authorization.k8s.io/v1 API and ValidatingAdmissionPolicy (GA in 1.30),
    served with ``rbac=True``."""
    return [
        ResourceType(ADMISSION_GROUP, 'v1', 'validatingadmissionpolicies',
                     'ValidatingAdmissionPolicy', False, 'validatingadmissionpolicy',
                     subresources=frozenset({'status'}), generation=True),
        ResourceType(ADMISSION_GROUP, 'v1', 'validatingadmissionpolicybindings',
                     'ValidatingAdmissionPolicyBinding', False,
                     'validatingadmissionpolicybinding', generation=True),
        ResourceType(RBAC_GROUP, 'v1', 'roles', 'Role', True, 'role'),
        ResourceType(RBAC_GROUP, 'v1', 'rolebindings', 'RoleBinding', True, 'rolebinding'),
        ResourceType(RBAC_GROUP, 'v1', 'clusterroles', 'ClusterRole', False, 'clusterrole'),
        ResourceType(RBAC_GROUP, 'v1', 'clusterrolebindings', 'ClusterRoleBinding', False,
                     'clusterrolebinding'),
    ]


# Who sends the request being served (rbac=True); None for the emulator's own Python calls.
_REQUEST_USER: contextvars.ContextVar[UserInfo | None] = contextvars.ContextVar(
    'kube_emulator_request_user', default=None)


@dataclasses.dataclass(frozen=True)
class UserInfo:
    """Who sent a request, as the authenticator says (user name and groups)."""
    name: str
    groups: tuple[str, ...] = ()


@dataclasses.dataclass
class AuthorizationRecord:
    """One authorization decision of the RBAC authorizer (``emu.authorizations``)."""
    user: str
    verb: str
    group: str
    resource: str  # the plural, without the subresource
    subresource: str | None
    namespace: str | None
    name: str | None
    allowed: bool
    by: str = ''  # "Role fleetgram/x via RoleBinding fleetgram/x", or why it was denied

    @property
    def service_account(self) -> str | None:
        """The ServiceAccount's name for ``system:serviceaccount:<ns>:<name>`` users."""
        prefix = 'system:serviceaccount:'
        return self.user.split(':')[-1] if self.user.startswith(prefix) else None


def rule_allows(rule: Mapping[str, Any], verb: str, group: str, resource: str,
                subresource: str | None, name: str | None) -> bool:
    """One PolicyRule against one request, as kube-apiserver's RBAC authorizer matches them
    (plugin/pkg/auth/authorizer/rbac: VerbMatches, APIGroupMatches, ResourceMatches,
    ResourceNameMatches). From https://kubernetes.io/docs/reference/access-authn-authz/rbac/
    ("Referring to resources"): a subresource is named "<resource>/<subresource>" (or
    "*/<subresource>" for any resource's); "*" matches every resource and subresource; with
    resourceNames the rule only matches requests for one of those names, so it never matches
    a request without a name: create, deletecollection, and list/watch unless they carry a
    ``metadata.name`` field selector."""
    verbs = rule.get('verbs') or []
    if '*' not in verbs and verb not in verbs:
        return False
    groups = rule.get('apiGroups') or []
    if '*' not in groups and group not in groups:
        return False
    combined = f'{resource}/{subresource}' if subresource else resource
    resources = rule.get('resources') or []
    if not any(r == '*' or r == combined
               or (subresource and r == f'*/{subresource}') for r in resources):
        return False
    names = rule.get('resourceNames') or []
    return not names or (bool(name) and name in names)


def _forbidden(user: str, verb: str, group: str, resource: str, subresource: str | None,
               namespace: str | None, name: str | None) -> ApiError:
    """The API server's 403 Status for a request RBAC does not allow."""
    what = f'{resource}.{group}' if group else resource
    subject = f'{what} "{name}"' if name else what
    combined = f'{resource}/{subresource}' if subresource else resource
    scope = f'in the namespace "{namespace}"' if namespace else 'at the cluster scope'
    details: dict[str, Any] = {'kind': resource}
    if name:
        details['name'] = name
    if group:
        details['group'] = group
    return ApiError(403, 'Forbidden', f'{subject} is forbidden: User "{user}" cannot {verb} '
                    f'resource "{combined}" in API group "{group}" {scope}', details)


def _crd_to_type(crd: dict) -> ResourceType:
    """Check a CRD as the API server would (the parts we can) and compile it."""
    spec = crd.get('spec') or {}
    names = spec.get('names') or {}
    group = spec.get('group', '')
    plural = names.get('plural', '')
    name = (crd.get('metadata') or {}).get('name', '')
    if not group or not plural or not names.get('kind'):
        raise SchemaError(f'{name}: spec.group, spec.names.plural and spec.names.kind are '
                          'required')
    if name != f'{plural}.{group}':
        raise SchemaError(f'metadata.name: Invalid value: "{name}": must be spec.names.plural+'
                          '"."+spec.group')
    if spec.get('scope') not in ('Namespaced', 'Cluster'):
        raise SchemaError(f'{name}: spec.scope must be Namespaced or Cluster')
    versions = spec.get('versions') or []
    storage = [v for v in versions if v.get('storage')]
    if len(storage) != 1:
        raise SchemaError(f'{name}: spec.versions: Invalid value: must have exactly one '
                          'version marked as storage version')
    if len(versions) != 1:
        raise SchemaError(f'{name}: the emulator serves CRDs with exactly one version')
    version = versions[0]
    if not version.get('served', False):
        raise SchemaError(f'{name}: version {version.get("name")} is not served')
    raw_schema = (version.get('schema') or {}).get('openAPIV3Schema')
    if raw_schema is None:
        raise SchemaError(f'{name}: spec.versions[0].schema.openAPIV3Schema: Required value')
    schema = Schema(raw_schema, root=True)
    subresources = frozenset((version.get('subresources') or {}).keys())
    if subresources - {'status', 'scale'}:
        raise SchemaError(f'{name}: unknown subresources {sorted(subresources)}')
    columns = version.get('additionalPrinterColumns') or []
    for col in columns:
        if not {'name', 'type', 'jsonPath'} <= set(col):
            raise SchemaError(f'{name}: printer columns need name, type and jsonPath: {col}')
        if not re.match(r'^(\.[A-Za-z0-9_]+)+$', col['jsonPath']):
            raise SchemaError(f'{name}: the emulator only renders simple jsonPaths: '
                              f'{col["jsonPath"]}')
        if col['type'] not in ('integer', 'number', 'string', 'boolean', 'date'):
            raise SchemaError(f'{name}: printer column type {col["type"]!r} is not allowed')
    return ResourceType(
        group=group, version=version['name'], plural=plural, kind=names['kind'],
        namespaced=spec['scope'] == 'Namespaced', singular=names.get('singular', ''),
        short_names=tuple(names.get('shortNames') or ()),
        categories=tuple(names.get('categories') or ()),
        subresources=subresources, generation=True, custom=True, schema=schema,
        printer_columns=list(columns),
    )


# --------------------------------------------------------------------------------------------
# Records.
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class RequestRecord:
    """One request the emulator received (``emu.history``)."""
    method: str
    path: str
    query: dict[str, str]
    status: int | None = None
    verb: str | None = None  # get list watch create update patch delete deletecollection
    plural: str | None = None
    group: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    content_type: str | None = None
    body: Any = None
    user: str | None = None  # with rbac=True: who sent it (authenticated by bearer token)

    def __str__(self) -> str:
        q = ('?' + '&'.join(f'{k}={v}' for k, v in self.query.items())) if self.query else ''
        return f'{self.method} {self.path}{q} -> {self.status}'


@dataclasses.dataclass
class Change:
    """One write, as watchers see it (``emu.changes()``)."""
    rv: int
    key: str  # ResourceType.key
    type: str  # ADDED MODIFIED DELETED
    object: dict
    previous: dict | None

    @property
    def name(self) -> str:
        return self.object['metadata']['name']

    @property
    def namespace(self) -> str | None:
        return self.object['metadata'].get('namespace')


@dataclasses.dataclass
class _Fault:
    verb: str | None
    plural: str | None
    name: str | None
    subresource: str | None
    code: int
    reason: str
    message: str
    times: int


@attrs.define(kw_only=True)
class _KmockBridge(kmock.RawHandler):
    """kmock's request handling in front of the emulator: records kmock.Request objects,
    lets kmock's DSL reactions answer first, and falls back to the emulator."""
    emulator: Any = None

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        return await self.emulator._dispatch(self, raw_request)


# --------------------------------------------------------------------------------------------
# The emulator.
# --------------------------------------------------------------------------------------------

class KubeEmulator:
    """An in-memory Kubernetes API server on 127.0.0.1, served from its own thread.

    Usage (async)::

        async with KubeEmulator(crds=FLEETGRAM_CRDS, namespaces=['fleetgram']) as emu:
            path = emu.kubeconfig(tmp_path / 'kubeconfig')
            kubernetes.config.load_kube_config(config_file=path)

    or ``with KubeEmulator(...) as emu:`` from synchronous code, or the ``kube_emulator``
    pytest fixture of this module.
    """

    def __init__(
        self,
        *,
        crds: Iterable[str | Path] = (),
        namespaces: Iterable[str] = ('default',),
        host: str = '127.0.0.1',
        port: int = 0,
        watch_history: int = 10_000,
        bookmark_interval: float = 20.0,
        deployment_controller: bool = False,
        token: str = 'fleetgram-emulator-token',
        rbac: bool = False,
    ):
        self._lock = threading.RLock()
        # With rbac=True the emulator serves rbac.authorization.k8s.io/v1, authenticates
        # every request by its bearer token (`token` is the admin's, in the group
        # system:masters; service_account_token() mints the others) and authorizes it with
        # the Roles and bindings stored (see rule_allows). Off by default: every request is
        # then allowed, whoever sends it.
        self.rbac = rbac
        self._sa_tokens: dict[str, tuple[str, str]] = {}
        self._authorizations: list[AuthorizationRecord] = []
        self._admission_denials: list[kube_admission.Denial] = []
        self._types: dict[str, ResourceType] = {}
        self._store: dict[str, dict[tuple[str | None, str], dict]] = {}
        self._rv = 0
        self._changes: list[Change] = []
        self._change_rvs: list[int] = []
        self._floor_rv = 0  # changes at or below this RV are forgotten (410 Gone)
        self._watch_history = watch_history
        self._bookmark_interval = bookmark_interval
        self._deployment_controller = deployment_controller
        self._faults: list[_Fault] = []
        self._history: list[RequestRecord] = []
        self._host = host
        self._port = port
        self._token = token
        self._url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopping = False
        self._waiters: set[asyncio.Event] = set()
        self._watch_epoch = 0
        self.kmock: _KmockBridge = _KmockBridge(emulator=self)
        for rt in _builtin_types() + (_rbac_types() if rbac else []):
            self._register(rt)
        for ns in namespaces:
            self.create_namespace(ns)
        if crds:
            self.load_crds(crds)

    # ---------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError('the emulator is not started')
        return self._url

    async def start(self) -> KubeEmulator:
        await asyncio.get_running_loop().run_in_executor(None, self.start_sync)
        return self

    async def stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop_sync)

    def start_sync(self) -> KubeEmulator:
        if self._thread is not None:
            raise RuntimeError('the emulator is already started')
        self._ready.clear()
        self._thread = threading.Thread(target=self._thread_main, name='kube-emulator',
                                        daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._startup_error is not None:
            raise RuntimeError('the emulator failed to start') from self._startup_error
        if self._url is None:
            raise RuntimeError('the emulator did not start in 30 s')
        return self

    def stop_sync(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop, stop_event = self._loop, self._stop_event
        self._stopping = True
        if stop_event is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_event.set)
        self._thread.join(15)
        self._thread = None
        self._url = None

    async def __aenter__(self) -> KubeEmulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> KubeEmulator:
        return self.start_sync()

    def __exit__(self, *exc: object) -> None:
        self.stop_sync()

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve_forever())
        except BaseException as e:  # reported to start_sync()
            self._startup_error = e
            self._ready.set()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _serve_forever(self) -> None:
        self._stop_event = asyncio.Event()
        self._stopping = False
        async with self.kmock:
            server = aiohttp.web.Server(self.kmock)
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
            await runner.setup()
            site = aiohttp.web.TCPSite(runner, self._host, self._port)
            await site.start()
            host, port = runner.addresses[0][:2]
            self._url = f'http://{host}:{port}'
            self._ready.set()
            try:
                await self._stop_event.wait()
            finally:
                self._wake_all()
                await asyncio.sleep(0.05)  # let the watch streams end themselves
                await runner.cleanup()

    # ---------------------------------------------------------------- configuration
    def kubeconfig(self, path: str | os.PathLike, namespace: str = 'default',
                   token: str | None = None) -> str:
        """Write a kubeconfig pointing at the emulator; returns its path as a string. Its
        user is the admin, or whoever `token` stands for (see service_account_token)."""
        config = {
            'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'fleetgram-emulator',
            'clusters': [{'name': 'fleetgram-emulator', 'cluster': {'server': self.url}}],
            'users': [{'name': 'fleetgram-emulator', 'user': {'token': token or self._token}}],
            'contexts': [{'name': 'fleetgram-emulator', 'context': {
                'cluster': 'fleetgram-emulator', 'user': 'fleetgram-emulator',
                'namespace': namespace}}],
            'preferences': {},
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return str(path)

    def connection_info(self, namespace: str = 'default', token: str | None = None,
                        priority: int = 0) -> Any:
        """kopf's ConnectionInfo for a ``@kopf.on.login()`` handler (the admin's, or
        `token`'s; kopf uses the credentials of the highest priority)."""
        import kopf
        return kopf.ConnectionInfo(server=self.url, scheme='Bearer',
                                   token=token or self._token, default_namespace=namespace,
                                   priority=priority)

    # ---------------------------------------------------------------- authentication
    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token for the ServiceAccount `namespace/name` (as a TokenRequest would
        give; opaque here, not a JWT). Requests with it are made as the user
        ``system:serviceaccount:<namespace>:<name>``, in the groups ``system:serviceaccounts``,
        ``system:serviceaccounts:<namespace>`` and ``system:authenticated``; it stops working
        when the ServiceAccount is deleted (401), as bound tokens do."""
        if self.get('serviceaccounts', name, namespace) is None:
            raise _not_found(self.resource_type('serviceaccounts'), name)
        token = f'sa-{uuid.uuid4().hex}'
        with self._lock:
            self._sa_tokens[token] = (namespace, name)
        return token

    def service_account_kubeconfig(self, path: str | os.PathLike, namespace: str,
                                   name: str) -> str:
        """A kubeconfig with a fresh token of the ServiceAccount `namespace/name`."""
        return self.kubeconfig(path, namespace, self.service_account_token(namespace, name))

    def _authenticate(self, raw: aiohttp.web.BaseRequest) -> UserInfo | None:
        """The user of a request, or None for a token nobody issued (401)."""
        header = raw.headers.get('Authorization', '')
        if not header:
            return UserInfo(ANONYMOUS_USER, ('system:unauthenticated',))
        scheme, _, token = header.partition(' ')
        token = token.strip()
        if scheme.lower() != 'bearer':
            return None
        if token == self._token:
            return UserInfo(ADMIN_USER, ('system:masters', 'system:authenticated'))
        with self._lock:
            sa = self._sa_tokens.get(token)
            if sa is None or (sa[0], sa[1]) not in self._store.get('v1/serviceaccounts', {}):
                return None
        namespace, name = sa
        return UserInfo(f'system:serviceaccount:{namespace}:{name}',
                        ('system:serviceaccounts', f'system:serviceaccounts:{namespace}',
                         'system:authenticated'))

    # ---------------------------------------------------------------- authorization
    @property
    def authorizations(self) -> list[AuthorizationRecord]:
        """Every decision of the RBAC authorizer so far (rbac=True), in order."""
        with self._lock:
            return list(self._authorizations)

    def denials(self) -> list[AuthorizationRecord]:
        return [a for a in self.authorizations if not a.allowed]

    def admission_denials(self) -> list[kube_admission.Denial]:
        """Every write a ValidatingAdmissionPolicy denied so far, in order."""
        with self._lock:
            return list(self._admission_denials)

    def take_admission_denials(self) -> list[kube_admission.Denial]:
        """The denials so far, forgotten (a test that meant to be refused takes its own)."""
        with self._lock:
            taken, self._admission_denials = self._admission_denials, []
            return taken

    def _applies_to(self, subject: Mapping[str, Any], user: UserInfo,
                    binding_namespace: str | None) -> bool:
        kind = subject.get('kind')
        if kind == 'ServiceAccount':
            ns = subject.get('namespace') or binding_namespace
            return user.name == f'system:serviceaccount:{ns}:{subject.get("name")}'
        if kind == 'User':
            return user.name == subject.get('name')
        if kind == 'Group':
            return subject.get('name') in user.groups
        return False

    def _rules_for(self, user: UserInfo,
                   namespace: str | None) -> Iterator[tuple[dict, str]]:
        """The rules granted to `user` for a request in `namespace` (None: cluster scope), each
        with the role and binding granting it. A RoleBinding grants its Role (same namespace)
        or a ClusterRole within its own namespace only; a ClusterRoleBinding grants a
        ClusterRole everywhere (https://kubernetes.io/docs/reference/access-authn-authz/rbac/
        #rolebinding-and-clusterrolebinding)."""
        with self._lock:
            store = self._store
            bindings = [(b, None) for b in
                        store.get(f'{RBAC_GROUP}/v1/clusterrolebindings', {}).values()]
            if namespace is not None:
                bindings += [(b, namespace) for (ns, _), b in
                             store.get(f'{RBAC_GROUP}/v1/rolebindings', {}).items()
                             if ns == namespace]
            for binding, ns in bindings:
                if not any(self._applies_to(s, user, ns) for s in binding.get('subjects') or []):
                    continue
                ref = binding.get('roleRef') or {}
                if ref.get('kind') == 'Role' and ns is not None:
                    role = store.get(f'{RBAC_GROUP}/v1/roles', {}).get((ns, ref.get('name')))
                elif ref.get('kind') == 'ClusterRole':
                    role = store.get(f'{RBAC_GROUP}/v1/clusterroles', {}).get(
                        (None, ref.get('name')))
                else:
                    role = None
                if role is None:
                    continue
                where = f'{ns}/' if ns else ''
                by = (f'{ref["kind"]} {where}{ref["name"]} via {binding["kind"]} '
                      f'{where}{binding["metadata"]["name"]}')
                for rule in role.get('rules') or []:
                    yield rule, by

    def _authorize(self, user: UserInfo, record: RequestRecord, route: Mapping[str, Any],
                   params: Mapping[str, str]) -> None:
        """Raise the API server's 401/403 unless `user` may make this request."""
        if 'system:masters' in user.groups:
            return
        if route.get('kind') != 'resource':
            # Discovery and /version: the system:discovery and system:public-info-viewer
            # ClusterRoles every authenticated user has.
            if 'system:authenticated' in user.groups or route.get('kind') == 'version':
                return
            raise ApiError(403, 'Forbidden', f'forbidden: User "{user.name}" cannot get path '
                           f'"{record.path}"')
        verb = record.verb
        if verb is None:
            return  # answered 405 by the server
        group, resource = route.get('group', ''), route.get('plural') or ''
        sub, ns, name = route.get('subresource'), route.get('namespace'), route.get('name')
        if verb in ('list', 'watch') and name is None:
            # A list or watch of one object by `fieldSelector=metadata.name=<name>` is
            # authorized with that name, so resourceNames can allow it.
            fields = [f.strip() for f in params.get('fieldSelector', '').split(',') if f.strip()]
            for field in fields:
                key, _, value = field.replace('==', '=').partition('=')
                if key == 'metadata.name':
                    name = value
        allowed_by = next((by for rule, by in self._rules_for(user, ns)
                           if rule_allows(rule, verb, group, resource, sub, name)), None)
        with self._lock:
            self._authorizations.append(AuthorizationRecord(
                user=user.name, verb=verb, group=group, resource=resource, subresource=sub,
                namespace=ns, name=name, allowed=allowed_by is not None,
                by=allowed_by or 'no rule'))
        if allowed_by is None:
            raise _forbidden(user.name, verb, group, resource, sub, ns, name)

    def load_crds(self, paths: Iterable[str | os.PathLike] | str | os.PathLike) -> list[str]:
        """Register CRDs from YAML files (as if applied); returns their names."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        names = []
        for path in paths:
            for doc in yaml.safe_load_all(Path(path).read_text()):
                if not doc:
                    continue
                if doc.get('kind') != 'CustomResourceDefinition':
                    raise SchemaError(f'{path}: not a CustomResourceDefinition: {doc.get("kind")}')
                rt = self._types['apiextensions.k8s.io/v1/customresourcedefinitions']
                name = doc['metadata']['name']
                with self._lock:
                    if (None, name) in self._store[rt.key]:  # re-applied: an update
                        self._update(rt, None, name, copy.deepcopy(doc), None,
                                     precondition_rv=None, require_rv=False)
                    else:
                        self.create(doc)
                names.append(name)
        return names

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> dict:
        return self.create({'apiVersion': 'v1', 'kind': 'Namespace',
                            'metadata': {'name': name, 'labels': dict(labels or {})}})

    # ---------------------------------------------------------------- test-side access
    @property
    def history(self) -> list[RequestRecord]:
        """Every request received so far, in order."""
        with self._lock:
            return list(self._history)

    def clear_history(self) -> None:
        with self._lock:
            self._history.clear()
            self._authorizations.clear()

    def requests(self, verb: str | None = None, plural: str | None = None,
                 name: str | None = None, subresource: str | None = None,
                 method: str | None = None) -> list[RequestRecord]:
        """History entries matching all the given filters."""
        return [r for r in self.history
                if (verb is None or r.verb == verb) and (plural is None or r.plural == plural)
                and (name is None or r.name == name)
                and (subresource is None or r.subresource == subresource)
                and (method is None or r.method == method.upper())]

    def used_permissions(self, user: str | None = None) -> set[tuple[str, str, str, str | None]]:
        """What the requests so far needed from RBAC: (apiGroup, resource[/subresource], verb,
        namespace or None for a cluster-scoped request), of `user` only if given (rbac=True).
        Discovery is left out (every authenticated user may read it)."""
        used = set()
        for r in self.history:
            if user is not None and r.user != user:
                continue
            if r.verb is None or r.plural is None or r.group is None:
                continue
            resource = f'{r.plural}/{r.subresource}' if r.subresource else r.plural
            used.add((r.group, resource, r.verb, r.namespace))
        return used

    @property
    def resource_version(self) -> int:
        return self._rv

    def resource_types(self) -> list[ResourceType]:
        """Every resource served: the built-in ones and the CRDs'."""
        with self._lock:
            return list(self._types.values())

    def resource_type(self, kind_plural: str) -> ResourceType:
        """Look up by plural, kind, short name, ``plural.group`` or ``group/version/plural``."""
        with self._lock:
            if kind_plural in self._types:
                return self._types[kind_plural]
            hits = [rt for rt in self._types.values()
                    if kind_plural in (rt.plural, rt.kind, rt.qualified, *rt.short_names)]
        if len(hits) != 1:
            raise KeyError(f'{"ambiguous" if hits else "unknown"} resource {kind_plural!r}')
        return hits[0]

    def objects(self, kind_plural: str, namespace: str | None = None) -> list[dict]:
        """Current objects (deep copies), sorted by namespace and name; all namespaces
        when ``namespace`` is None."""
        rt = self.resource_type(kind_plural)
        with self._lock:
            items = [obj for (ns, _), obj in sorted(self._store[rt.key].items(),
                                                    key=lambda kv: (kv[0][0] or '', kv[0][1]))
                     if namespace is None or ns == namespace]
            return copy.deepcopy(items)

    def get(self, kind_plural: str, name: str, namespace: str | None = None) -> dict | None:
        """One current object (a deep copy), or None."""
        rt = self.resource_type(kind_plural)
        if rt.namespaced and namespace is None:
            namespace = 'default'
        with self._lock:
            obj = self._store[rt.key].get((namespace if rt.namespaced else None, name))
            return copy.deepcopy(obj)

    def create(self, obj: dict, namespace: str | None = None) -> dict:
        """Create an object directly (same admission as over HTTP: validation, defaults...)."""
        rt = self._type_of(obj)
        ns = namespace or obj.get('metadata', {}).get('namespace') or (
            'default' if rt.namespaced else None)
        with self._lock:
            created, _ = self._create(rt, ns, copy.deepcopy(obj))
            return copy.deepcopy(created)

    def patch(self, kind_plural: str, name: str, patch: dict, namespace: str | None = None,
              subresource: str | None = None) -> dict:
        """Merge-patch an object directly (``subresource='status'`` for its status)."""
        rt = self.resource_type(kind_plural)
        ns = (namespace or 'default') if rt.namespaced else None
        with self._lock:
            obj, _ = self._patch(rt, ns, name, patch, 'application/merge-patch+json',
                                 subresource, {})
            return copy.deepcopy(obj)

    def delete(self, kind_plural: str, name: str, namespace: str | None = None) -> None:
        rt = self.resource_type(kind_plural)
        ns = (namespace or 'default') if rt.namespaced else None
        with self._lock:
            self._delete(rt, ns, name, {})

    def changes(self, kind_plural: str | None = None, name: str | None = None) -> list[Change]:
        """The remembered writes (what watches replay), oldest first."""
        key = self.resource_type(kind_plural).key if kind_plural else None
        with self._lock:
            return [c for c in self._changes
                    if (key is None or c.key == key) and (name is None or c.name == name)]

    def inject_fault(self, *, verb: str | None = None, plural: str | None = None,
                     name: str | None = None, subresource: str | None = None,
                     code: int = 500, reason: str = 'InternalError',
                     message: str = 'injected by the test', times: int = 1) -> None:
        """Answer the next ``times`` matching requests with an error Status."""
        with self._lock:
            self._faults.append(_Fault(verb, plural, name, subresource, code, reason, message,
                                       times))

    def compact(self) -> int:
        """Forget all remembered changes: a watch from an older resourceVersion gets 410."""
        with self._lock:
            self._floor_rv = self._rv
            self._changes.clear()
            self._change_rvs.clear()
            return self._rv

    def close_watches(self) -> None:
        """End every open watch stream (clients must reconnect from their last RV)."""
        with self._lock:
            self._watch_epoch += 1
        self._notify()

    async def wait_for(self, predicate: Callable[[], Any], seconds: float = 10.0,
                       interval: float = 0.05) -> Any:
        """Poll ``predicate`` until truthy (real time, not loop time); returns its value."""
        deadline = time.monotonic() + seconds
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f'condition not met in {seconds} s')
            await asyncio.sleep(interval)

    def wait_for_sync(self, predicate: Callable[[], Any], seconds: float = 10.0,
                      interval: float = 0.05) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f'condition not met in {seconds} s')
            time.sleep(interval)

    # ---------------------------------------------------------------- registry
    def _register(self, rt: ResourceType) -> None:
        with self._lock:
            self._types[rt.key] = rt
            self._store.setdefault(rt.key, {})

    def _type_of(self, obj: dict) -> ResourceType:
        api_version, kind = obj.get('apiVersion'), obj.get('kind')
        with self._lock:
            for rt in self._types.values():
                if rt.api_version == api_version and rt.kind == kind:
                    return rt
        raise KeyError(f'no resource for apiVersion={api_version!r} kind={kind!r}')

    def _find_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get(f'{group}/{version}/{plural}' if group else f'{version}/{plural}')

    def _remove_crd_type(self, crd: dict) -> None:
        try:
            rt = _crd_to_type(crd)
        except SchemaError:
            return
        for obj in list(self._store.get(rt.key, {}).values()):
            self._delete_now(rt, obj)
        self._types.pop(rt.key, None)
        self._store.pop(rt.key, None)

    # ---------------------------------------------------------------- writes (under the lock)
    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record_change(self, rt: ResourceType, type_: str, obj: dict, prev: dict | None) -> None:
        self._changes.append(Change(int(obj['metadata']['resourceVersion']), rt.key, type_, obj,
                                    prev))
        self._change_rvs.append(self._changes[-1].rv)
        if len(self._changes) > self._watch_history:
            drop = len(self._changes) - self._watch_history
            self._floor_rv = self._changes[drop - 1].rv
            del self._changes[:drop]
            del self._change_rvs[:drop]
        self._notify()

    def _notify(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for ev in list(self._waiters):
            ev.set()

    def _check_namespace(self, rt: ResourceType, ns: str | None, creating: bool) -> None:
        if not rt.namespaced:
            return
        nsobj = self._store['v1/namespaces'].get((None, ns or ''))
        if nsobj is None:
            raise ApiError(404, 'NotFound', f'namespaces "{ns}" not found',
                           {'name': ns, 'kind': 'namespaces'})
        if creating and nsobj['metadata'].get('deletionTimestamp'):
            raise ApiError(403, 'Forbidden', f'{rt.qualified} is forbidden: unable to create new '
                           f'content in namespace {ns} because it is being terminated',
                           {'kind': rt.plural})

    def _normalize(self, rt: ResourceType, obj: dict, name: str | None,
                   warnings: list[str]) -> None:
        """Type-level checks and conversions shared by create and update."""
        meta = obj['metadata']
        for key in list(meta):
            if key not in _META_FIELDS:
                warnings.append(f'unknown field "metadata.{key}"')
                del meta[key]
        for field in ('labels', 'annotations'):
            value = meta.get(field)
            if value is None:
                meta.pop(field, None)
                continue
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise _bad_request(f'json: cannot unmarshal into Go struct field ObjectMeta.'
                                   f'metadata.{field} of type map[string]string')
        causes = []
        for key, value in (meta.get('labels') or {}).items():
            keyname = key.rsplit('/', 1)[-1]
            if len(keyname) > 63 or not _LABEL_NAME.match(keyname):
                causes.append(Cause('metadata.labels', 'FieldValueInvalid',
                                    f'Invalid value: "{key}": name part must consist of '
                                    'alphanumeric characters, \'-\', \'_\' or \'.\', and must '
                                    'start and end with an alphanumeric character'))
            if len(value) > 63 or not _LABEL_VALUE.match(value):
                causes.append(Cause('metadata.labels', 'FieldValueInvalid',
                                    f'Invalid value: "{value}": a valid label must be an empty '
                                    'string or consist of alphanumeric characters, \'-\', \'_\' '
                                    'or \'.\', and must start and end with an alphanumeric '
                                    'character'))
        fins = meta.get('finalizers')
        if fins is not None and (not isinstance(fins, list)
                                 or not all(isinstance(f, str) for f in fins)):
            raise _bad_request('metadata.finalizers must be a list of strings')
        for i, ref in enumerate(meta.get('ownerReferences') or []):
            for req in ('apiVersion', 'kind', 'name', 'uid'):
                if not isinstance(ref, dict) or not ref.get(req):
                    causes.append(Cause(f'metadata.ownerReferences[{i}].{req}',
                                        'FieldValueRequired', 'Required value'))
        if causes:
            raise _invalid(rt, name, causes)
        if rt.key == 'v1/secrets':
            data = dict(obj.get('data') or {})
            for k, v in data.items():
                try:
                    base64.b64decode(v, validate=True)
                except (ValueError, TypeError):
                    raise _bad_request(f'illegal base64 data in Secret.data[{k}]') from None
            for k, v in (obj.pop('stringData', None) or {}).items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            if data:
                obj['data'] = data
            obj.setdefault('type', 'Opaque')
        if rt.key == 'apps/v1/deployments':
            self._check_deployment(rt, obj, name)
        if rt.key == 'v1/persistentvolumeclaims':
            self._check_claim(rt, obj, name)

    def _check_claim(self, rt: ResourceType, obj: dict, name: str | None) -> None:
        """What the API server requires of a PVC (no binding: claims stay Pending)."""
        spec = obj.setdefault('spec', {})
        spec.setdefault('volumeMode', 'Filesystem')
        causes = []
        if not spec.get('accessModes'):
            causes.append(Cause('spec.accessModes', 'FieldValueRequired',
                                'Required value: at least 1 access mode is required'))
        if not ((spec.get('resources') or {}).get('requests') or {}).get('storage'):
            causes.append(Cause('spec.resources[storage]', 'FieldValueRequired',
                                'Required value'))
        if causes:
            raise _invalid(rt, name, causes)

    def _check_deployment(self, rt: ResourceType, obj: dict, name: str | None) -> None:
        spec = obj.setdefault('spec', {})
        spec.setdefault('replicas', 1)
        spec.setdefault('revisionHistoryLimit', 10)
        spec.setdefault('progressDeadlineSeconds', 600)
        spec.setdefault('strategy', {'type': 'RollingUpdate', 'rollingUpdate': {
            'maxSurge': '25%', 'maxUnavailable': '25%'}})
        causes = []
        selector = (spec.get('selector') or {}).get('matchLabels')
        tmpl_labels = ((spec.get('template') or {}).get('metadata') or {}).get('labels') or {}
        if not spec.get('selector'):
            causes.append(Cause('spec.selector', 'FieldValueRequired', 'Required value'))
        elif selector and not all(tmpl_labels.get(k) == v for k, v in selector.items()):
            causes.append(Cause('spec.template.metadata.labels', 'FieldValueInvalid',
                                f'Invalid value: {json.dumps(tmpl_labels)}: `selector` does not '
                                'match template `labels`'))
        containers = ((spec.get('template') or {}).get('spec') or {}).get('containers')
        if not containers:
            causes.append(Cause('spec.template.spec.containers', 'FieldValueRequired',
                                'Required value'))
        for i, c in enumerate(containers or []):
            for req in ('name', 'image'):
                if not isinstance(c, dict) or not c.get(req):
                    causes.append(Cause(f'spec.template.spec.containers[{i}].{req}',
                                        'FieldValueRequired', 'Required value'))
        if not isinstance(spec.get('replicas'), int) or spec['replicas'] < 0:
            causes.append(Cause('spec.replicas', 'FieldValueInvalid',
                                f'Invalid value: {spec.get("replicas")}: must be greater than '
                                'or equal to 0'))
        if causes:
            raise _invalid(rt, name, causes)

    def _admit_schema(self, rt: ResourceType, obj: dict, old: dict | None, name: str | None,
                      warnings: list[str], field_validation: str) -> None:
        if rt.schema is None:
            return
        rt.schema.apply_defaults(obj)
        unknown: list[str] = []
        rt.schema.prune(obj, '', unknown, root=True)
        if unknown:
            if field_validation == 'Strict':
                raise _bad_request('strict decoding error: ' + ', '.join(
                    f'unknown field "{u}"' for u in unknown))
            if field_validation != 'Ignore':
                warnings.extend(f'unknown field "{u}"' for u in unknown)
        causes = rt.schema.validate(obj, '', old, old is not None, root=True)
        if causes:
            raise _invalid(rt, name, causes)

    def _admit_policies(self, rt: ResourceType, operation: str, subresource: str | None,
                        ns: str | None, name: str, obj: dict | None, old: dict | None) -> None:
        """ValidatingAdmissionPolicy (see kube_admission), for requests of an authenticated
        user (rbac=True); the emulator's own calls are not admission-checked."""
        user = _REQUEST_USER.get()
        if user is None or not self.rbac:
            return
        policies = list(self._store.get(
            f'{ADMISSION_GROUP}/v1/validatingadmissionpolicies', {}).values())
        if not policies:
            return
        bindings = list(self._store.get(
            f'{ADMISSION_GROUP}/v1/validatingadmissionpolicybindings', {}).values())
        namespace_obj = self._store['v1/namespaces'].get((None, ns)) if ns else None
        request = kube_admission.AdmissionRequest(
            operation=operation, group=rt.group, version=rt.version, resource=rt.plural,
            subresource=subresource, namespace=ns, name=name, username=user.name,
            groups=user.groups, obj=copy.deepcopy(obj), old=copy.deepcopy(old),
            namespace_labels=((namespace_obj or {}).get('metadata') or {}).get('labels'))
        denial = kube_admission.admit(policies, bindings, request)
        if denial is not None:
            with self._lock:
                self._admission_denials.append(denial)
            raise ApiError(denial.code, denial.reason, denial.message, _details(rt, name))

    def _create(self, rt: ResourceType, ns: str | None, body: Any, *, dry_run: bool = False,
                field_validation: str = 'Warn') -> tuple[dict, list[str]]:
        if not isinstance(body, dict):
            raise _bad_request('the body of the request was in an unknown format')
        warnings: list[str] = []
        obj = copy.deepcopy(body)
        if obj.get('apiVersion', rt.api_version) != rt.api_version or \
                obj.get('kind', rt.kind) != rt.kind:
            raise _bad_request(f'the API version in the data ({obj.get("apiVersion")}) does not '
                               f'match the expected API version ({rt.api_version})'
                               if obj.get('apiVersion', rt.api_version) != rt.api_version else
                               f'the kind in the data ({obj.get("kind")}) does not match the '
                               f'expected kind ({rt.kind})')
        obj['apiVersion'], obj['kind'] = rt.api_version, rt.kind
        meta = obj.get('metadata')
        if meta is None:
            meta = obj['metadata'] = {}
        if not isinstance(meta, dict):
            raise _bad_request('metadata must be an object')
        if rt.namespaced:
            if meta.get('namespace') not in (None, '', ns):
                raise _bad_request('the namespace of the provided object does not match the '
                                   'namespace sent on the request')
            meta['namespace'] = ns
        else:
            meta.pop('namespace', None)
        if meta.get('resourceVersion'):
            raise _bad_request('resourceVersion should not be set on objects to be created')
        self._check_namespace(rt, ns, creating=True)
        name = meta.get('name')
        if not name:
            prefix = meta.get('generateName')
            if not prefix:
                raise _invalid(rt, None, [Cause('metadata.name', 'FieldValueRequired',
                                                'Required value: name or generateName is '
                                                'required')])
            for _ in range(100):
                name = prefix[:58] + ''.join(random.choices(_GENERATE_CHARS, k=5))
                if (ns if rt.namespaced else None, name) not in self._store[rt.key]:
                    break
            meta['name'] = name
        self._check_name(rt, name)
        for key in ('uid', 'creationTimestamp', 'deletionTimestamp',
                    'deletionGracePeriodSeconds', 'generation'):
            meta.pop(key, None)
        self._normalize(rt, obj, name, warnings)
        if rt.custom and 'status' in rt.subresources:
            obj.pop('status', None)
        if rt.key == 'apps/v1/deployments':
            obj.pop('status', None)
        if rt.key == 'v1/namespaces':
            obj['spec'] = {'finalizers': ['kubernetes']}
            obj['status'] = {'phase': 'Active'}
            meta.setdefault('labels', {})['kubernetes.io/metadata.name'] = name
        self._admit_schema(rt, obj, None, name, warnings, field_validation)
        self._admit_policies(rt, 'CREATE', None, ns, name, obj, None)
        if rt.key == 'apiextensions.k8s.io/v1/customresourcedefinitions':
            try:
                new_type = _crd_to_type(obj)
            except SchemaError as e:
                raise _invalid(rt, name, [Cause('spec', 'FieldValueInvalid', str(e))]) from None
            if new_type.key in self._types and not self._types[new_type.key].custom:
                raise _invalid(rt, name, [Cause('spec.names.plural', 'FieldValueInvalid',
                                                'conflicts with a built-in resource')])
        key = (ns if rt.namespaced else None, name)
        if key in self._store[rt.key]:
            raise ApiError(409, 'AlreadyExists', f'{rt.qualified} "{name}" already exists',
                           _details(rt, name))
        meta['uid'] = str(uuid.uuid4())
        meta['creationTimestamp'] = _now()
        if rt.generation:
            meta['generation'] = 1
        _strip_empty_meta(meta)
        if dry_run:
            meta['resourceVersion'] = str(self._rv)
            return obj, warnings
        meta['resourceVersion'] = str(self._next_rv())
        self._store[rt.key][key] = obj
        self._record_change(rt, 'ADDED', obj, None)
        if rt.key == 'apiextensions.k8s.io/v1/customresourcedefinitions':
            self._register(new_type)
            self._set_crd_established(rt, obj)
        if rt.key == 'apps/v1/deployments' and self._deployment_controller:
            self._reconcile_deployment(rt, obj)  # a later write, as a controller's would be
        return obj, warnings

    def _check_name(self, rt: ResourceType, name: str) -> None:
        if rt.key == 'v1/namespaces':
            ok, what = len(name) <= 63 and bool(_DNS1123_LABEL.match(name)), 'RFC 1123 label'
        else:
            ok = len(name) <= 253 and bool(_DNS1123_SUBDOMAIN.match(name))
            what = 'RFC 1123 subdomain'
        if not ok:
            raise _invalid(rt, name, [Cause(
                'metadata.name', 'FieldValueInvalid',
                f'Invalid value: "{name}": a lowercase {what} must consist of lower case '
                'alphanumeric characters, \'-\' or \'.\', and must start and end with an '
                'alphanumeric character')])

    def _set_crd_established(self, rt: ResourceType, crd: dict) -> None:
        new = copy.deepcopy(crd)
        now = _now()
        new['status'] = {
            'acceptedNames': copy.deepcopy(crd['spec']['names']),
            'storedVersions': [v['name'] for v in crd['spec']['versions'] if v.get('storage')],
            'conditions': [
                {'type': 'NamesAccepted', 'status': 'True', 'reason': 'NoConflicts',
                 'message': 'no conflicts found', 'lastTransitionTime': now},
                {'type': 'Established', 'status': 'True', 'reason': 'InitialNamesAccepted',
                 'message': 'the initial names have been accepted', 'lastTransitionTime': now},
            ],
        }
        self._write(rt, crd, new)

    def _write(self, rt: ResourceType, old: dict, new: dict) -> dict:
        new['metadata']['resourceVersion'] = str(self._next_rv())
        key = (new['metadata'].get('namespace') if rt.namespaced else None,
               new['metadata']['name'])
        self._store[rt.key][key] = new
        self._record_change(rt, 'MODIFIED', new, old)
        return new

    def _get_existing(self, rt: ResourceType, ns: str | None, name: str) -> dict:
        obj = self._store[rt.key].get((ns if rt.namespaced else None, name))
        if obj is None:
            raise _not_found(rt, name)
        return obj

    def _update(self, rt: ResourceType, ns: str | None, name: str, body: Any,
                subresource: str | None, *, precondition_rv: str | None,
                require_rv: bool, dry_run: bool = False,
                field_validation: str = 'Warn') -> tuple[dict, list[str]]:
        """The shared tail of PUT and PATCH: ``body`` is the full candidate object."""
        if not isinstance(body, dict):
            raise _bad_request('the body of the request was in an unknown format')
        old = self._get_existing(rt, ns, name)
        warnings: list[str] = []
        if subresource not in (None, 'status'):
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource')
        if subresource == 'status' and 'status' not in rt.subresources:
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource')
        meta_in = body.get('metadata') if isinstance(body.get('metadata'), dict) else {}
        if meta_in.get('name') not in (None, name):
            raise _bad_request(f'the name of the object ({meta_in.get("name")}) does not match '
                               f'the name on the URL ({name})')
        if rt.namespaced and meta_in.get('namespace') not in (None, '', ns):
            raise _bad_request('the namespace of the provided object does not match the '
                               'namespace sent on the request')
        if body.get('apiVersion', rt.api_version) != rt.api_version or \
                body.get('kind', rt.kind) != rt.kind:
            raise _bad_request(f'the kind or API version in the data ({body.get("kind")}, '
                               f'{body.get("apiVersion")}) does not match the expected '
                               f'{rt.kind}, {rt.api_version}')
        current_rv = old['metadata']['resourceVersion']
        if precondition_rv is None and require_rv:
            raise _invalid(rt, name, [Cause('metadata.resourceVersion', 'FieldValueInvalid',
                                            'Invalid value: 0x0: must be specified for an '
                                            'update')])
        if precondition_rv is not None and precondition_rv != current_rv:
            raise _conflict(rt, name)
        if meta_in.get('uid') not in (None, '', old['metadata']['uid']):
            raise _conflict(rt, name, f'Precondition failed: UID in precondition: '
                            f'{old["metadata"]["uid"]}, UID in object meta: {meta_in.get("uid")}')

        if subresource == 'status':
            new = copy.deepcopy(old)
            if 'status' in body:
                new['status'] = copy.deepcopy(body['status'])
            else:
                new.pop('status', None)
        else:
            new = copy.deepcopy(body)
            new['apiVersion'], new['kind'] = rt.api_version, rt.kind
            meta = new.setdefault('metadata', {})
            if not isinstance(meta, dict):
                raise _bad_request('metadata must be an object')
            for key in ('name', 'namespace', 'uid', 'creationTimestamp', 'deletionTimestamp',
                        'deletionGracePeriodSeconds', 'generation', 'generateName'):
                if key in old['metadata']:
                    meta[key] = old['metadata'][key]
                else:
                    meta.pop(key, None)
            if 'status' in rt.subresources:
                if 'status' in old:
                    new['status'] = copy.deepcopy(old['status'])
                else:
                    new.pop('status', None)
            if rt.key == 'v1/namespaces':
                new['spec'] = copy.deepcopy(old.get('spec'))
                new['status'] = copy.deepcopy(old.get('status'))
            self._normalize(rt, new, name, warnings)
            if old['metadata'].get('deletionTimestamp'):
                added = set(meta.get('finalizers') or []) - set(
                    old['metadata'].get('finalizers') or [])
                if added:
                    raise _invalid(rt, name, [Cause(
                        'metadata.finalizers', 'FieldValueForbidden',
                        f'Forbidden: no new finalizers can be added if the object is being '
                        f'deleted, found new finalizers {json.dumps(sorted(added))}')])
        new['metadata']['resourceVersion'] = current_rv
        self._admit_schema(rt, new, old, name, warnings, field_validation)
        self._admit_policies(rt, 'UPDATE', subresource, ns, name, new, old)
        if rt.key == 'apiextensions.k8s.io/v1/customresourcedefinitions' and subresource is None:
            try:
                new_type = _crd_to_type(new)
            except SchemaError as e:
                raise _invalid(rt, name, [Cause('spec', 'FieldValueInvalid', str(e))]) from None
        _strip_empty_meta(new['metadata'])
        if rt.generation and subresource is None:
            def spec_of(o: dict) -> dict:
                return {k: v for k, v in o.items()
                        if k not in ('metadata', 'status', 'apiVersion', 'kind')}
            if spec_of(new) != spec_of(old):
                new['metadata']['generation'] = old['metadata'].get('generation', 1) + 1
        if new == old:  # a no-op write: no new resourceVersion, no watch event
            return old, warnings
        if dry_run:
            return new, warnings
        if new['metadata'].get('deletionTimestamp') and not new['metadata'].get('finalizers'):
            # The last finalizer is gone: the object is deleted by this very write. As for
            # real, the response keeps the old resourceVersion and watchers see only DELETED.
            self._delete_now(rt, old, final=new)
            return new, warnings
        written = self._write(rt, old, new)
        if rt.key == 'apiextensions.k8s.io/v1/customresourcedefinitions' and subresource is None:
            self._register(new_type)
        if rt.key == 'apps/v1/deployments' and self._deployment_controller \
                and subresource is None:
            written = self._reconcile_deployment(rt, written)
        return written, warnings

    def _reconcile_deployment(self, rt: ResourceType, dep: dict) -> dict:
        """An optional stand-in for the deployment controller: all replicas ready at once."""
        replicas = dep['spec'].get('replicas', 1)
        status = {
            'observedGeneration': dep['metadata'].get('generation', 1),
            'replicas': replicas, 'updatedReplicas': replicas, 'readyReplicas': replicas,
            'availableReplicas': replicas,
            'conditions': [{'type': 'Available', 'status': 'True',
                            'reason': 'MinimumReplicasAvailable',
                            'message': 'Deployment has minimum availability.',
                            'lastTransitionTime': _now(), 'lastUpdateTime': _now()}],
        }
        if replicas == 0:
            for k in ('readyReplicas', 'availableReplicas', 'updatedReplicas', 'replicas'):
                status.pop(k)
        new = copy.deepcopy(dep)
        new['status'] = status
        return self._write(rt, dep, new)

    def _replace(self, rt: ResourceType, ns: str | None, name: str, body: Any,
                 subresource: str | None, params: Mapping[str, str]) -> tuple[dict, list[str]]:
        if not isinstance(body, dict):
            raise _bad_request('the body of the request was in an unknown format')
        rv = (body.get('metadata') or {}).get('resourceVersion') or None
        return self._update(rt, ns, name, body, subresource, precondition_rv=rv,
                            require_rv=rt.custom, dry_run=params.get('dryRun') == 'All',
                            field_validation=params.get('fieldValidation', 'Warn'))

    def _patch(self, rt: ResourceType, ns: str | None, name: str, patch: Any,
               content_type: str, subresource: str | None,
               params: Mapping[str, str]) -> tuple[dict, list[str]]:
        ctype = (content_type or '').split(';')[0].strip().lower()
        dry_run = params.get('dryRun') == 'All'
        fv = params.get('fieldValidation', 'Warn')
        if ctype == 'application/apply-patch+yaml':
            if not params.get('fieldManager'):
                raise ApiError(422, 'Invalid', 'PatchOptions.meta.k8s.io "" is invalid: '
                               'fieldManager: Required value: is required for apply patch')
            if not isinstance(patch, dict):
                raise _bad_request('the apply patch must be an object')
            key = (ns if rt.namespaced else None, name)
            if key not in self._store[rt.key] and subresource is None:
                return self._create(rt, ns, patch, dry_run=dry_run, field_validation=fv)
            old = self._get_existing(rt, ns, name)
            candidate = merge_patch(old, patch)
        else:
            old = self._get_existing(rt, ns, name)
            if ctype == 'application/merge-patch+json':
                if not isinstance(patch, dict):
                    raise _bad_request('a merge patch must be a JSON object')
                candidate = merge_patch(old, patch)
            elif ctype == 'application/strategic-merge-patch+json':
                if rt.custom:
                    raise ApiError(415, 'UnsupportedMediaType',
                                   'the body of the request was in an unknown format - accepted '
                                   'media types include: application/json-patch+json, '
                                   'application/merge-patch+json, application/apply-patch+yaml')
                if not isinstance(patch, dict):
                    raise _bad_request('a strategic merge patch must be a JSON object')
                candidate = strategic_merge_patch(old, patch)
            elif ctype == 'application/json-patch+json':
                try:
                    candidate = json_patch(old, patch)
                except ValueError as e:
                    raise ApiError(422, 'Invalid', f'the server rejected our request due to an '
                                   f'error in our request: {e}') from None
            else:
                raise ApiError(415, 'UnsupportedMediaType',
                               f'the body of the request was in an unknown format - accepted '
                               f'media types include: application/json-patch+json, '
                               f'application/merge-patch+json, application/apply-patch+yaml '
                               f'(got {ctype!r})')
        if not isinstance(candidate, dict):
            raise _bad_request('the patched object is not an object')
        # A resourceVersion carried by the patch is a precondition; otherwise unconditional.
        patch_rv = None
        if isinstance(patch, dict):
            patch_rv = (patch.get('metadata') or {}).get('resourceVersion') or None
        elif isinstance(patch, list):
            current = old['metadata']['resourceVersion']
            after = (candidate.get('metadata') or {}).get('resourceVersion')
            patch_rv = after if after != current else None
        if patch_rv is not None:
            candidate.setdefault('metadata', {})['resourceVersion'] = patch_rv
        return self._update(rt, ns, name, candidate, subresource, precondition_rv=patch_rv,
                            require_rv=False, dry_run=dry_run, field_validation=fv)

    def _delete(self, rt: ResourceType, ns: str | None, name: str,
                options: Mapping[str, Any]) -> tuple[int, dict]:
        obj = self._get_existing(rt, ns, name)
        pre = options.get('preconditions') or {}
        if pre.get('resourceVersion') and pre['resourceVersion'] != obj['metadata'][
                'resourceVersion']:
            raise _conflict(rt, name, f'Precondition failed: ResourceVersion in precondition: '
                            f'{pre["resourceVersion"]}, ResourceVersion in object meta: '
                            f'{obj["metadata"]["resourceVersion"]}')
        if pre.get('uid') and pre['uid'] != obj['metadata']['uid']:
            raise _conflict(rt, name, f'Precondition failed: UID in precondition: {pre["uid"]}, '
                            f'UID in object meta: {obj["metadata"]["uid"]}')
        if options.get('dryRun') in ('All', ['All']):
            return 200, obj
        policy = options.get('propagationPolicy') or 'Background'
        if rt.key == 'v1/namespaces':
            return 202, self._delete_namespace(rt, obj)
        if obj['metadata'].get('finalizers'):
            if obj['metadata'].get('deletionTimestamp'):
                return 202, obj
            new = copy.deepcopy(obj)
            new['metadata']['deletionTimestamp'] = _now()
            new['metadata']['deletionGracePeriodSeconds'] = 0
            if policy == 'Orphan':
                self._orphan(obj['metadata']['uid'])
            return 202, self._write(rt, obj, new)
        if policy == 'Orphan':
            self._orphan(obj['metadata']['uid'])
        return 200, self._delete_now(rt, obj)

    def _delete_now(self, rt: ResourceType, obj: dict, final: dict | None = None) -> dict:
        """Remove from storage, emit DELETED, collect garbage (dependents)."""
        key = (obj['metadata'].get('namespace') if rt.namespaced else None,
               obj['metadata']['name'])
        if self._store.get(rt.key, {}).get(key) is None:
            return obj
        del self._store[rt.key][key]
        gone = copy.deepcopy(final if final is not None else obj)
        gone['metadata']['resourceVersion'] = str(self._next_rv())
        self._record_change(rt, 'DELETED', gone, obj)
        if rt.key == 'apiextensions.k8s.io/v1/customresourcedefinitions':
            self._remove_crd_type(obj)
        self._collect_garbage(obj['metadata']['uid'])
        if rt.namespaced:
            self._maybe_finish_namespace(obj['metadata'].get('namespace'))
        return gone

    def _collect_garbage(self, owner_uid: str) -> None:
        live_uids = None
        for key, objs in list(self._store.items()):
            rt = self._types.get(key)
            if rt is None:
                continue
            for obj in list(objs.values()):
                refs = obj['metadata'].get('ownerReferences') or []
                if not any(r.get('uid') == owner_uid for r in refs):
                    continue
                if live_uids is None:
                    live_uids = {o['metadata']['uid'] for s in self._store.values()
                                 for o in s.values()}
                if any(r.get('uid') in live_uids for r in refs):
                    continue  # another owner is still alive
                current = self._store[key].get(
                    (obj['metadata'].get('namespace') if rt.namespaced else None,
                     obj['metadata']['name']))
                if current is None:
                    continue
                if current['metadata'].get('finalizers'):
                    if not current['metadata'].get('deletionTimestamp'):
                        new = copy.deepcopy(current)
                        new['metadata']['deletionTimestamp'] = _now()
                        new['metadata']['deletionGracePeriodSeconds'] = 0
                        self._write(rt, current, new)
                else:
                    self._delete_now(rt, current)

    def _orphan(self, owner_uid: str) -> None:
        for key, objs in list(self._store.items()):
            rt = self._types[key]
            for obj in list(objs.values()):
                refs = obj['metadata'].get('ownerReferences') or []
                if any(r.get('uid') == owner_uid for r in refs):
                    new = copy.deepcopy(obj)
                    new['metadata']['ownerReferences'] = [
                        r for r in refs if r.get('uid') != owner_uid]
                    _strip_empty_meta(new['metadata'])
                    self._write(rt, obj, new)

    def _delete_namespace(self, rt: ResourceType, nsobj: dict) -> dict:
        name = nsobj['metadata']['name']
        if not nsobj['metadata'].get('deletionTimestamp'):
            new = copy.deepcopy(nsobj)
            new['metadata']['deletionTimestamp'] = _now()
            new['status'] = {'phase': 'Terminating'}
            nsobj = self._write(rt, nsobj, new)
        for key, objs in list(self._store.items()):
            content_rt = self._types.get(key)
            if content_rt is None or not content_rt.namespaced:
                continue
            for (ns, _), obj in list(objs.items()):
                if ns != name:
                    continue
                if obj['metadata'].get('finalizers'):
                    if not obj['metadata'].get('deletionTimestamp'):
                        new = copy.deepcopy(obj)
                        new['metadata']['deletionTimestamp'] = _now()
                        self._write(content_rt, obj, new)
                else:
                    self._delete_now(content_rt, obj)
        self._maybe_finish_namespace(name)
        return self._store['v1/namespaces'].get((None, name), nsobj)

    def _maybe_finish_namespace(self, name: str | None) -> None:
        nsobj = self._store['v1/namespaces'].get((None, name or ''))
        if nsobj is None or not nsobj['metadata'].get('deletionTimestamp'):
            return
        for key, objs in self._store.items():
            rt = self._types.get(key)
            if rt is not None and rt.namespaced and any(ns == name for ns, _ in objs):
                return
        self._delete_now(self._types['v1/namespaces'], nsobj)

    def _list(self, rt: ResourceType, ns: str | None, params: Mapping[str, str]) -> dict:
        labels = parse_label_selector(params.get('labelSelector'))
        fields = parse_field_selector(params.get('fieldSelector'), rt)
        items = [obj for (ons, name), obj in sorted(self._store[rt.key].items(),
                                                    key=lambda kv: (kv[0][0] or '', kv[0][1]))
                 if (ns is None or ons == ns)
                 and labels_match(obj['metadata'].get('labels'), labels)
                 and fields_match(obj, fields)]
        meta: dict[str, Any] = {'resourceVersion': str(self._rv)}
        start = 0
        if params.get('continue'):
            try:
                token = json.loads(base64.urlsafe_b64decode(params['continue'].encode()))
                start = int(token['start'])
            except (ValueError, KeyError, TypeError):
                raise _bad_request('continue key is not valid') from None
        limit = int(params.get('limit') or 0)
        if limit > 0 and start + limit < len(items):
            token = {'start': start + limit, 'rv': self._rv}
            meta['continue'] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
            meta['remainingItemCount'] = len(items) - start - limit
            items = items[start:start + limit]
        else:
            items = items[start:]
        return {'apiVersion': rt.api_version, 'kind': f'{rt.kind}List', 'metadata': meta,
                'items': copy.deepcopy(items)}

    # ---------------------------------------------------------------- HTTP
    async def _dispatch(self, bridge: _KmockBridge,
                        raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body_bytes = await raw.read()
        ctype = raw.headers.get('Content-Type', '')
        data: Any = None
        if body_bytes:
            try:
                if 'yaml' in ctype:
                    data = yaml.safe_load(body_bytes)
                else:
                    data = json.loads(body_bytes)
            except (ValueError, yaml.YAMLError):
                data = None
        route = _parse_route(raw.path)
        params = dict(raw.query)
        verb = _verb(raw.method, route, params)
        record = RequestRecord(method=raw.method, path=raw.path, query=params, verb=verb,
                               plural=route.get('plural'), group=route.get('group'),
                               namespace=route.get('namespace'), name=route.get('name'),
                               subresource=route.get('subresource'), content_type=ctype or None,
                               body=data)
        with self._lock:
            self._history.append(record)
        if self.rbac:
            try:
                user = self._authenticate(raw)
                if user is None:
                    raise ApiError(401, 'Unauthorized', 'Unauthorized')
                record.user = user.name
                self._authorize(user, record, route, params)
                _REQUEST_USER.set(user)
            except ApiError as e:
                record.status = e.code
                return aiohttp.web.json_response(e.status(), status=e.code)
        resource = None
        if route.get('version') is not None:
            resource = kmock.resource(group=route.get('group', ''), version=route['version'],
                                      plural=route.get('plural'))
        action = {'list': kmock.action.LIST, 'watch': kmock.action.WATCH,
                  'get': kmock.action.FETCH, 'create': kmock.action.CREATE,
                  'update': kmock.action.UPDATE, 'patch': kmock.action.UPDATE,
                  'delete': kmock.action.DELETE,
                  'deletecollection': kmock.action.DELETE}.get(verb or '')
        request = kmock.Request(
            id=len(bridge._requests), raw_request=raw, url=raw.url, method=raw.method,
            params=params, headers=dict(raw.headers), cookies=dict(raw.cookies), data=data,
            body=body_bytes, text=body_bytes.decode('utf-8', 'replace'), action=action,
            resource=resource, namespace=route.get('namespace'), name=route.get('name'),
            subresource=route.get('subresource'))
        bridge._requests.append(request)
        try:
            response: aiohttp.web.StreamResponse | None = None
            if bridge._payloads:
                try:
                    response = await kmock.RawHandler._handle(bridge, request)
                except NotImplementedError:
                    response = None
            if response is None:
                response = await self._serve(raw, record, route, verb, params, data, ctype)
        except ApiError as e:
            response = aiohttp.web.json_response(e.status(), status=e.code)
        except Exception as e:  # a bug here: answer 500 like a real server would
            import traceback
            traceback.print_exc()
            response = aiohttp.web.json_response(
                ApiError(500, 'InternalError', f'emulator error: {e!r}').status(), status=500)
        if record.status is None:
            record.status = response.status
        return response

    async def _serve(self, raw: aiohttp.web.BaseRequest, record: RequestRecord, route: dict,
                     verb: str | None, params: dict[str, str], data: Any,
                     ctype: str) -> aiohttp.web.StreamResponse:
        kind = route['kind']
        if kind == 'root':
            return _json({'paths': sorted({'/api', '/api/v1', '/apis', '/version'} | {
                f'/apis/{rt.group}/{rt.version}' for rt in self._types.values() if rt.group})})
        if kind == 'version':
            return _json({'major': '1', 'minor': '31', 'gitVersion': 'v1.31.0+fleetgram-emulator',
                          'gitCommit': '0' * 40, 'gitTreeState': 'clean',
                          'buildDate': '2024-08-13T00:00:00Z', 'goVersion': 'go1.22.5',
                          'compiler': 'gc', 'platform': 'linux/amd64'})
        if kind == 'api':
            return _json({'kind': 'APIVersions', 'versions': ['v1'],
                          'serverAddressByClientCIDRs': [{'clientCIDR': '0.0.0.0/0',
                                                          'serverAddress': raw.host}]})
        if kind == 'apis':
            return _json(self._group_list())
        if kind == 'group':
            groups = {g['name']: g for g in self._group_list()['groups']}
            if route['group'] not in groups:
                raise ApiError(404, 'NotFound', 'the server could not find the requested resource')
            return _json({'kind': 'APIGroup', 'apiVersion': 'v1', **groups[route['group']]})
        if kind == 'resources':
            listing = self._resource_list(route['group'], route['version'])
            if listing is None:
                raise ApiError(404, 'NotFound', 'the server could not find the requested resource')
            return _json(listing)
        if kind != 'resource':
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource')

        with self._lock:
            rt = self._find_type(route['group'], route['version'], route['plural'])
        if rt is None or (route.get('namespace') is not None and not rt.namespaced):
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource')
        ns = route.get('namespace')
        name = route.get('name')
        sub = route.get('subresource')
        if rt.namespaced and ns is None and verb not in ('list', 'watch'):
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource')
        if sub is not None and sub not in rt.subresources:
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource')
        self._maybe_fault(verb, rt, name, sub)
        wants_table = 'as=Table' in raw.headers.get('Accept', '')

        if verb == 'watch':
            return await self._serve_watch(raw, record, rt, ns, name, params)
        with self._lock:
            if verb == 'list':
                result = self._list(rt, ns, params)
                if wants_table:
                    return _json(self._table(rt, result['items'], result['metadata']))
                return _json(result)
            if verb == 'get':
                obj = copy.deepcopy(self._get_existing(rt, ns, name))
                if wants_table:
                    return _json(self._table(rt, [obj], {'resourceVersion': str(self._rv)}))
                return _json(obj)
            if verb == 'create' and (rt.plural, sub) == ('serviceaccounts', 'token'):
                return _json(self._token_request(ns, name, data), 201)
            if verb == 'create':
                if sub is not None:
                    raise ApiError(405, 'MethodNotAllowed', 'the server does not allow this '
                                   'method on the requested resource')
                if not isinstance(data, dict):
                    raise _bad_request('the body of the request was in an unknown format')
                obj, warnings = self._create(
                    rt, ns, data, dry_run=params.get('dryRun') == 'All',
                    field_validation=params.get('fieldValidation', 'Warn'))
                return _json(obj, 201, warnings)
            if verb == 'update':
                obj, warnings = self._replace(rt, ns, name, data, sub, params)
                return _json(obj, 200, warnings)
            if verb == 'patch':
                if data is None:
                    raise _bad_request('the body of the request was in an unknown format')
                obj, warnings = self._patch(rt, ns, name, data, ctype, sub, params)
                return _json(obj, 200, warnings)
            if verb == 'delete':
                options = dict(data) if isinstance(data, dict) else {}
                for key in ('propagationPolicy', 'dryRun', 'gracePeriodSeconds'):
                    if key in params:
                        options[key] = params[key]
                code, obj = self._delete(rt, ns, name, options)
                return _json(obj, code)
            if verb == 'deletecollection':
                listing = self._list(rt, ns, params)
                for item in listing['items']:
                    with contextlib.suppress(ApiError):
                        self._delete(rt, item['metadata'].get('namespace'),
                                     item['metadata']['name'], {})
                return _json(listing)
        raise ApiError(405, 'MethodNotAllowed',
                       'the server does not allow this method on the requested resource')

    def _token_request(self, ns: str | None, name: str | None, data: Any) -> dict:
        """POST .../serviceaccounts/NAME/token: a TokenRequest answered with a token."""
        spec = dict((data or {}).get('spec') or {}) if isinstance(data, dict) else {}
        spec.setdefault('expirationSeconds', 3600)
        token = self.service_account_token(ns or 'default', name or '')
        expires = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            seconds=int(spec['expirationSeconds']))).strftime('%Y-%m-%dT%H:%M:%SZ')
        return {'kind': 'TokenRequest', 'apiVersion': 'authentication.k8s.io/v1',
                'metadata': {'name': name, 'namespace': ns}, 'spec': spec,
                'status': {'token': token, 'expirationTimestamp': expires}}

    def _maybe_fault(self, verb: str | None, rt: ResourceType, name: str | None,
                     sub: str | None) -> None:
        with self._lock:
            for fault in self._faults:
                if fault.times <= 0:
                    continue
                if (fault.verb in (None, verb) and fault.plural in (None, rt.plural)
                        and fault.name in (None, name) and fault.subresource in (None, sub)):
                    fault.times -= 1
                    raise ApiError(fault.code, fault.reason, fault.message,
                                   _details(rt, name))

    def _group_list(self) -> dict:
        groups: dict[str, list[str]] = {}
        with self._lock:
            for rt in self._types.values():
                if rt.group:
                    versions = groups.setdefault(rt.group, [])
                    if rt.version not in versions:
                        versions.append(rt.version)
        return {'kind': 'APIGroupList', 'apiVersion': 'v1', 'groups': [
            {'name': g, 'versions': [{'groupVersion': f'{g}/{v}', 'version': v} for v in vs],
             'preferredVersion': {'groupVersion': f'{g}/{vs[0]}', 'version': vs[0]}}
            for g, vs in sorted(groups.items())]}

    def _resource_list(self, group: str, version: str) -> dict | None:
        with self._lock:
            types = [rt for rt in self._types.values()
                     if rt.group == group and rt.version == version]
        if not types:
            return None
        resources = []
        for rt in sorted(types, key=lambda t: t.plural):
            resources.append({
                'name': rt.plural, 'singularName': rt.singular, 'namespaced': rt.namespaced,
                'kind': rt.kind, 'verbs': list(ALL_VERBS), 'shortNames': list(rt.short_names),
                **({'categories': list(rt.categories)} if rt.categories else {}),
            })
            for sub in sorted(rt.subresources):
                resources.append({'name': f'{rt.plural}/{sub}', 'singularName': '',
                                  'namespaced': rt.namespaced, 'kind': rt.kind,
                                  'verbs': ['get', 'patch', 'update']})
        return {'kind': 'APIResourceList', 'apiVersion': 'v1',
                'groupVersion': f'{group}/{version}' if group else version,
                'resources': resources}

    def _table(self, rt: ResourceType, items: list[dict], meta: dict) -> dict:
        columns = rt.printer_columns or [
            {'name': 'Age', 'type': 'date', 'jsonPath': '.metadata.creationTimestamp'}]
        definitions = [{'name': 'Name', 'type': 'string', 'format': 'name', 'priority': 0,
                        'description': 'Name must be unique within a namespace.'}]
        definitions += [{'name': c['name'], 'type': c['type'], 'format': c.get('format', ''),
                         'description': c.get('description', ''),
                         'priority': c.get('priority', 0)} for c in columns]
        rows = []
        for obj in items:
            cells: list[Any] = [obj['metadata']['name']]
            for col in columns:
                value = _jsonpath(obj, col['jsonPath'])
                if col['type'] == 'date' and value is not None:
                    value = _human_age(value)
                cells.append(value)
            rows.append({'cells': cells, 'object': {
                'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1',
                'metadata': obj['metadata']}})
        return {'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1', 'metadata': {
            k: v for k, v in meta.items() if k in ('resourceVersion', 'continue')},
            'columnDefinitions': definitions, 'rows': rows}

    # ---------------------------------------------------------------- watch
    def _watch_start(self, rt: ResourceType, ns: str | None, name: str | None,
                     params: Mapping[str, str], labels: list, fields: list
                     ) -> tuple[list[dict], int, bool] | None:
        """Under the lock: the initial events and the cursor, or None when too old (410)."""
        rv_param = params.get('resourceVersion') or ''
        send_initial = params.get('sendInitialEvents')
        if rv_param in ('', '0') and send_initial != 'false':
            initial = [{'type': 'ADDED', 'object': copy.deepcopy(obj)}
                       for (ons, oname), obj in sorted(self._store[rt.key].items(),
                                                       key=lambda kv: (kv[0][0] or '', kv[0][1]))
                       if self._visible(obj, rt, ns, name, labels, fields)]
            return initial, self._rv, _truthy(send_initial)
        if rv_param in ('', '0'):
            return [], self._rv, False
        try:
            cursor = int(rv_param)
        except ValueError:
            raise _bad_request(f'invalid resource version: {rv_param!r}') from None
        if cursor < self._floor_rv:
            return None
        return [], cursor, False

    def _visible(self, obj: dict | None, rt: ResourceType, ns: str | None, name: str | None,
                 labels: list, fields: list) -> bool:
        if obj is None:
            return False
        meta = obj['metadata']
        if ns is not None and meta.get('namespace') != ns:
            return False
        if name is not None and meta.get('name') != name:
            return False
        return labels_match(meta.get('labels'), labels) and fields_match(obj, fields)

    def _watch_events_after(self, rt: ResourceType, ns: str | None, name: str | None,
                            cursor: int, labels: list, fields: list
                            ) -> tuple[list[dict], int] | None:
        """Under the lock: events after ``cursor`` (or None if they are forgotten)."""
        if cursor < self._floor_rv:
            return None
        start = bisect.bisect_right(self._change_rvs, cursor)
        events = []
        for change in self._changes[start:]:
            cursor = change.rv
            if change.key != rt.key:
                continue
            now = self._visible(change.object, rt, ns, name, labels, fields)
            before = self._visible(change.previous, rt, ns, name, labels, fields)
            if change.type == 'ADDED' and now:
                events.append({'type': 'ADDED', 'object': change.object})
            elif change.type == 'MODIFIED':
                if now and before:
                    events.append({'type': 'MODIFIED', 'object': change.object})
                elif now:
                    events.append({'type': 'ADDED', 'object': change.object})
                elif before:
                    prev = copy.deepcopy(change.previous)
                    prev['metadata']['resourceVersion'] = str(change.rv)
                    events.append({'type': 'DELETED', 'object': prev})
            elif change.type == 'DELETED' and now:
                events.append({'type': 'DELETED', 'object': change.object})
        return events, cursor

    async def _serve_watch(self, raw: aiohttp.web.BaseRequest, record: RequestRecord,
                           rt: ResourceType, ns: str | None, name: str | None,
                           params: Mapping[str, str]) -> aiohttp.web.StreamResponse:
        labels = parse_label_selector(params.get('labelSelector'))
        fields = parse_field_selector(params.get('fieldSelector'), rt)
        bookmarks = _truthy(params.get('allowWatchBookmarks'))
        timeout = float(params['timeoutSeconds']) if params.get('timeoutSeconds') else None
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        response = aiohttp.web.StreamResponse(status=200)
        response.content_type = 'application/json'
        response.enable_chunked_encoding()
        try:
            with self._lock:
                start = self._watch_start(rt, ns, name, params, labels, fields)
                epoch = self._watch_epoch
            await response.prepare(raw)
            record.status = 200
            if start is None:
                await self._send(response, {'type': 'ERROR', 'object': self._gone(params)})
                await response.write_eof()
                return response
            initial, cursor, initial_end = start
            for event in initial:
                await self._send(response, event)
            if initial_end:
                await self._send(response, self._bookmark(rt, cursor, initial_end=True))
            started = time.monotonic()
            last_sent = time.monotonic()
            while not self._stopping:
                waiter.clear()
                with self._lock:
                    found = self._watch_events_after(rt, ns, name, cursor, labels, fields)
                    closed = epoch != self._watch_epoch
                if found is None:
                    await self._send(response, {'type': 'ERROR', 'object': self._gone(params)})
                    break
                events, cursor = found
                for event in events:
                    await self._send(response, event)
                    last_sent = time.monotonic()
                if closed:
                    break
                elapsed = time.monotonic() - started
                if timeout is not None and elapsed >= timeout:
                    break
                if bookmarks and time.monotonic() - last_sent >= self._bookmark_interval:
                    await self._send(response, self._bookmark(rt, cursor))
                    last_sent = time.monotonic()
                if raw.transport is None or raw.transport.is_closing():
                    break
                wait = min(1.0, self._bookmark_interval) if bookmarks else 1.0
                if timeout is not None:
                    wait = max(0.0, min(wait, timeout - elapsed))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), wait)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write_eof()
        except ConnectionError:
            pass
        finally:
            self._waiters.discard(waiter)
        return response

    def _gone(self, params: Mapping[str, str]) -> dict:
        return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                'message': f'too old resource version: {params.get("resourceVersion")} '
                           f'({self._floor_rv + 1})',
                'reason': 'Expired', 'code': 410}

    def _bookmark(self, rt: ResourceType, cursor: int, initial_end: bool = False) -> dict:
        meta: dict[str, Any] = {'resourceVersion': str(cursor)}
        if initial_end:
            meta['annotations'] = {'k8s.io/initial-events-end': 'true'}
        return {'type': 'BOOKMARK', 'object': {'kind': rt.kind, 'apiVersion': rt.api_version,
                                               'metadata': meta}}

    @staticmethod
    async def _send(response: aiohttp.web.StreamResponse, event: dict) -> None:
        await response.write(json.dumps(event).encode() + b'\n')


def _json(body: Any, status: int = 200, warnings: Iterable[str] = ()) -> aiohttp.web.Response:
    response = aiohttp.web.json_response(body, status=status)
    for warning in warnings:
        response.headers.add('Warning', f'299 - {json.dumps(warning)}')
    return response


def _parse_route(path: str) -> dict[str, Any]:
    parts = [p for p in path.strip('/').split('/') if p != ''] if path.strip('/') else []
    if not parts:
        return {'kind': 'root'}
    if parts == ['version']:
        return {'kind': 'version'}
    if parts[0] == 'api':
        if len(parts) == 1:
            return {'kind': 'api'}
        group, version, rest = '', parts[1], parts[2:]
    elif parts[0] == 'apis':
        if len(parts) == 1:
            return {'kind': 'apis'}
        if len(parts) == 2:
            return {'kind': 'group', 'group': parts[1]}
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return {'kind': 'unknown'}
    route: dict[str, Any] = {'kind': 'resources', 'group': group, 'version': version}
    if not rest:
        return route
    route['kind'] = 'resource'
    if rest[0] == 'namespaces' and len(rest) >= 3 and not (
            len(rest) == 3 and group == '' and rest[2] in ('status', 'finalize')):
        route['namespace'] = rest[1]
        rest = rest[2:]
    if len(rest) > 3:
        return {'kind': 'unknown'}
    route['plural'] = rest[0]
    route['name'] = rest[1] if len(rest) > 1 else None
    route['subresource'] = rest[2] if len(rest) > 2 else None
    return route


def _verb(method: str, route: Mapping[str, Any], params: Mapping[str, str]) -> str | None:
    if route.get('kind') != 'resource':
        return 'get' if method == 'GET' else None
    named = route.get('name') is not None
    if method == 'GET':
        if _truthy(params.get('watch')):
            return 'watch'
        return 'get' if named else 'list'
    if method == 'POST':
        return 'create'
    if method == 'PUT' and named:
        return 'update'
    if method == 'PATCH' and named:
        return 'patch'
    if method == 'DELETE':
        return 'delete' if named else 'deletecollection'
    return None


# --------------------------------------------------------------------------------------------
# A pytest fixture (import it into a test module or a conftest.py to use it).
# --------------------------------------------------------------------------------------------

@pytest.fixture()
def kube_emulator(tmp_path: Path, monkeypatch: Any) -> Iterator[KubeEmulator]:
    """A started emulator with fleetgram's CRDs and the namespaces ``default`` and
    ``fleetgram``; KUBECONFIG, the kubernetes client's default kubeconfig location and its
    default configuration point at it (kopf's default login finds it too)."""
    import kubernetes.client
    import kubernetes.config
    import kubernetes.config.kube_config
    emu = KubeEmulator(crds=FLEETGRAM_CRDS, namespaces=('default', 'fleetgram'))
    emu.start_sync()
    try:
        path = emu.kubeconfig(tmp_path / 'kubeconfig', namespace='fleetgram')
        monkeypatch.setenv('KUBECONFIG', path)
        monkeypatch.setattr(kubernetes.config.kube_config, 'KUBE_CONFIG_DEFAULT_LOCATION', path)
        monkeypatch.setattr(kubernetes.config, 'KUBE_CONFIG_DEFAULT_LOCATION', path)
        # The client's default configuration is global: restored after the test.
        monkeypatch.setattr(kubernetes.client.Configuration, '_default', None)
        kubernetes.config.load_kube_config(config_file=path)
        yield emu
    finally:
        emu.stop_sync()
