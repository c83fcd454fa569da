"""PromQL in the chart's alerts and the Grafana dashboard: it parses, and it names real metrics.

Parsing is promql-parser's (a Python binding of the Rust `promql-parser` crate, which follows
Prometheus's own grammar and function list): what Prometheus would refuse at rule load or query
time fails here. The metrics an expression may name are read from the code that defines them
(every `Counter(...)`, `Gauge(...)`, `Histogram(...)` in agents/ and serving/, with the series
Prometheus's client exposes for each: `_total`, `_bucket`/`_count`/`_sum`), so renaming a metric
or dropping a label fails the test of every rule and panel that still uses the old one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import promql_parser as promql

REPO = Path(__file__).resolve().parents[2]
METRIC_SOURCES = ("agents", "serving")
# Labels the scrape adds to every series (Prometheus's `job`/`instance`; Kubernetes discovery's).
SCRAPE_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "service", "endpoint"})
KINDS = {"Counter": ("_total", "_created"), "Gauge": ("",),
         "Histogram": ("_bucket", "_count", "_sum", "_created"), "Summary": ("", "_count", "_sum", "_created")}
# Grafana's built-in range variables are not PromQL; a fixed duration stands in for them.
GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}")


def defined_metrics() -> dict[str, frozenset[str]]:
    """Every series name the worker and serving expose → the label names it carries."""
    series: dict[str, frozenset[str]] = {}
    for package in METRIC_SOURCES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Call) and _called(node) in KINDS and node.args
                        and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                    continue
                kind, name = _called(node), node.args[0].value
                labels = _label_names(node)
                base = name.removesuffix("_total") if kind == "Counter" else name
                for suffix in KINDS[kind]:
                    extra = {"le"} if suffix == "_bucket" else set()
                    series[base + suffix] = frozenset(labels | extra)
    return series


def _called(node: ast.Call) -> str:
    return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")


def _label_names(node: ast.Call) -> set[str]:
    given = node.args[2] if len(node.args) > 2 else next(
        (k.value for k in node.keywords if k.arg == "labelnames"), None)
    if isinstance(given, (ast.List, ast.Tuple)):
        return {e.value for e in given.elts if isinstance(e, ast.Constant)}
    return set()


def parse(expr: str) -> promql.Expr:
    """Prometheus's parse of `expr`; Grafana's range variables read as 5m. Raises ValueError."""
    return promql.parse(GRAFANA_RANGES.sub("5m", expr))


def selectors(expr: promql.Expr) -> list[promql.VectorSelector]:
    found: list[promql.VectorSelector] = []

    def visit(node) -> None:          # the walk enters a range selector's vector selector too
        if isinstance(node, promql.VectorSelector):
            found.append(node)
    promql.walk(expr, visit)
    return found


def problems(expr: str, metrics: dict[str, frozenset[str]]) -> list[str]:
    """What is wrong with `expr`: a parse error, or a metric or label that does not exist."""
    try:
        tree = parse(expr)
    except ValueError as exc:
        return [f"does not parse: {exc}"]
    out = []
    for selector in selectors(tree):
        if not selector.name:
            out.append("a selector without a metric name")
        elif selector.name not in metrics:
            out.append(f"unknown metric {selector.name}")
        else:
            for matcher in selector.matchers.matchers:
                if matcher.name not in metrics[selector.name] | SCRAPE_LABELS:
                    out.append(f"{selector.name} has no label {matcher.name}")
    return out


def result_labels(expr: promql.Expr, metrics: dict[str, frozenset[str]]) -> frozenset[str]:
    """The labels the series of `expr`'s result can carry (what `$labels.x` may name)."""
    if isinstance(expr, promql.BinaryExpr):          # filters and arithmetic keep the left side's
        return result_labels(expr.lhs, metrics)
    if isinstance(expr, (promql.ParenExpr, promql.UnaryExpr)):
        return result_labels(expr.expr, metrics)
    if isinstance(expr, promql.AggregateExpr):
        modifier = expr.modifier
        inner = result_labels(expr.expr, metrics)
        if modifier is None:
            return frozenset()
        if modifier.type == promql.AggModifierType.By:
            return frozenset(modifier.labels)
        return inner - set(modifier.labels)
    if isinstance(expr, promql.Call):
        if expr.func.name == "histogram_quantile":
            return result_labels(expr.args[1], metrics) - {"le"}
        vectors = [a for a in expr.args if not isinstance(a, (promql.NumberLiteral, promql.StringLiteral))]
        return result_labels(vectors[0], metrics) if vectors else frozenset()
    if isinstance(expr, promql.MatrixSelector):
        return result_labels(expr.vector_selector, metrics)
    if isinstance(expr, promql.VectorSelector):
        return metrics.get(expr.name, frozenset()) | SCRAPE_LABELS
    return frozenset()
