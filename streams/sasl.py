"""The client side of Kafka's SASL mechanisms, stdlib only, for the start-up probe.

Why not let a Kafka client find out: none of them says so. With a wrong password, kafka-python
retries its bootstrap for 30 s and raises "Unable to bootstrap", aiokafka raises the same
words at once, librdkafka "Broker transport failure"; the broker's own answer ("invalid
credentials with SASL mechanism SCRAM-SHA-512") is only in their logs. The probe
(`streams.broker.probe`) authenticates itself with these conversations, so a refused password
is one clear line within a second, before any client is made.

Each conversation is a generator: it yields the next message to send and is sent the broker's
answer (RFC 5802 for SCRAM, RFC 4616 for PLAIN, RFC 7628 for OAUTHBEARER).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Generator

Conversation = Generator[bytes, bytes, None]


class SaslError(Exception):
    """The broker's answer does not prove it knows the password (SCRAM's server signature)."""


def conversation(mechanism: str, *, username: str = "", password: str = "", token: str = "",
                 nonce: str | None = None) -> Conversation:
    """`nonce`: SCRAM's client nonce (random unless given: a test vector needs its own)."""
    if mechanism == "PLAIN":
        return _plain(username, password)
    if mechanism == "OAUTHBEARER":
        return _oauthbearer(token)
    digest = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    return _scram(digest, username, password, nonce or secrets.token_urlsafe(24))


def _plain(username: str, password: str) -> Conversation:
    yield f"\0{username}\0{password}".encode()


def _oauthbearer(token: str) -> Conversation:
    challenge = yield f"n,,\x01auth=Bearer {token}\x01\x01".encode()
    if challenge:       # an error report (RFC 7628 3.2.2): acknowledging it gets the error code
        yield b"\x01"


def _scram(digest: str, username: str, password: str, nonce: str) -> Conversation:
    name = username.replace("=", "=3D").replace(",", "=2C")
    first_bare = f"n={name},r={nonce}"
    server_first = (yield f"n,,{first_bare}".encode()).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(",") if "=" in item)
    if not fields.get("r", "").startswith(nonce):
        raise SaslError("SCRAM: the broker's nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), base64.b64decode(fields["s"]),
                                 int(fields["i"]))
    client_key = hmac.digest(salted, b"Client Key", digest)
    final_bare = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.digest(hashlib.new(digest, client_key).digest(), auth_message, digest)
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
    server_final = (yield f"{final_bare},p={proof}".encode()).decode()
    server_key = hmac.digest(salted, b"Server Key", digest)
    expected = base64.b64encode(hmac.digest(server_key, auth_message, digest)).decode()
    if server_final != f"v={expected}":
        raise SaslError(f"SCRAM: the broker's signature does not match ({server_final[:60]!r})")
