"""Job-side helper ("component wrapper") that pipeline steps call.

Why: a step launched by loopline (local process, Kubernetes Job, Argo step) receives its
whole contract through environment variables: where to write outputs, what earlier steps
produced, which training request it serves. This module turns that contract into one
small object so training code stays plain Python, and it puts the lineage loopline needs
(idempotency key, correlation and causation ids, data versions) on every MLflow run and
model version. ``reuse_model()`` lets a relaunched step find the version a previous launch
of the same request already registered, so a redelivered event never registers a second
one; ``find_finished_run()`` does the same for any step's finished run.

mlflow is imported lazily: a step that never logs (e.g. prepare) does not pay its ~2 s
import. Importing this module sets quiet MLflow defaults (no telemetry, WARNING logs)
unless the environment already chose otherwise.

Environment (set by the launcher):
    required  LOOPLINE_STEP, LOOPLINE_RUN_NAME, LOOPLINE_OUTPUTS, LOOPLINE_MODEL,
              LOOPLINE_IDEMPOTENCY_KEY, LOOPLINE_STATE_DIR
    optional  LOOPLINE_INPUTS (JSON {step: {output: value}}),
              LOOPLINE_REQUEST (the training request: its data as a JSON object, or the
              whole CloudEvent that carried it, whose ``data`` is then the request),
              LOOPLINE_PARAM_<NAME> (per-model step parameters -> ``ctx.params["name"]``),
              LOOPLINE_CORRELATION_ID, LOOPLINE_CAUSATION_ID, LOOPLINE_RUN_DIR,
              LOOPLINE_ARTIFACT_ROOT (artifact root of experiments this module creates
              on a database tracking store; default STATE_DIR/mlartifacts),
              MLFLOW_TRACKING_URI (read by MLflow itself)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepkit.lineage import lineage_tag

if TYPE_CHECKING:
    import mlflow
    import pandas as pd
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

REQUIRED_ENV = (
    "LOOPLINE_STEP",
    "LOOPLINE_RUN_NAME",
    "LOOPLINE_OUTPUTS",
    "LOOPLINE_MODEL",
    "LOOPLINE_IDEMPOTENCY_KEY",
    "LOOPLINE_STATE_DIR",
)
PARAM_PREFIX = "LOOPLINE_PARAM_"
TAG_PREFIX = "loopline."
MODEL_ARTIFACT = "model"


class JobContextError(RuntimeError):
    """The step's environment or its MLflow state does not fit the loopline contract."""


class MissingInputError(KeyError):
    """An earlier step's outputs were asked for but are not among the inputs."""

    def __str__(self) -> str:  # KeyError would repr() the message, quotes and all
        return str(self.args[0])


def _quiet_mlflow_defaults() -> None:
    """No telemetry and WARNING-level MLflow logs, unless the environment says otherwise."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"  # read when mlflow is first imported
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # in case it already was


_quiet_mlflow_defaults()


def context(env: Mapping[str, str] | None = None) -> JobContext:
    """Read the step's contract from ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    missing = [name for name in REQUIRED_ENV if not env.get(name)]
    if missing:
        raise JobContextError(
            f"stepkit.job.context() must run inside a loopline pipeline step; "
            f"missing environment variable(s): {', '.join(missing)}"
        )
    inputs = _json_env(env, "LOOPLINE_INPUTS")
    bad = [name for name, value in inputs.items() if not isinstance(value, dict)]
    if bad:
        raise JobContextError(f"LOOPLINE_INPUTS: outputs of step(s) {bad} are not JSON objects")
    run_dir = env.get("LOOPLINE_RUN_DIR")
    request, request_event = _unwrap_event(_json_env(env, "LOOPLINE_REQUEST"))
    envelope = request_event or {}
    return JobContext(
        model=env["LOOPLINE_MODEL"],
        step=env["LOOPLINE_STEP"],
        run_name=env["LOOPLINE_RUN_NAME"],
        idempotency_key=env["LOOPLINE_IDEMPOTENCY_KEY"],
        correlation_id=env.get("LOOPLINE_CORRELATION_ID") or envelope.get("correlationid", ""),
        causation_id=env.get("LOOPLINE_CAUSATION_ID") or envelope.get("id", ""),
        request=request,
        request_event=request_event,
        params=params(env),
        state_dir=Path(env["LOOPLINE_STATE_DIR"]),
        outputs_path=Path(env["LOOPLINE_OUTPUTS"]),
        run_dir=Path(run_dir) if run_dir else None,
        artifact_root=env.get("LOOPLINE_ARTIFACT_ROOT") or None,
        _inputs=inputs,
    )


def params(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The model's step parameters, LOOPLINE_PARAM_<NAME> -> {"name": value}.

    Works outside a pipeline too, so a step can build its CLI defaults (and --help) first.
    """
    env = os.environ if env is None else env
    return {k[len(PARAM_PREFIX):].lower(): v for k, v in env.items() if k.startswith(PARAM_PREFIX)}


def _unwrap_event(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(request, envelope): a CloudEvent's ``data`` is the request; the model is its subject."""
    if "specversion" in doc and isinstance(doc.get("data"), dict):
        request = dict(doc["data"])
        if doc.get("subject"):
            request.setdefault("model", doc["subject"])
        return request, doc
    return doc, None


def _json_env(env: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = env.get(name) or "{}"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise JobContextError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise JobContextError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class JobContext:
    """What one pipeline step knows about itself; see the module docstring."""

    model: str
    step: str
    run_name: str
    idempotency_key: str
    correlation_id: str
    causation_id: str
    request: dict[str, Any]
    state_dir: Path
    outputs_path: Path
    run_dir: Path | None = None
    artifact_root: str | None = None
    request_event: dict[str, Any] | None = None  # the CloudEvent, when the request came as one
    params: dict[str, str] = field(default_factory=dict)
    _inputs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    # -- the request -------------------------------------------------------------------

    @property
    def data_uris(self) -> list[str]:
        return [str(uri) for uri in self.request.get("data_uris") or []]

    @property
    def data_versions(self) -> list[str]:
        return [str(version) for version in self.request.get("data_versions") or []]

    @property
    def reason(self) -> str:
        return str(self.request.get("reason") or "")

    # -- inputs and outputs ------------------------------------------------------------

    def inputs(self, step: str) -> dict[str, Any]:
        """Outputs of the earlier step ``step``."""
        try:
            return self._inputs[step]
        except KeyError:
            known = ", ".join(sorted(self._inputs)) or "none"
            raise MissingInputError(
                f"step {self.step!r} has no outputs from step {step!r} "
                f"(completed steps: {known}); is {step!r} listed before it in the pipeline?"
            ) from None

    def outputs(self) -> dict[str, Any]:
        """The outputs written so far by this step."""
        try:
            text = self.outputs_path.read_text()
        except FileNotFoundError:
            return {}
        if not text.strip():
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise JobContextError(f"outputs file {self.outputs_path} is corrupt: {exc}") from None
        if not isinstance(value, dict):
            raise JobContextError(f"outputs file {self.outputs_path} is not a JSON object")
        return value

    def output(self, **values: Any) -> None:
        """Merge ``values`` into the outputs file; the file is replaced atomically."""
        _write_json_atomic(self.outputs_path, {**self.outputs(), **values})

    # -- MLflow ------------------------------------------------------------------------

    @cached_property
    def client(self) -> mlflow.MlflowClient:
        return _mlflow().MlflowClient()

    def run_tags(self) -> dict[str, str]:
        """Tags every MLflow run of this step carries."""
        return {
            TAG_PREFIX + "idempotency_key": self.idempotency_key,
            TAG_PREFIX + "correlation_id": self.correlation_id,
            TAG_PREFIX + "causation_id": self.causation_id,
            TAG_PREFIX + "run_name": self.run_name,
            TAG_PREFIX + "step": self.step,
            TAG_PREFIX + "data_versions": ",".join(self.data_versions),
            TAG_PREFIX + "reason": self.reason,
        }

    def version_tags(self) -> dict[str, str]:
        """Tags every model version registered by this step carries.

        With the request's CloudEvent at hand, also its id and the keys (`source#id`) of the
        events that triggered it: `loopline lineage` reads them when the topics are gone.
        """
        tags = {
            TAG_PREFIX + "idempotency_key": self.idempotency_key,
            TAG_PREFIX + "correlation_id": self.correlation_id,
            TAG_PREFIX + "run_name": self.run_name,
            TAG_PREFIX + "data_versions": ",".join(self.data_versions),
        }
        if self.request_event and self.request_event.get("id"):
            tags[lineage_tag("request_id")] = str(self.request_event["id"])
        causes = [str(c) for c in self.request.get("causes") or []]
        if causes:
            kept = list(causes)
            while len(kept) > 1 and len(json.dumps(kept)) > 4000:   # MLflow caps tag values
                kept.pop(0)                                          # newest causes kept
            tags[lineage_tag("trigger_events")] = json.dumps(kept)
            tags[lineage_tag("trigger_event_count")] = str(len(causes))
        return tags

    @contextmanager
    def start_run(self, **params: Any) -> Iterator[mlflow.ActiveRun]:
        """An MLflow run named ``{run_name}-{step}`` in the experiment named after the model.

        The run ends FINISHED, or FAILED if the block raises.
        """
        mlflow = _mlflow()
        experiment_id = self.experiment_id()
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"{self.run_name}-{self.step}",
            tags=self.run_tags(),
        ) as run:
            if params:
                mlflow.log_params(params)
            yield run

    def experiment_id(self) -> str:
        """Id of the experiment named after the model, created if missing."""
        client = self.client
        experiment = client.get_experiment_by_name(self.model)
        if experiment is None:
            try:
                return client.create_experiment(self.model, artifact_location=self._artifact_location())
            except _mlflow().exceptions.MlflowException:
                experiment = client.get_experiment_by_name(self.model)  # a concurrent step won
                if experiment is None:
                    raise
        if experiment.lifecycle_stage != "active":
            raise JobContextError(
                f"MLflow experiment {self.model!r} is deleted; restore it "
                f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) "
                "or delete it permanently"
            )
        return experiment.experiment_id

    def _artifact_location(self) -> str | None:
        """Where a new experiment keeps artifacts.

        A tracking server (http, https, databricks) decides itself: its artifact root is
        the one every client can reach. A direct database store (sqlite, postgresql) has
        no server, so LOOPLINE_ARTIFACT_ROOT, else STATE_DIR/mlartifacts, is used rather
        than MLflow's default ./mlruns under whatever directory the step runs in.
        """
        if _mlflow().get_tracking_uri().startswith(("http:", "https:", "databricks")):
            return None
        root = self.artifact_root or (self.state_dir.resolve() / "mlartifacts").as_uri()
        return f"{root.rstrip('/')}/{_safe_name(self.model)}"

    def find_finished_run(self, step: str | None = None) -> Run | None:
        """The newest FINISHED run of ``step`` (default: this step) for this idempotency key."""
        experiment = self.client.get_experiment_by_name(self.model)
        if experiment is None:
            return None
        runs = self.client.search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"tags.`{TAG_PREFIX}idempotency_key` = {_quote(self.idempotency_key)} "
                f"and tags.`{TAG_PREFIX}step` = {_quote(step or self.step)} "
                "and attributes.status = 'FINISHED'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def find_registered_version(self) -> ModelVersion | None:
        """The newest version of this model registered for this idempotency key, if any.

        The key is set as a tag in the same call that creates a version, so this finds it
        even when the registering run crashed before it could finish.
        """
        versions = self.client.search_model_versions(
            f"name = {_quote(self.model)} and tags.`{TAG_PREFIX}idempotency_key` = "
            f"{_quote(self.idempotency_key)}",
            order_by=["version_number DESC"],
            max_results=1,
        )
        return versions[0] if versions else None

    def reuse_model(self) -> str | None:
        """Reuse the version an earlier launch of this request registered, if one did.

        Returns that version (and writes run_id, model_version, reused=True to the
        outputs), or None when the step has to train.
        """
        version = self.find_registered_version()
        if version is None:
            return None
        self.output(run_id=version.run_id, model_version=str(version.version), reused=True)
        return str(version.version)

    def _register(self, source: str, model_id: str | None, run_id: str) -> str:
        """Create a version of ``self.model`` with its lineage tags set in the same call."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(self.model)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        version = self.client.create_model_version(
            self.model, source, run_id=run_id, tags=self.version_tags(), model_id=model_id
        )
        return str(version.version)

    def _tag_reference(self, version: str, run_id: str) -> None:
        """The version carries its run's reference digest (if one was logged): drift events and
        `loopline lineage` can name the exact reference a version is compared with."""
        _copy_reference_tags(self.client, self.model, version, run_id)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics to the active run; pass ``step`` for per-epoch curves."""
        _active_run()
        _mlflow().log_metrics({name: float(value) for name, value in metrics.items()}, step=step)

    def log_reference(self, frame: pd.DataFrame, max_rows: int | None = None, seed: int = 0) -> dict[str, Any]:
        """Record the reference data of the model this run trains, for drift monitoring.

        ``frame`` is what the model learned from, as serving will see it: the feature columns,
        plus (optionally) a ``prediction`` column with the model's predictions, so the
        prediction log can be compared too. A seeded sample of at most ``max_rows`` rows
        (default 5000), its digest, the request's dataset versions and a per-column profile
        are logged under ``reference/`` of the active run; the digest and versions are tagged
        on the run and, by ``log_model``, on the version it registers. Returns the metadata.
        """
        from stepkit import reference

        run = _active_run()
        with tempfile.TemporaryDirectory(prefix="loopline-ref-") as tmp:
            meta = reference.write(frame, Path(tmp), dataset_versions=self.data_versions,
                                   max_rows=max_rows or reference.MAX_ROWS, seed=seed,
                                   run_name=self.run_name)
            _mlflow().log_artifacts(tmp, artifact_path=reference.ARTIFACT_DIR)
        _mlflow().set_tags({reference.TAG_DIGEST: meta["digest"],
                            reference.TAG_VERSIONS: ",".join(self.data_versions)[:5000]})
        self.output(reference_digest=meta["digest"], reference_run_id=run.info.run_id)
        return meta

    def log_model(self, model: Any, input_example: pd.DataFrame, serialization_format: str = "skops") -> str:
        """Log a scikit-learn model to the active run, register it as ``self.model``.

        The signature is inferred from ``input_example`` and ``model.predict``; the new
        version is tagged with this step's lineage. Returns the version and writes
        run_id and model_version to the outputs.

        ``skops`` (MLflow's default) cannot run code when a model is loaded, so an
        evaluator or server loading a registered version is safe; its import costs
        ~1.5 s per process. ``cloudpickle`` is faster and handles any estimator, but
        loading it trusts whoever could write to the registry.
        """
        run = _active_run()
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        example = input_example.head(5)
        info = mlflow.sklearn.log_model(
            sk_model=model,
            name=MODEL_ARTIFACT,
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
            serialization_format=serialization_format,
            # explicit requirements skip MLflow's slow import-tracing subprocess
            pip_requirements=mlflow.sklearn.get_default_pip_requirements(
                include_cloudpickle=serialization_format == "cloudpickle",
                include_skops=serialization_format == "skops",
            ),
        )
        version = self._register(info.model_uri, info.model_id, run.info.run_id)
        self._tag_reference(version, run.info.run_id)
        mlflow.set_tag(TAG_PREFIX + "model_version", version)
        self.output(run_id=run.info.run_id, model_version=version, reused=False)
        return version


def _copy_reference_tags(client: Any, model: str, version: str, run_id: str) -> None:
    from stepkit import reference

    tags = client.get_run(run_id).data.tags
    for name in (reference.TAG_DIGEST, reference.TAG_VERSIONS):
        if tags.get(name):
            client.set_model_version_tag(model, version, name, tags[name])


def _mlflow() -> Any:
    import mlflow

    return mlflow


def _active_run() -> mlflow.ActiveRun:
    run = _mlflow().active_run()
    if run is None:
        raise JobContextError("no active MLflow run: call this inside `with ctx.start_run():`")
    return run


def _quote(value: str) -> str:
    """Quote a literal for an MLflow filter string."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise JobContextError(f"value {value!r} contains both quote characters; cannot filter on it")


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _write_json_atomic(path: Path, value: dict[str, Any]) -> None:
    """Serialize first, then write a temp file beside ``path`` and rename it into place."""
    try:
        text = json.dumps(value, indent=2, sort_keys=True, allow_nan=False, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise JobContextError(f"outputs must be JSON (finite numbers, str, list, dict): {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    """JSON fallback for numpy scalars/arrays and paths."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serializable")
