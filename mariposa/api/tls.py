"""The remote listener's certificate: the configured one (``tls_cert``/``tls_key``), or one made
at first start in the state directory and kept (ECDSA P-256, valid ten years, named for the host
name, 127.0.0.1 and the listen address), and its SHA-256 fingerprint, which ``mariposa doctor``
prints and the CLI pins on first use (cli/pinning.py).

A self-signed certificate is what a single host has; trust comes from the fingerprint, checked
once by a person (``doctor`` on the host, the CLI's note on first use), as ssh's host keys do.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
from pathlib import Path

CERT_FILE, KEY_FILE = "tls/cert.pem", "tls/key.pem"
VALID_DAYS = 3650


def fingerprint_of_der(der: bytes) -> str:
    """``AB:CD:...``: the SHA-256 of the certificate's DER bytes, as ``openssl x509 -fingerprint -sha256`` shows it."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def fingerprint(cert_path: str | Path) -> str:
    return fingerprint_of_der(ssl.PEM_cert_to_DER_cert(Path(cert_path).read_text()))


def paths(state_dir: str, tls_cert: str | None, tls_key: str | None) -> tuple[Path, Path]:
    """Where the certificate and key are: the configured ones, or the state directory's."""
    if tls_cert and tls_key:
        return Path(tls_cert), Path(tls_key)
    return Path(state_dir) / CERT_FILE, Path(state_dir) / KEY_FILE


def ensure_self_signed(state_dir: str, listen_host: str) -> tuple[Path, Path]:
    """The state directory's certificate and key, made now if they are not there yet (blocking:
    call from a worker thread or at start-up)."""
    cert_path, key_path = paths(state_dir, None, None)
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    names: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        address = ipaddress.ip_address(listen_host)
        if not address.is_unspecified and address != ipaddress.ip_address("127.0.0.1"):
            names.append(x509.IPAddress(address))
    except ValueError:
        if listen_host and listen_host not in (host, "localhost"):
            names.append(x509.DNSName(listen_host))
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mariposa on {host}")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """TLS 1.2 and up, the standard library's defaults otherwise; no client certificates."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_path), str(key_path))
    return context
