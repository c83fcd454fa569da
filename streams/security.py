"""Kafka security, one set of settings for every client: TLS, SASL, and who may be refused.

Why: loopline talks to Kafka through four clients (kafka-python for the topic admin, the
publisher and the CLI's readers; aiokafka inside Faust; librdkafka for the batch consumer; a
stdlib probe), and each spells the same thing its own way (`sasl_plain_username`,
`sasl.username`, `ssl_context`, `ssl.ca.location`). MSK, Confluent Cloud and most company
clusters need TLS and SASL, and a setting one client forgets shows up only in production. So
the settings live once, here, are checked once (an error names the `LOOPLINE_KAFKA_*` setting
to fix), and each client family gets them in its own names from one method. Secrets are read
from their files when a client is made: a rotated mounted Secret reaches the next client.

A refused password or an untrusted certificate is a configuration error, not an outage: the
probe (`streams.probe`) raises `KafkaRefused` for it, and the worker, the serving process and
the CLI say so in one line and exit with code 3 instead of retrying forever.
"""

from __future__ import annotations

import base64
import importlib
import json
import ssl
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")

# The environment variable behind each field (loopline.settings reads them): errors name these.
SETTINGS = {
    "protocol": "LOOPLINE_KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "LOOPLINE_KAFKA_SASL_MECHANISM",
    "username": "LOOPLINE_KAFKA_SASL_USERNAME",
    "username_file": "LOOPLINE_KAFKA_SASL_USERNAME_FILE",
    "password": "LOOPLINE_KAFKA_SASL_PASSWORD",
    "password_file": "LOOPLINE_KAFKA_SASL_PASSWORD_FILE",
    "oauth_token_file": "LOOPLINE_KAFKA_SASL_OAUTH_TOKEN_FILE",
    "oauth_token_callback": "LOOPLINE_KAFKA_SASL_OAUTH_TOKEN_CALLBACK",
    "ca_file": "LOOPLINE_KAFKA_SSL_CA_FILE",
    "cert_file": "LOOPLINE_KAFKA_SSL_CERT_FILE",
    "key_file": "LOOPLINE_KAFKA_SSL_KEY_FILE",
    "check_hostname": "LOOPLINE_KAFKA_SSL_CHECK_HOSTNAME",
}
TOKEN_LIFETIME = 300.0      # seconds a token without `exp` is used before its file is read again


class SecurityConfigError(ValueError):
    """A security setting that cannot work; the message names the setting."""


class KafkaRefused(RuntimeError):
    """Kafka refused our credentials, or we refused its certificate: retrying cannot help."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None               # inline: for development; production uses files
    username_file: Path | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    oauth_token_file: Path | None = None      # OAUTHBEARER: a token file (re-read when expiring)
    oauth_token_callback: str | None = None   # or "module:function" returning a token
    ca_file: Path | None = None               # None: the system's trusted CAs (MSK, Confluent Cloud)
    cert_file: Path | None = None             # a client certificate (mutual TLS) and its key
    key_file: Path | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        for name, why in self._problems():
            raise SecurityConfigError(f"{SETTINGS[name]}: {why}")

    def _problems(self) -> Iterator[tuple[str, str]]:
        """(field, why) for each way these settings cannot work, the most basic first."""
        mechanism, protocol = self.sasl_mechanism, f"{SETTINGS['protocol']}={self.protocol}"
        if self.protocol not in PROTOCOLS:
            yield "protocol", f"{self.protocol!r} is not one of {', '.join(PROTOCOLS)}"
        if self.sasl and mechanism is None:
            yield "sasl_mechanism", f"required with {protocol} (one of {', '.join(MECHANISMS)})"
        if not self.sasl and mechanism is not None:
            yield "sasl_mechanism", f"set, but {protocol} uses no SASL (SASL_SSL or SASL_PLAINTEXT do)"
        if mechanism is not None and mechanism not in MECHANISMS:
            yield "sasl_mechanism", f"{mechanism!r} is not one of {', '.join(MECHANISMS)}"
        for inline, file in (("username", "username_file"), ("password", "password_file")):
            given = [name for name in (inline, file) if getattr(self, name) is not None]
            if mechanism in (None, "OAUTHBEARER") and given:
                yield given[0], f"not used with {self._mode()}"
            elif mechanism not in (None, "OAUTHBEARER") and len(given) != 1:
                yield file, (f"{self._mode()} needs exactly one of {SETTINGS[inline]} and "
                             f"{SETTINGS[file]} (a mounted Secret's file)")
        tokens = [name for name in ("oauth_token_file", "oauth_token_callback") if getattr(self, name)]
        if mechanism == "OAUTHBEARER" and len(tokens) != 1:
            yield "oauth_token_file", (f"OAUTHBEARER needs exactly one of {SETTINGS['oauth_token_file']} "
                                       f"and {SETTINGS['oauth_token_callback']}")
        if mechanism != "OAUTHBEARER" and tokens:
            yield tokens[0], f"not used with {self._mode()}"
        if self.oauth_token_callback and ":" not in self.oauth_token_callback:
            yield "oauth_token_callback", f"{self.oauth_token_callback!r} is not MODULE:FUNCTION"
        for name in ("ca_file", "cert_file", "key_file"):
            if getattr(self, name) is not None and not self.tls:
                yield name, f"set, but {protocol} uses no TLS (SSL or SASL_SSL do)"
        if (self.cert_file is None) != (self.key_file is None):
            yield ("key_file" if self.key_file is None else "cert_file",
                   f"{SETTINGS['cert_file']} and {SETTINGS['key_file']} go together")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def _mode(self) -> str:
        return f"{self.protocol}/{self.sasl_mechanism}" if self.sasl_mechanism else self.protocol

    def describe(self) -> str:
        """How we connect, for log lines and errors (no secret in it)."""
        return self._mode() + (f", CA {self.ca_file}" if self.ca_file else "")

    # --- secrets, read when a client is made ------------------------------------------------------
    def _secret(self, inline: str, file: str) -> str:
        value = getattr(self, inline)
        return value if value is not None else self._read(file)

    def _read(self, file: str) -> str:
        path = getattr(self, file)
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise SecurityConfigError(f"{SETTINGS[file]}={path}: cannot read it ({exc.strerror})") from None
        if not value:
            raise SecurityConfigError(f"{SETTINGS[file]}={path}: the file is empty")
        return value

    def credentials(self) -> tuple[str, str]:
        """(username, password) for PLAIN and SCRAM."""
        return self._secret("username", "username_file"), self._secret("password", "password_file")

    def token(self) -> str:
        """The current OAUTHBEARER token: from its file, or from the callback."""
        if self.oauth_token_file is not None:
            return self._read("oauth_token_file")
        module, _, name = self.oauth_token_callback.partition(":")
        try:
            callback: Callable[[], str] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise SecurityConfigError(f"{SETTINGS['oauth_token_callback']}="
                                      f"{self.oauth_token_callback}: {exc}") from None
        return str(callback())

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context: the CA (else the system's), hostname checked unless told not."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise SecurityConfigError(f"{SETTINGS['ca_file']}={self.ca_file}: {exc}") from None
        context.check_hostname = self.check_hostname        # the certificate itself stays checked
        if self.cert_file is not None:
            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise SecurityConfigError(f"{SETTINGS['cert_file']}={self.cert_file} / "
                                          f"{SETTINGS['key_file']}={self.key_file}: {exc}") from None
        return context

    # --- each client family's names ----------------------------------------------------------------
    def kafka_python(self) -> dict:
        """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer, KafkaAdminClient.
        (aiokafka's, for Faust, are made in agents.transport: the serving process may not
        import aiokafka.)"""
        out: dict = {"security_protocol": self.protocol}
        if self.tls:
            out["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism == "OAUTHBEARER":
            from kafka.net.sasl.oauth import AbstractTokenProvider

            security = self

            class TokenProvider(AbstractTokenProvider):
                def token(self):
                    return security.token()

            out.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=TokenProvider())
        elif self.sasl_mechanism is not None:
            username, password = self.credentials()
            out.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=username,
                       sasl_plain_password=password)
        return out

    def confluent(self) -> dict:
        """librdkafka properties for confluent-kafka's Consumer and Producer."""
        out: dict = {"security.protocol": self.protocol.lower()}
        if self.tls:
            out["ssl.ca.location"] = str(self.ca_file) if self.ca_file else "probe"
            out["ssl.endpoint.identification.algorithm"] = "https" if self.check_hostname else "none"
            if self.cert_file is not None:
                out.update({"ssl.certificate.location": str(self.cert_file),
                            "ssl.key.location": str(self.key_file)})
        if self.sasl_mechanism == "OAUTHBEARER":
            out.update({"sasl.mechanisms": "OAUTHBEARER", "oauth_cb": self._librdkafka_token})
        elif self.sasl_mechanism is not None:
            username, password = self.credentials()
            out.update({"sasl.mechanisms": self.sasl_mechanism, "sasl.username": username,
                        "sasl.password": password})
        return out

    def _librdkafka_token(self, _config: str) -> tuple[str, float, str, dict]:
        """librdkafka wants (token, expiry, principal, extensions): read them off the JWT."""
        token = self.token()
        claims = _jwt_claims(token)
        expiry = float(claims.get("exp") or time.time() + TOKEN_LIFETIME)
        return token, expiry, str(claims.get("sub") or "loopline"), {}

    def env(self) -> dict[str, str]:
        """The `LOOPLINE_KAFKA_*` variables that rebuild this (for child processes)."""
        out = {}
        for each in fields(self):
            value = getattr(self, each.name)
            if value is not None and value != each.default:
                out[SETTINGS[each.name]] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


def _jwt_claims(token: str) -> dict:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}                       # an opaque token: librdkafka gets our default lifetime
    return claims if isinstance(claims, dict) else {}
