"""docker-compose.yml's Kafka security: the settings loopline reads, the secrets as mounted files.

Checked with Docker Compose's own `config` (no engine needed): with nothing set the stack stays
plaintext, as its own broker speaks; with the host's KAFKA_*_FILE paths set, the worker and the
serving endpoint get each file as a compose secret and the setting naming it, and the result is
settings loopline accepts.
"""

from __future__ import annotations

import json

import pytest

from loopline.settings import Settings
from tests.k8s.test_compose import REPO, compose_config

SECURE = {"LOOPLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LOOPLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
          "KAFKA_USERNAME_FILE": "username", "KAFKA_PASSWORD_FILE": "password", "KAFKA_CA_FILE": "ca.pem"}


def loaded(monkeypatch, tmp_path, env: dict[str, str]) -> dict:
    for name in ("LOOPLINE_KAFKA_SECURITY_PROTOCOL", "LOOPLINE_KAFKA_SASL_MECHANISM", "KAFKA_USERNAME_FILE",
                 "KAFKA_PASSWORD_FILE", "KAFKA_TOKEN_FILE", "KAFKA_CA_FILE", "KAFKA_CERT_FILE", "KAFKA_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if name.endswith("_FILE"):
            (tmp_path / value).write_text("secret\n")
            value = str(tmp_path / value)
        monkeypatch.setenv(name, value)
    proc = compose_config((REPO / "docker-compose.yml").read_text(), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def kafka_env(service: dict) -> dict[str, str]:
    return {k: v for k, v in service["environment"].items() if k.startswith("LOOPLINE_KAFKA_") and v}


def test_nothing_set_is_plaintext_and_valid_settings(monkeypatch, tmp_path):
    services = loaded(monkeypatch, tmp_path, {})["services"]
    for name in ("worker", "serving-a", "serving-b"):
        env = kafka_env(services[name])
        assert env == {"LOOPLINE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
        assert Settings(**{k.removeprefix("LOOPLINE_").lower(): v for k, v in
                           services[name]["environment"].items()
                           if k.startswith("LOOPLINE_KAFKA_")}).kafka_security.protocol == "PLAINTEXT"


@pytest.mark.parametrize("name", ["worker", "serving-a", "serving-b"])
def test_secured_the_worker_and_serving_read_their_secrets_as_files(monkeypatch, tmp_path, name):
    config = loaded(monkeypatch, tmp_path, SECURE)
    service = config["services"][name]
    env = kafka_env(service)
    assert env == {"LOOPLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                   "LOOPLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                   "LOOPLINE_KAFKA_SASL_USERNAME_FILE": "/run/secrets/kafka_username",
                   "LOOPLINE_KAFKA_SASL_PASSWORD_FILE": "/run/secrets/kafka_password",
                   "LOOPLINE_KAFKA_SSL_CA_FILE": "/run/secrets/kafka_ca"}
    mounted = {s["target"]: config["secrets"][s["source"]]["file"] for s in service["secrets"]}
    for setting, host_file in (("LOOPLINE_KAFKA_SASL_PASSWORD_FILE", "password"),
                               ("LOOPLINE_KAFKA_SSL_CA_FILE", "ca.pem")):
        assert mounted[env[setting]] == str(tmp_path / host_file)
    settings = Settings(**{k.removeprefix("LOOPLINE_").lower(): v for k, v in env.items()})
    assert settings.kafka_security.describe() == "SASL_SSL/SCRAM-SHA-512, CA /run/secrets/kafka_ca"
    assert "LOOPLINE_KAFKA_SASL_PASSWORD_FILE" not in config["services"]["mlflow"].get("environment", {})
