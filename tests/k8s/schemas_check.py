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
