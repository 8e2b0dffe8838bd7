"""The test cluster's certificates and keys: one CA, the API server's serving certificate, an admin
client certificate (group ``system:masters``) and the service-account signing key.

Made with ``cryptography`` rather than by shelling out to ``openssl``: one dependency that is there
wherever paychaos is installed, and no command lines to get subtly wrong. ECDSA P-256 throughout:
Kubernetes accepts it for every use here, and it is generated in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = dt.timedelta(days=30)  # a test cluster's lifetime, with room
SERVICE_IP = "10.96.0.1"  # the first address of the service range: the `kubernetes` Service
SERVING_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local")


@dataclass(frozen=True)
class Pki:
    """Where each file is; ``create`` writes them all."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.root / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.root / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.root / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.root / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.root / "sa.pub"

    def create(self, host: str = "127.0.0.1") -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ca_key = _key()
        ca = _certificate(_name("paychaos-test-cluster-ca"), ca_key.public_key(), _name("paychaos-test-cluster-ca"),
                          ca_key, ca=True)
        _write_key(self.ca_key, ca_key)
        _write_cert(self.ca_cert, ca)

        serving_key = _key()
        sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys((host, "127.0.0.1", SERVICE_IP))]
        sans += [x509.DNSName(n) for n in SERVING_NAMES]
        _write_key(self.serving_key, serving_key)
        _write_cert(self.serving_cert, _certificate(_name("kube-apiserver"), serving_key.public_key(), ca.subject,
                                                    ca_key, sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH))

        admin_key = _key()
        _write_key(self.admin_key, admin_key)
        _write_cert(self.admin_cert, _certificate(_name("paychaos-admin", "system:masters"), admin_key.public_key(),
                                                  ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH))

        sa_key = _key()
        _write_key(self.sa_key, sa_key)
        self.sa_pub.write_bytes(sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def _certificate(subject: x509.Name, public_key: ec.EllipticCurvePublicKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
                 sans: list[x509.GeneralName] | None = None, usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALID_FOR)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
