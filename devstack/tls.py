"""A throw-away certificate authority for the tests: a CA, a server certificate, a client one.

Apache Kafka's TLS listeners in the harness (`devstack.kafka`) need a server certificate that
clients can check against a CA they were given, and mutual TLS needs a client certificate from
the same CA. Everything is made here with `cryptography` and written as PEM files (Kafka 4.x
reads PEM key stores directly), so no `keytool` or `openssl` run is needed. A second
`Certificates` in another folder is a CA the broker does not know: what a wrong CA looks like.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certificates:
    ca: Path                  # the CA certificate: what clients trust
    server_keystore: Path     # the server's key and certificate chain, for `ssl.keystore.location`
    client_cert: Path         # a client certificate (mutual TLS) and its key
    client_key: Path


def make_certificates(folder: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                      days: int = 2) -> Certificates:
    """A CA, a server certificate for `hosts` (as subject alternative names) and a client one."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    # A name of its own: another CA (a wrong one, in a test) must not look like this one.
    ca = _certificate(f"loopline test CA {secrets.token_hex(4)}", ca_key.public_key(), ca_key, None,
                      days, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts]
    server = _certificate(hosts[0], server_key.public_key(), ca_key, ca, days, names=names,
                          usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("loopline test client", client_key.public_key(), ca_key, ca, days,
                          usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    out = Certificates(folder / "ca.pem", folder / "server-keystore.pem",
                       folder / "client.pem", folder / "client.key")
    out.ca.write_bytes(_pem(ca))
    # Kafka's PEM key store: an unencrypted PKCS#8 key, then the chain (leaf first).
    out.server_keystore.write_bytes(_key(server_key) + _pem(server) + _pem(ca))
    out.client_cert.write_bytes(_pem(client))
    out.client_key.write_bytes(_key(client_key))
    return out


def _certificate(common_name: str, public_key, signer_key, issuer: x509.Certificate | None,
                 days: int, *, ca: bool = False, names=(), usage=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.subject if issuer else subject)
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(signer_key, hashes.SHA256())


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
