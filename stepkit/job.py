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
import socket
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepkit.atomic import replacing
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
DATASET_DIGEST_MAX = 36      # MLflow's limit on a dataset digest (mlflow.utils.validation)


class JobContextError(RuntimeError):
    """The step's environment or its MLflow state does not fit the loopline contract."""


class MissingInputError(KeyError):
    """An earlier step's outputs were asked for but are not among the inputs."""

    def __str__(self) -> str:  # KeyError would repr() the message, quotes and all
        return str(self.args[0])


class TrialPruned(SystemExit):
    """The sweep's pruner stopped this trial (raised by ``ctx.report``). A SystemExit with code 0:
    left uncaught, the step exits 0 with the outputs ``{"pruned": true}`` and no traceback, and
    the coordinator tells the study PRUNED. Catch it only to clean up, then re-raise."""

    def __init__(self, message: str) -> None:
        super().__init__(0)
        self.message = message

    def __str__(self) -> str:
        return self.message


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
        trial_number=int(env["LOOPLINE_TRIAL_NUMBER"]) if env.get("LOOPLINE_TRIAL_NUMBER") else None,
        sweep_parent_run_id=env.get("LOOPLINE_SWEEP_PARENT_RUN_ID") or None,
        sweep_objective=env.get("LOOPLINE_SWEEP_OBJECTIVE") or None,
        _sweep_fd=int(env["LOOPLINE_SWEEP_FD"]) if env.get("LOOPLINE_SWEEP_FD") else None,
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
    trial_number: int | None = None          # in a sweep (triggers.sweep): this trial's number
    sweep_parent_run_id: str | None = None   # the sweep's MLflow parent run: start_run nests under it
    sweep_objective: str | None = None       # the metric the sweep optimises
    _sweep_fd: int | None = field(default=None, repr=False)   # the socket to the sweep coordinator
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
        if self.trial_number is not None:
            tags[TAG_PREFIX + "trial"] = str(self.trial_number)
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

        The run ends FINISHED, or FAILED if the block raises. In a sweep it is the trial's child
        run, ``{run_name}-{step}-trial-<n>`` under the sweep's parent run (``mlflow.parentRunId``),
        with the trial's parameters logged; a pruned trial's run ends KILLED.
        """
        mlflow = _mlflow()
        experiment_id = self.experiment_id()
        tags = self.run_tags()
        name = f"{self.run_name}-{self.step}"
        if self.trial_number is not None:
            tags[TAG_PREFIX + "trial"] = str(self.trial_number)
            name += f"-trial-{self.trial_number}"
            if self.sweep_parent_run_id:
                tags["mlflow.parentRunId"] = self.sweep_parent_run_id
            params = {**self.params, **params}
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
            if params:
                mlflow.log_params(params)
            try:
                yield run
            except TrialPruned:
                mlflow.set_tag(TAG_PREFIX + "trial_state", "PRUNED")
                mlflow.end_run("KILLED")
                raise

    def report(self, step: int, value: float) -> None:
        """An intermediate value of the sweep's objective (e.g. after an epoch).

        Recorded on this trial of the study (and, inside ``start_run``, as the objective's metric
        at ``step``); raises ``TrialPruned`` when the sweep's pruner stops the trial, after
        writing ``{"pruned": true}`` to the outputs. Outside a sweep it only logs the metric.
        """
        value = float(value)
        mlflow = sys.modules.get("mlflow")
        if mlflow is not None and mlflow.active_run() is not None:
            mlflow.log_metric(self.sweep_objective or "objective", value, step=int(step))
        if self._sweep_fd is None:
            return
        answer = _ask_coordinator(self._sweep_fd, {"step": int(step), "value": value})
        if answer.get("prune"):
            self.output(pruned=True, pruned_at_step=int(step))
            raise TrialPruned(f"trial {self.trial_number} pruned at step {step}")

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

    def log_input(self, data: pd.DataFrame | str, *, name: str, digest: str | None = None,
                  source: str | None = None, context: str = "training") -> dict[str, str]:
        """Record a dataset this run used (``mlflow.log_input``): MLflow's UI lists it under the
        run, and `loopline lineage` shows it for the version the run registers.

        ``data`` is a DataFrame (logged as an ``mlflow.data`` pandas dataset: its schema and
        a row/column profile are kept, not its rows) or a URI (a dataset that is only its
        source). ``source`` is the URI the rows were read from (file://, s3://, gs://...;
        default: ``data`` when it is a URI). ``digest`` is the content digest, e.g. the
        ``sha256:...`` of the batch file; MLflow keeps at most 36 characters of it, so a longer
        one is stored as its prefix and in full in the input tag ``loopline.digest``. Without a
        digest MLflow computes one from the frame (or the source). Returns the name, digest
        and source as logged.
        """
        _active_run()
        import mlflow
        import mlflow.data
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        if source is None and isinstance(data, str):
            source = data
        short = digest[:DATASET_DIGEST_MAX] if digest else None
        if isinstance(data, str) and not source:
            raise JobContextError("log_input: a dataset given by URI needs that URI")
        with warnings.catch_warnings():
            # MLflow registers its local-file source twice and warns that file:// is ambiguous
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            if isinstance(data, str):
                dataset = MetaDataset(resolve_dataset_source(source), name=name, digest=short)
            else:
                dataset = mlflow.data.from_pandas(data, source=source, name=name, digest=short)
        tags = {TAG_PREFIX + "digest": digest} if digest and digest != short else None
        mlflow.log_input(dataset, context=context, tags=tags)
        return {"name": dataset.name, "digest": digest or dataset.digest,
                "source": json.loads(dataset.source.to_json()).get("uri", dataset.source.to_json())}

    def log_model(self, model: Any, input_example: pd.DataFrame, serialization_format: str = "skops", *,
                  flavor: str = "sklearn", signature: Any = None, **flavor_kwargs: Any) -> str:
        """Log ``model`` with the MLflow flavour ``flavor`` to the active run, register it as ``self.model``.

        ``flavor`` names a module ``mlflow.<flavor>`` ("sklearn", the default; "pyfunc" for an
        ``mlflow.pyfunc.PythonModel``; "onnx" for an ONNX ``ModelProto``; "xgboost", "pytorch"...);
        an unknown name is a JobContextError listing the flavours this MLflow can log. The
        flavour's library is imported here, never when stepkit is. Every version carries a
        signature and the first rows of ``input_example``: ``signature`` when given, else
        inferred from the example and the model's predictions on it (``model.predict``, or,
        for a model without one such as an ONNX graph, the logged model loaded back with
        ``mlflow.pyfunc.load_model``, exactly as serving loads it). ``flavor_kwargs`` go to
        the flavour's ``log_model`` (``pip_requirements``, ``artifacts``...). The version is
        tagged with this step's lineage and ``loopline.flavor``. Returns the version and
        writes run_id and model_version to the outputs.

        For sklearn, ``skops`` (MLflow's default) cannot run code when a model is loaded, so
        an evaluator or server loading a registered version is safe; its import costs ~1.5 s
        per process. ``cloudpickle`` is faster and handles any estimator, but loading it
        trusts whoever could write to the registry.
        """
        module = flavor_module(flavor)          # a bad name fails before anything is logged
        run = _active_run()
        import mlflow
        from mlflow.models import infer_signature

        example = input_example.head(5)
        kwargs: dict[str, Any] = {"name": MODEL_ARTIFACT, "input_example": example, **flavor_kwargs}
        if flavor == "sklearn":
            kwargs.setdefault("serialization_format", serialization_format)
            # explicit requirements skip MLflow's slow import-tracing subprocess
            kwargs.setdefault("pip_requirements", module.get_default_pip_requirements(
                include_cloudpickle=kwargs["serialization_format"] == "cloudpickle",
                include_skops=kwargs["serialization_format"] == "skops",
            ))
        elif hasattr(module, "get_default_pip_requirements") and "conda_env" not in kwargs:
            kwargs.setdefault("pip_requirements", module.get_default_pip_requirements())
        if signature is None and flavor != "pyfunc" and callable(getattr(model, "predict", None)):
            signature = infer_signature(example, model.predict(example))
        if signature is not None:
            kwargs["signature"] = signature
        if flavor == "pyfunc":                 # its first parameter is not the model
            kwargs["python_model"] = model
            info = module.log_model(**kwargs)
        else:
            info = module.log_model(model, **kwargs)
        if info.signature is None:              # e.g. an ONNX graph: ask the model as serving loads it
            from mlflow.models import set_signature

            loaded = mlflow.pyfunc.load_model(info.model_uri)
            set_signature(info.model_uri, infer_signature(example, loaded.predict(example)))
        version = self._register(info.model_uri, info.model_id, run.info.run_id)
        self._tag_reference(version, run.info.run_id)
        self.client.set_model_version_tag(self.model, version, TAG_PREFIX + "flavor", flavor)
        mlflow.set_tag(TAG_PREFIX + "model_version", version)
        self.output(run_id=run.info.run_id, model_version=version, reused=False)
        return version


def known_flavors() -> list[str]:
    """The MLflow flavours that can log a model (``mlflow.<name>.log_model`` exists), found
    without importing any of them (importing one would import its ML library)."""
    import importlib.util
    import re

    import mlflow

    names = []
    for name in sorted(vars(mlflow)):
        spec = importlib.util.find_spec(f"mlflow.{name}") if not name.startswith("_") else None
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        try:
            source = Path(spec.origin).read_text(encoding="utf-8")
        except OSError:
            continue
        if re.search(r"^def log_model\(|^log_model =|\bimport log_model\b|^\s+log_model,", source, re.M):
            names.append(name)
    return names


def flavor_module(flavor: str) -> Any:
    """The module ``mlflow.<flavor>``; a JobContextError naming the known flavours otherwise."""
    import importlib

    known = known_flavors()
    if flavor not in known:
        raise JobContextError(f"log_model: unknown MLflow flavour {flavor!r}; known flavours: {', '.join(known)}")
    try:
        return importlib.import_module(f"mlflow.{flavor}")
    except ImportError as exc:
        raise JobContextError(f"log_model: MLflow flavour {flavor!r} needs a library this step's "
                              f"environment lacks: {exc}") from exc

def _copy_reference_tags(client: Any, model: str, version: str, run_id: str) -> None:
    from stepkit import reference

    tags = client.get_run(run_id).data.tags
    for name in (reference.TAG_DIGEST, reference.TAG_VERSIONS):
        if tags.get(name):
            client.set_model_version_tag(model, version, name, tags[name])


_COORDINATOR: dict[int, Any] = {}


def _ask_coordinator(fd: int, message: dict[str, Any]) -> dict[str, Any]:
    """One line to the sweep coordinator over the inherited socket, one line back."""
    stream = _COORDINATOR.get(fd)
    if stream is None:
        stream = _COORDINATOR[fd] = socket.socket(fileno=fd).makefile("rwb")
    stream.write(json.dumps(message).encode() + b"\n")
    stream.flush()
    line = stream.readline()
    if not line:
        raise JobContextError("the sweep coordinator closed its socket (the sweep was stopped?)")
    return json.loads(line)


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
    """Serialize first (a value that is not JSON leaves the old file alone), then replace ``path`` atomically."""
    try:
        text = json.dumps(value, indent=2, sort_keys=True, allow_nan=False, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise JobContextError(f"outputs must be JSON (finite numbers, str, list, dict): {exc}") from None
    with replacing(path) as tmp:
        tmp.write_text(text + "\n")


def _jsonable(value: Any) -> Any:
    """JSON fallback for numpy scalars/arrays and paths."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serializable")
