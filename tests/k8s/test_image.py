"""The image holds every package its commands need, and leaves the development harness out.

Why: the Dockerfile copies our packages one folder at a time (so `devstack` stays out), and
`pip install .` installs whatever of them it finds without a word about the rest. A package the
Dockerfile forgets therefore builds fine and fails only where its command runs: `loopline ui`,
run by the Helm chart and docker-compose from this image, had no `ui/` in it. The packages needed
are derived here, not copied from the Dockerfile: everything the console scripts import (the
harness's doors, which the contracts name, left out) and the modules the image's `loopline.yaml`
runs as steps.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import grimp
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The contract that keeps production away from the harness: what it forbids stays out of the image,
# and its ignored imports are the command-line doors into the harness (`loopline demo`, `loopline dev`).
HARNESS_CONTRACT = next(c for c in PYPROJECT["tool"]["importlinter"]["contracts"]
                        if c["name"] == "production code never imports the development harness")
HARNESS = set(HARNESS_CONTRACT["forbidden_modules"])


def installable_packages() -> set[str]:
    """The top-level packages `pip install .` looks for (pyproject's packages.find, `name*`)."""
    return {pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}


def copied(dockerfile: str) -> set[str]:
    """The sources of the Dockerfile's COPY instructions, as written (`./ui/` -> `ui`)."""
    sources = set()
    for instruction in re.sub(r"\\\n", " ", dockerfile).splitlines():
        words = instruction.strip()
        if not words.upper().startswith("COPY "):
            continue
        rest = words[5:].strip()
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        args = [a for a in args if not a.startswith("--")]           # --chown=..., --from=...
        sources.update(a.strip("/").removeprefix("./") or "." for a in args[:-1])
    return sources


def step_modules(config: dict) -> set[str]:
    """The modules the pipelines run as `python -m MODULE` steps."""
    modules = set()
    for model in config.get("models", []):
        for step in model.get("pipeline", {}).get("steps", []):
            command = step.get("command", [])
            modules.update(command[i + 1] for i, word in enumerate(command[:-1]) if word == "-m")
    return modules


def needed_packages() -> set[str]:
    packages = installable_packages()
    graph = grimp.build_graph(*sorted(packages), cache_dir=None)
    for door in HARNESS_CONTRACT.get("ignore_imports", []):
        importer, imported = (name.strip() for name in door.split("->"))
        graph.remove_import(importer=importer, imported=imported)
    entry_points = {target.split(":")[0] for target in PYPROJECT["project"]["scripts"].values()}
    entry_points |= step_modules(yaml.safe_load((ROOT / "loopline.yaml").read_text()))
    modules = set(entry_points)
    for module in entry_points:
        modules |= graph.find_upstream_modules(module)
    return {module.split(".")[0] for module in modules}


def test_the_copy_parser_reads_every_form():
    text = 'COPY a b ./\nCOPY --chown=1:1 ./ui/ ./ui\nCOPY ["serving", "/app/serving"]\nCOPY x \\\n  y ./\nRUN cp z w\n'
    assert copied(text) == {"a", "b", "ui", "serving", "x", "y"}


def test_the_needed_packages_include_what_the_commands_run():
    # `loopline ui`, `loopline serve` and the step modules: a derivation that misses them tests nothing
    assert {"loopline", "streams", "ui", "serving", "examples"} <= needed_packages()


def test_the_image_copies_every_package_its_commands_need():
    sources = copied((ROOT / "Dockerfile").read_text())
    if "." in sources:
        pytest.fail("the Dockerfile copies the whole context: the harness would be in the image")
    needed = needed_packages()
    assert not needed & HARNESS, f"production commands import the harness: {sorted(needed & HARNESS)}"
    assert needed <= installable_packages(), "pyproject's packages.find leaves out " + \
        ", ".join(sorted(needed - installable_packages()))
    missing = needed - sources
    assert not missing, f"the Dockerfile does not COPY {sorted(missing)}, which the image's commands import"


def test_the_image_leaves_the_development_harness_out():
    assert not copied((ROOT / "Dockerfile").read_text()) & HARNESS
