"""Kafka security settings: checked once with the setting named, mapped into each client's names.

The clients themselves are exercised on Apache Kafka in tests/integration/test_kafka_security.py;
these pin what each mapping hands them, the SASL conversations the probe speaks (RFC test
vectors), and that secrets are read when a client is made, not when settings are.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import sys
import types
from pathlib import Path

import faust
import pytest

from agents import transport
from devstack.kafka import cluster_id, unsecured_token
from devstack.tls import make_certificates
from loopline.settings import Settings
from streams import sasl
from streams.security import SETTINGS, KafkaSecurity, SecurityConfigError


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls"))


SCRAM = dict(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", username="alice", password="pw")


@pytest.mark.parametrize("kwargs, named, why", [
    (dict(protocol="TLS"), "LOOPLINE_KAFKA_SECURITY_PROTOCOL", "not one of"),
    (dict(protocol="SASL_SSL"), "LOOPLINE_KAFKA_SASL_MECHANISM", "required with"),
    (dict(protocol="SSL", sasl_mechanism="PLAIN"), "LOOPLINE_KAFKA_SASL_MECHANISM", "uses no SASL"),
    (dict(SCRAM, sasl_mechanism="GSSAPI"), "LOOPLINE_KAFKA_SASL_MECHANISM", "not one of"),
    (dict(SCRAM, password=None), "LOOPLINE_KAFKA_SASL_PASSWORD_FILE", "exactly one of"),
    (dict(SCRAM, password_file=Path("/p")), "LOOPLINE_KAFKA_SASL_PASSWORD_FILE", "exactly one of"),
    (dict(SCRAM, username=None), "LOOPLINE_KAFKA_SASL_USERNAME_FILE", "exactly one of"),
    (dict(protocol="SSL", username="alice"), "LOOPLINE_KAFKA_SASL_USERNAME", "not used with SSL"),
    (dict(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER"), "LOOPLINE_KAFKA_SASL_OAUTH_TOKEN_FILE",
     "exactly one of"),
    (dict(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", oauth_token_callback="mod.fn"),
     "LOOPLINE_KAFKA_SASL_OAUTH_TOKEN_CALLBACK", "MODULE:FUNCTION"),
    (dict(SCRAM, oauth_token_file=Path("/t")), "LOOPLINE_KAFKA_SASL_OAUTH_TOKEN_FILE", "not used with"),
    (dict(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", username="a", password="b",
          ca_file=Path("/ca")), "LOOPLINE_KAFKA_SSL_CA_FILE", "uses no TLS"),
    (dict(protocol="SSL", cert_file=Path("/c")), "LOOPLINE_KAFKA_SSL_KEY_FILE", "go together"),
])
def test_a_combination_that_cannot_work_is_refused_naming_the_setting(kwargs, named, why):
    with pytest.raises(SecurityConfigError, match=f"^{named}: .*{why}"):
        KafkaSecurity(**kwargs)


def test_settings_build_it_from_the_environment_and_back(monkeypatch, tmp_path):
    """`env()` (what LocalStack hands its processes) and Settings agree on every name."""
    security = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                             username_file=tmp_path / "u", password_file=tmp_path / "p",
                             ca_file=tmp_path / "ca", cert_file=tmp_path / "c", key_file=tmp_path / "k",
                             check_hostname=False)
    assert set(security.env()) <= set(SETTINGS.values())
    for name, value in security.env().items():
        monkeypatch.setenv(name, value)
    assert Settings().kafka_security == security
    monkeypatch.setenv("LOOPLINE_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")    # any case
    monkeypatch.delenv("LOOPLINE_KAFKA_SSL_CA_FILE")
    monkeypatch.delenv("LOOPLINE_KAFKA_SSL_CERT_FILE")
    monkeypatch.delenv("LOOPLINE_KAFKA_SSL_KEY_FILE")
    assert Settings().kafka_security.protocol == "SASL_PLAINTEXT"


def test_settings_refuse_what_cannot_work_at_start(monkeypatch):
    monkeypatch.setenv("LOOPLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValueError, match="LOOPLINE_KAFKA_SASL_MECHANISM: required"):
        Settings()


def test_the_default_is_plaintext_for_every_client():
    security = KafkaSecurity()
    assert security.kafka_python() == {"security_protocol": "PLAINTEXT"}
    assert security.confluent() == {"security.protocol": "plaintext"}
    assert security.ssl_context() is None and transport.credentials(security) is None
    assert security.env() == {}


def test_secrets_are_read_when_a_client_is_made_so_a_rotated_file_is_seen(tmp_path):
    (tmp_path / "user").write_text("alice\n")
    (tmp_path / "password").write_text("first\n")
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                             username_file=tmp_path / "user", password_file=tmp_path / "password")
    assert security.kafka_python()["sasl_plain_password"] == "first"
    (tmp_path / "password").write_text("second")
    assert security.kafka_python()["sasl_plain_username"] == "alice"
    assert security.confluent()["sasl.password"] == "second"
    (tmp_path / "password").unlink()
    with pytest.raises(SecurityConfigError, match=r"^LOOPLINE_KAFKA_SASL_PASSWORD_FILE=.*cannot read"):
        security.kafka_python()


def test_the_password_stays_out_of_reprs_and_log_lines():
    security = KafkaSecurity(**dict(SCRAM, password="hunter2"))
    assert "hunter2" not in repr(security) and "hunter2" not in security.describe()


def test_tls_checks_the_certificate_and_the_hostname_unless_told_not_to(certs):
    security = KafkaSecurity(protocol="SSL", ca_file=certs.ca, cert_file=certs.client_cert,
                             key_file=certs.client_key)
    context = security.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()][0][0][0][1].startswith("loopline test CA")
    relaxed = KafkaSecurity(protocol="SSL", ca_file=certs.ca, check_hostname=False).ssl_context()
    assert relaxed.verify_mode == ssl.CERT_REQUIRED and not relaxed.check_hostname
    assert security.confluent() == {
        "security.protocol": "ssl", "ssl.ca.location": str(certs.ca),
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.certificate.location": str(certs.client_cert), "ssl.key.location": str(certs.client_key)}
    public = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="PLAIN", username="key", password="secret")
    assert public.confluent()["ssl.ca.location"] == "probe"      # librdkafka: the system's CAs
    with pytest.raises(SecurityConfigError, match="^LOOPLINE_KAFKA_SSL_CA_FILE="):
        KafkaSecurity(protocol="SSL", ca_file=certs.client_key).ssl_context()   # not a certificate


def test_each_python_client_family_gets_the_sasl_names_it_knows():
    security = KafkaSecurity(**SCRAM)
    python = security.kafka_python()
    assert {k: v for k, v in python.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice", "sasl_plain_password": "pw"}
    assert isinstance(python["ssl_context"], ssl.SSLContext)
    faust_credentials = transport.credentials(security)      # Faust hands these to aiokafka
    assert isinstance(faust_credentials, faust.SASLCredentials)
    assert (faust_credentials.protocol.value, faust_credentials.mechanism.value,
            faust_credentials.username, faust_credentials.password) == ("SASL_SSL", "SCRAM-SHA-512",
                                                                        "alice", "pw")
    plaintext = transport.credentials(KafkaSecurity(**dict(SCRAM, protocol="SASL_PLAINTEXT")))
    assert plaintext.protocol.value == "SASL_PLAINTEXT" and plaintext.ssl_context is None
    assert isinstance(transport.credentials(KafkaSecurity(protocol="SSL")), faust.SSLCredentials)


def test_oauthbearer_tokens_come_from_the_file_at_each_request(tmp_path):
    token = unsecured_token("alice", lifetime=600)
    (tmp_path / "token").write_text(token + "\n")
    security = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                             oauth_token_file=tmp_path / "token")
    assert security.kafka_python()["sasl_oauth_token_provider"].token() == token
    aio = transport.credentials(security)
    assert isinstance(aio, faust.OAuthCredentials) and aio.protocol.value == "SASL_SSL"
    assert asyncio.run(aio.oauth_cb.token()) == token
    value, expiry, principal, extensions = security.confluent()["oauth_cb"]("")
    assert (value, principal, extensions) == (token, "alice", {})
    assert expiry == pytest.approx(sasl_expiry(token))
    (tmp_path / "token").write_text("opaque-token")       # rotated, and not a JWT
    value, expiry, principal, _ = security.confluent()["oauth_cb"]("")
    assert value == "opaque-token" and expiry > 0 and principal


def sasl_expiry(token: str) -> float:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]


def test_an_oauthbearer_callback_is_module_colon_function(monkeypatch):
    module = types.ModuleType("my_tokens")
    module.fetch = lambda: "from-the-callback"
    monkeypatch.setitem(sys.modules, "my_tokens", module)
    security = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                             oauth_token_callback="my_tokens:fetch")
    assert security.token() == "from-the-callback"
    missing = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                            oauth_token_callback="my_tokens:absent")
    with pytest.raises(SecurityConfigError, match="^LOOPLINE_KAFKA_SASL_OAUTH_TOKEN_CALLBACK="):
        missing.token()


def test_scram_sha_256_follows_rfc_7677s_example():
    talk = sasl.conversation("SCRAM-SHA-256", username="user", password="pencil",
                             nonce="rOprNGfwEbeRWgbNEkqO")
    assert next(talk) == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert talk.send(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096") == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    with pytest.raises(StopIteration):                      # the server proved it knows the password
        talk.send(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_scram_refuses_a_server_that_cannot_prove_it_knows_the_password():
    talk = sasl.conversation("SCRAM-SHA-256", username="user", password="pencil",
                             nonce="rOprNGfwEbeRWgbNEkqO")
    next(talk)
    talk.send(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    with pytest.raises(sasl.SaslError, match="signature"):
        talk.send(b"v=AAAA")
    other = sasl.conversation("SCRAM-SHA-512", username="u", password="p", nonce="abc")
    next(other)
    with pytest.raises(sasl.SaslError, match="nonce"):
        other.send(b"r=xyz,s=AAAA,i=4096")


def test_plain_and_oauthbearer_are_one_message():
    assert list(sasl.conversation("PLAIN", username="alice", password="pw")) == [b"\0alice\0pw"]
    talk = sasl.conversation("OAUTHBEARER", token="t0k")
    assert next(talk) == b"n,,\x01auth=Bearer t0k\x01\x01"
    assert talk.send(b'{"status":"invalid_token"}') == b"\x01"     # RFC 7628: acknowledge the error


def test_the_cli_names_the_setting_in_one_line_and_exits_2(monkeypatch, capsys):
    from loopline import cli

    monkeypatch.setenv("LOOPLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    assert cli.main(["topics"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: LOOPLINE_KAFKA_SASL_MECHANISM: required with LOOPLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL "
        "(one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER)"]


def test_a_cluster_id_never_starts_with_a_dash_which_the_format_tool_reads_as_an_option():
    import uuid
    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # base64url of 0xF8... begins with '-'
    draws = iter([dashed, dashed, uuid.UUID(int=1)])
    made = cluster_id(lambda: next(draws))
    assert not made.startswith("-") and len(made) == 22
    assert base64.urlsafe_b64decode(made + "==") == uuid.UUID(int=1).bytes
