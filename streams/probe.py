"""Is Kafka there, and will it let us in? One bounded answer before any client is made.

Why not ask a client: against an address nobody answers, kafka-python retries for over half a
minute and ends in a timeout traceback; with a wrong password or an untrusted certificate, every
client (kafka-python, aiokafka, librdkafka) says only "unable to bootstrap" or "transport
failure", and the broker's own words are in its logs. The probe speaks the protocol itself,
stdlib only, so it cannot hang in a client's retry loop: one ApiVersions round trip, over TLS
and SASL when the settings ask for them (`streams.security`, `streams.sasl`). The worker waits
on it at start-up and watches the broker with it; the CLI asks it before any command that
reads the bus.
"""

from __future__ import annotations

import socket
import ssl
import struct

from streams import sasl
from streams.security import SETTINGS, KafkaRefused, KafkaSecurity


def probe(bootstrap: str, timeout: float = 2.0, security: KafkaSecurity | None = None) -> str | None:
    """One Kafka ApiVersions round trip to each bootstrap address until one answers.

    Returns None when a broker answered, else why not. A TCP connect is not enough: a frozen
    (SIGSTOPped) broker still completes handshakes from its kernel backlog, it only never
    answers; this waits for the protocol's answer. Stdlib only, so it cannot hang in a client's
    own retry loop.

    With `security`, it speaks TLS (the certificate checked as the clients check it) and, over
    SASL, authenticates (ApiVersions is allowed before, so that proves only reachability).
    A refused certificate or password raises KafkaRefused: a configuration error that no
    retry fixes, where every other failure is a reason to wait.
    """
    security = security or KafkaSecurity()
    context = security.ssl_context()
    reasons = []
    for address in bootstrap.split(","):
        address = address.strip()
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            reasons.append(f"{address!r} is not HOST:PORT")
            continue
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout) as sock:
                sock.settimeout(timeout)
                if context is not None:
                    sock = context.wrap_socket(sock, server_hostname=host or "127.0.0.1")
                with sock:
                    if _call(sock, API_VERSIONS, 0, b"") is None:
                        reasons.append(f"{address}: unexpected answer")
                        continue
                    if security.sasl:
                        _authenticate(sock, security)
                    return None
        except KafkaRefused as exc:
            raise KafkaRefused(f"Kafka at {address} ({security.describe()}): {exc}") from None
        except ssl.SSLError as exc:
            if isinstance(exc, TRANSIENT_TLS):
                reasons.append(f"{address}: {exc}")
                continue
            raise KafkaRefused(f"Kafka at {address} ({security.describe()}): {_tls_refusal(exc)}") from None
        except (OSError, ValueError, struct.error) as exc:
            reasons.append(f"{address}: {exc or type(exc).__name__}")
    return "; ".join(reasons) or "no bootstrap address"


API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
# A connection closed or reset in the handshake is an outage (a broker stopping), not a refusal.
TRANSIENT_TLS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def _tls_refusal(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the broker's certificate was refused ({exc.verify_message or exc.reason}): "
                f"check {SETTINGS['ca_file']} and the broker's address against the certificate")
    return (f"TLS handshake failed ({exc.reason or exc}): check {SETTINGS['protocol']} and the "
            "client certificate")


def _call(sock, api_key: int, version: int, body: bytes, correlation: int = 1) -> bytes | None:
    """One request (header v1, client id "loopline-probe"); the answer's body, or None if the
    answer is not Kafka's."""
    client_id = b"loopline-probe"
    payload = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    header = _recv(sock, 8)
    size, answered = struct.unpack(">ii", header) if len(header) == 8 else (0, None)
    if answered != correlation or not 4 <= size <= 1 << 20:
        return None
    return _recv(sock, size - 4)


def _recv(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _authenticate(sock, security: KafkaSecurity) -> None:
    """SaslHandshake v1, then SaslAuthenticate v1 rounds until the mechanism is done."""
    mechanism = security.sasl_mechanism
    answer = _call(sock, SASL_HANDSHAKE, 1, _string(mechanism), 2)
    if answer is None:
        raise OSError("unexpected answer to SaslHandshake")
    error, offered = struct.unpack(">h", answer[:2])[0], _strings(answer[2:])
    if error:
        raise KafkaRefused(f"this listener does not take SASL {mechanism} (it offers "
                           f"{', '.join(offered) or 'none'}): check LOOPLINE_KAFKA_SASL_MECHANISM "
                           "and the bootstrap port")
    if mechanism == "OAUTHBEARER":
        talk, who = sasl.conversation(mechanism, token=security.token()), "the OAUTHBEARER token"
    else:
        username, password = security.credentials()
        talk, who = sasl.conversation(mechanism, username=username, password=password), f"user {username!r}"
    message, correlation = next(talk), 3
    while True:
        answer = _call(sock, SASL_AUTHENTICATE, 1, struct.pack(">i", len(message)) + message, correlation)
        if answer is None:
            raise OSError("unexpected answer to SaslAuthenticate")
        error, text, reply = _authenticate_answer(answer)
        if error:
            raise KafkaRefused(f"refused {who}: {text or f'error code {error}'}; check the "
                               "LOOPLINE_KAFKA_SASL_* settings")
        try:
            message, correlation = talk.send(reply), correlation + 1
        except StopIteration:
            return
        except sasl.SaslError as exc:
            raise KafkaRefused(str(exc)) from None


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _strings(data: bytes) -> list[str]:
    (count,), data, out = struct.unpack(">i", data[:4]), data[4:], []
    for _ in range(max(count, 0)):
        (size,) = struct.unpack(">h", data[:2])
        out.append(data[2:2 + size].decode(errors="replace"))
        data = data[2 + size:]
    return out


def _authenticate_answer(data: bytes) -> tuple[int, str | None, bytes]:
    """SaslAuthenticate v1: error code, error message (nullable), auth bytes, session lifetime."""
    error, size = struct.unpack(">hh", data[:4])
    text, rest = None, data[4:]
    if size >= 0:
        text, rest = rest[:size].decode(errors="replace"), rest[size:]
    (length,) = struct.unpack(">i", rest[:4])
    return error, text, rest[4:4 + max(length, 0)]
