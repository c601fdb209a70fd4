"""The local control plane's own PKI: one CA, a serving cert, client certs, and the service-account key pair."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)

# Client identities the built-in RBAC already knows (system:masters is the admin group).
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("tiered-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "scheduler": ("system:kube-scheduler", None),
    "kwok": ("tiered-kwok", "system:masters"),
}
REAL_NODE_NAME = "real-node-0"
# A real node's identities (created when a real node is added): the Node authorizer knows system:node:<name>,
# the built-in system:node-proxier binding knows system:kube-proxy, kube-router gets the ClusterRole the real-node
# code applies, and the API server uses the last one to call the kubelet (logs, exec, port-forward).
NODE_CLIENTS: dict[str, tuple[str, str | None]] = {
    "kubelet": (f"system:node:{REAL_NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", None),
    "kube-router": ("tiered-kube-router", None),
    "apiserver-kubelet-client": ("tiered-apiserver-kubelet-client", "system:masters"),
}
SERVING_IPS = ("127.0.0.1", "10.0.0.1")
"""Addresses the API server's certificate always names: loopback and the `kubernetes` Service's ClusterIP."""


@dataclass(frozen=True)
class Pki:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    def client_cert(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def client_key(self, name: str) -> Path:
        return self.directory / f"{name}.key"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _load_ca(pki: Pki) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())


def _serving_ips(pki: Pki) -> set[str]:
    cert = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def _write_serving(pki: Pki, ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, ips: list[str]) -> None:
    serving_key = _key()
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips),
    ]
    serving = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), ca_name,
                 serving_key.public_key())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.serving_key, serving_key)
    _write_cert(pki.serving_cert, serving)


def _write_client(pki: Pki, name: str, common_name: str, group: str | None, ca_key: ec.EllipticCurvePrivateKey,
                  ca_name: x509.Name) -> None:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if group:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, group))
    client_key = _key()
    cert = (
        _builder(x509.Name(attrs), ca_name, client_key.public_key())
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.client_key(name), client_key)
    _write_cert(pki.client_cert(name), cert)


def ensure_pki(directory: Path, extra_ips: tuple[str, ...] = (), node_clients: bool = False) -> Pki:
    """Create the PKI under `directory` unless it already exists (a restart keeps clients' kubeconfigs valid).

    `extra_ips`: more addresses the serving certificate must name (a real node's API address); the certificate
    is reissued, from the same CA, only when one is missing. `node_clients`: also the real node's identities.
    """
    pki = Pki(directory)
    if all(p.exists() for p in (pki.ca_cert, pki.serving_cert, pki.sa_key, pki.client_cert("admin"))):
        ca_key, ca_cert = _load_ca(pki)
        wanted = [*SERVING_IPS, *extra_ips]
        if not set(wanted) <= _serving_ips(pki):
            _write_serving(pki, ca_key, ca_cert.subject, sorted(set(wanted) | _serving_ips(pki)))
        if node_clients:
            for name, (common_name, group) in NODE_CLIENTS.items():
                if not pki.client_cert(name).exists():
                    _write_client(pki, name, common_name, group, ca_key, ca_cert.subject)
        return pki
    directory.mkdir(parents=True, exist_ok=True)

    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tiered-dev-ca")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, ca_cert)
    _write_serving(pki, ca_key, ca_name, [*SERVING_IPS, *extra_ips])
    clients = {**CLIENTS, **(NODE_CLIENTS if node_clients else {})}
    for name, (common_name, group) in clients.items():
        _write_client(pki, name, common_name, group, ca_key, ca_name)

    sa_key = _key()
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
