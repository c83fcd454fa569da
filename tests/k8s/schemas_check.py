"""Validation against the real schemas: Kubernetes (kubernetes-validate), Argo and Compose (vendored)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

SCHEMAS = Path(__file__).with_name("schemas")
# The oldest and the newest Kubernetes minor the chart and the launchers claim to support.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def validate_k8s(manifest: dict[str, Any]) -> None:
    """Strict: unknown fields are errors, as with `kubectl apply --validate=strict`."""
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = manifest.get("metadata", {}).get("name")
            raise AssertionError(f"{manifest.get('kind')} {name} is invalid for Kubernetes {version}: "
                                 f"{exc.message} at {'/'.join(map(str, exc.path))}") from None


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def schema_errors(name: str, document: Any) -> list[str]:
    errors = sorted(_validator(name).iter_errors(document), key=lambda e: list(e.absolute_path))
    out = []
    for error in errors:
        best = jsonschema.exceptions.best_match([error])
        out.append(f"{'/'.join(map(str, best.absolute_path))}: {best.message[:300]}")
    return out


def validate_argo(manifest: dict[str, Any]) -> None:
    assert manifest["apiVersion"] == "argoproj.io/v1alpha1" and manifest["kind"] == "Workflow"
    errors = schema_errors("argo-workflow-v1alpha1.strict.json", manifest)
    assert not errors, "Workflow is invalid against the Argo schema:\n" + "\n".join(errors)


def validate_compose(document: Any) -> None:
    errors = schema_errors("compose-spec.json", document)
    assert not errors, "docker-compose.yml is invalid against the Compose Specification:\n" + "\n".join(errors)


def _strict(schema: Any) -> Any:
    """`additionalProperties: false` on every object that lists its properties: the API server
    prunes unknown fields of a custom resource silently, so a misspelt `annotation:` or `exprs:`
    would vanish on apply. Strict, as `kubectl apply --validate=strict` is."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if "properties" in out and "additionalProperties" not in out and out.get("type") == "object":
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def _prometheus_rule_validator() -> jsonschema.protocols.Validator:
    schema = _strict(json.loads((SCHEMAS / "prometheusrule-monitoring-v1.json").read_text()))
    return jsonschema.validators.validator_for(schema)(schema)


def validate_prometheus_rule(manifest: dict[str, Any]) -> None:
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1" and manifest["kind"] == "PrometheusRule"
    errors = sorted(_prometheus_rule_validator().iter_errors(manifest), key=lambda e: list(e.absolute_path))
    assert not errors, "PrometheusRule is invalid against the prometheus-operator CRD:\n" + "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors)
    # What the schema leaves to the API server's own ObjectMeta validation.
    metadata = manifest["metadata"]
    assert metadata["name"] and all(isinstance(v, str) for v in metadata.get("labels", {}).values())


def validate_manifest(manifest: dict[str, Any]) -> None:
    """A rendered chart object against its schema: Kubernetes', or the operator CRD's."""
    if manifest.get("kind") == "PrometheusRule":
        validate_prometheus_rule(manifest)
    else:
        validate_k8s(manifest)
