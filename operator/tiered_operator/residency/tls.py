"""A private CA and a serving certificate for the admission webhook, generated in memory.

The API server calls the webhook over TLS and checks its certificate against the `caBundle` of the
ValidatingWebhookConfiguration, so the operator brings its own CA (kopf's built-in generator needs an extra
package). Certificates carry every host as a SAN: the API server (Go) ignores the CommonName.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tiered_operator.settings import WebhookConfig


@dataclass(frozen=True)
class WebhookCertificates:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def build_webhook_certificates(hosts: Sequence[str], days: int = 365) -> WebhookCertificates:
    """A fresh CA and a serving certificate for `hosts` (IP addresses or DNS names), valid for `days`."""
    if not hosts:
        raise ValueError("the webhook certificate needs at least one host")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tiered-operator webhook CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in dict.fromkeys(hosts)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return WebhookCertificates(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def ensure_certificates(config: WebhookConfig) -> tuple[Path, Path, Path]:
    """tls.crt, tls.key, ca.crt in the cert dir: mounted ones are used as they are, else a fresh CA is made."""
    directory = Path(config.cert_dir or tempfile.mkdtemp(prefix="tiered-webhook-"))
    cert, key, ca = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
    if not (cert.exists() and key.exists() and ca.exists()):
        hosts = [h for h in (config.host, config.addr, "127.0.0.1", "localhost") if h and h != "0.0.0.0"]
        made = build_webhook_certificates(list(dict.fromkeys(hosts)))
        directory.mkdir(parents=True, exist_ok=True)
        ca.write_bytes(made.ca_pem)
        cert.write_bytes(made.cert_pem)
        key.touch(mode=0o600)
        key.chmod(0o600)
        key.write_bytes(made.key_pem)
    return cert, key, ca
