"""ValidatingAdmissionPolicy, as the emulated API server applies it (``KubeEmulator(rbac=True)``).

What a real API server (1.30+, admissionregistration.k8s.io/v1) does, from
https://kubernetes.io/docs/reference/access-authn-authz/validating-admission-policy/ and the
API reference of ValidatingAdmissionPolicy/-Binding:

- A policy does nothing without a binding (``spec.policyName``) whose ``validationActions``
  include ``Deny``; the binding's ``matchResources`` narrows the policy's ``matchConstraints``
  (here: ``namespaceSelector``/``objectSelector`` are honoured by label equality only).
- ``matchConstraints.resourceRules``: apiGroups, apiVersions, operations, resources (``*``,
  ``bottasks/status`` for a subresource, ``*/status``), ``resourceNames``.
- ``matchConditions`` (all must be true, else the policy is skipped) and ``validations`` are
  CEL, evaluated here by a real CEL interpreter (cel-python) over ``object``, ``oldObject``
  (null on CREATE), ``request`` (operation, userInfo.username/groups, resource, subResource,
  name, namespace) and ``variables``.
- A failed validation denies the request: "<plural>.<group> "<name>" is forbidden:
  ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request: <message>",
  with the HTTP code of the validation's ``reason`` (Forbidden 403, Invalid 422 (the
  default), Unauthorized 401, RequestEntityTooLarge 413). Without a ``message`` the text is
  "failed expression: <expression>".
- An expression that errors, under ``failurePolicy: Fail`` (the default), denies as well
  ("expression '<e>' resulted in error: <why>"); under ``Ignore`` the policy is skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import celpy

REASON_CODES = {"Forbidden": 403, "Invalid": 422, "Unauthorized": 401,
                "RequestEntityTooLarge": 413}


@dataclasses.dataclass(frozen=True)
class AdmissionRequest:
    """One write, as admission sees it."""
    operation: str  # CREATE, UPDATE, DELETE
    group: str
    version: str
    resource: str  # plural
    subresource: str | None
    namespace: str | None
    name: str
    username: str
    groups: tuple[str, ...]
    obj: dict | None
    old: dict | None
    namespace_labels: Mapping[str, str] | None = None

    def as_cel(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "name": self.name,
            "namespace": self.namespace or "",
            "subResource": self.subresource or "",
            "resource": {"group": self.group, "version": self.version,
                         "resource": self.resource},
            "kind": {},
            "userInfo": {"username": self.username, "groups": list(self.groups)},
        }


@dataclasses.dataclass(frozen=True)
class Denial:
    code: int
    reason: str
    message: str


def _listed(values: Iterable[str] | None, value: str) -> bool:
    values = list(values or [])
    return "*" in values or value in values


def _resource_listed(resources: Iterable[str] | None, req: AdmissionRequest) -> bool:
    for entry in resources or []:
        plural, _, sub = entry.partition("/")
        if plural not in ("*", req.resource):
            continue
        if req.subresource is None and not sub:
            return True
        if req.subresource is not None and sub in ("*", req.subresource):
            return True
    return False


def rule_matches(rule: Mapping[str, Any], req: AdmissionRequest) -> bool:
    return (_listed(rule.get("apiGroups"), req.group)
            and _listed(rule.get("apiVersions"), req.version)
            and _listed(rule.get("operations"), req.operation)
            and _resource_listed(rule.get("resources"), req)
            and (not rule.get("resourceNames") or req.name in rule["resourceNames"]))


def _selector_matches(selector: Mapping[str, Any] | None,
                      labels: Mapping[str, str] | None) -> bool:
    if not selector:
        return True
    labels = labels or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _matches(match: Mapping[str, Any] | None, req: AdmissionRequest) -> bool:
    """matchConstraints / matchResources: resourceRules (if any) and selectors."""
    if not match:
        return True
    rules = match.get("resourceRules")
    if rules is not None and not any(rule_matches(r, req) for r in rules):
        return False
    if any(rule_matches(r, req) for r in match.get("excludeResourceRules") or []):
        return False
    if req.namespace is not None and not _selector_matches(match.get("namespaceSelector"),
                                                          req.namespace_labels):
        return False
    subject = req.obj if req.obj is not None else req.old
    labels = ((subject or {}).get("metadata") or {}).get("labels")
    return _selector_matches(match.get("objectSelector"), labels)


class _Evaluator:
    """CEL programs compiled once per expression text."""

    def __init__(self) -> None:
        self._env = celpy.Environment()
        self._programs: dict[str, Any] = {}

    def evaluate(self, expression: str, activation: Mapping[str, Any]) -> Any:
        program = self._programs.get(expression)
        if program is None:
            program = self._env.program(self._env.compile(expression))
            self._programs[expression] = program
        result = program.evaluate(dict(activation))
        if isinstance(result, celpy.CELEvalError):
            raise ValueError(str(result.args[0] if result.args else result))
        return result


_EVALUATOR = _Evaluator()


def _activation(req: AdmissionRequest) -> dict[str, Any]:
    return {
        "object": celpy.json_to_cel(req.obj),
        "oldObject": celpy.json_to_cel(req.old),
        "request": celpy.json_to_cel(req.as_cel()),
    }


def _qualified(req: AdmissionRequest) -> str:
    return f"{req.resource}.{req.group}" if req.group else req.resource


def evaluate_policy(policy: Mapping[str, Any], binding_name: str,
                    req: AdmissionRequest) -> Denial | None:
    """The denial of one bound policy for this request, or None when it admits it."""
    name = policy["metadata"]["name"]
    spec = policy.get("spec") or {}
    fail_closed = spec.get("failurePolicy", "Fail") == "Fail"
    prefix = (f'{_qualified(req)} "{req.name}" is forbidden: ValidatingAdmissionPolicy '
              f"'{name}' with binding '{binding_name}' denied request: ")
    activation = _activation(req)
    try:
        # matchConditions first, without variables: a request they exclude is not judged, so
        # variables that only make sense for the judged requests never fail it.
        for cond in spec.get("matchConditions") or []:
            if not bool(_EVALUATOR.evaluate(cond["expression"], activation)):
                return None
        variables = celpy.celtypes.MapType()
        activation["variables"] = variables
        for var in spec.get("variables") or []:  # in order: each may use the ones before
            variables[celpy.celtypes.StringType(var["name"])] = _EVALUATOR.evaluate(
                var["expression"], activation)
    except Exception as error:
        if not fail_closed:
            return None
        return Denial(403, "Forbidden", prefix + f"expression resulted in error: {error}")
    for validation in spec.get("validations") or []:
        expression = validation["expression"]
        reason = validation.get("reason", "Invalid")
        try:
            allowed = bool(_EVALUATOR.evaluate(expression, activation))
        except Exception as error:
            if not fail_closed:
                continue
            return Denial(REASON_CODES.get(reason, 422), reason,
                          prefix + f"expression '{expression}' resulted in error: {error}")
        if not allowed:
            message = validation.get("message") or f"failed expression: {expression}"
            return Denial(REASON_CODES.get(reason, 422), reason, prefix + message)
    return None


def admit(policies: Iterable[dict], bindings: Iterable[dict],
          req: AdmissionRequest) -> Denial | None:
    """The first denial among the bound policies (Deny bindings), or None."""
    by_name = {p["metadata"]["name"]: p for p in policies}
    for binding in bindings:
        spec = binding.get("spec") or {}
        if "Deny" not in (spec.get("validationActions") or []):
            continue
        policy = by_name.get(spec.get("policyName", ""))
        if policy is None:
            continue
        if not _matches((policy.get("spec") or {}).get("matchConstraints"), req):
            continue
        if not _matches(spec.get("matchResources"), req):
            continue
        denial = evaluate_policy(policy, binding["metadata"]["name"], req)
        if denial is not None:
            return denial
    return None
