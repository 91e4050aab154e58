"""TLS contexts for listeners and delivery, and a self-signed pair for tests and demos.

Owns the choice of TLS settings (TLS 1.2 minimum, the ssl module's secure defaults) and
the writing of a key file that only its owner can read. Knows nothing of SMTP.
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import ssl
from pathlib import Path

__all__ = ["server_context", "client_context", "selfsigned", "describe"]


def server_context(cert_file: str | os.PathLike, key_file: str | os.PathLike | None = None) -> ssl.SSLContext:
    """A server-side context for STARTTLS or implicit TLS from a PEM certificate chain and key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2     # RFC 8996: TLS 1.0/1.1 are gone
    ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    # SMTP clients rarely present certificates; asking would only slow handshakes down.
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(*, verify: bool = True, cafile: str | os.PathLike | None = None) -> ssl.SSLContext:
    """A client-side context for delivery. ``verify=False`` is opportunistic TLS (RFC 7435):
    encrypt, but accept any certificate, as MTAs do when no policy says otherwise."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def selfsigned(cn: str, out_cert: str | os.PathLike, out_key: str | os.PathLike, *, days: int = 825) -> None:
    """Write a self-signed certificate for ``cn`` (plus loopback SANs) and its key (mode 0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = _dt.datetime.now(_dt.timezone.utc)
    sans: list[x509.GeneralName] = [x509.DNSName(cn)]
    if cn != "localhost":
        sans.append(x509.DNSName("localhost"))
    sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    key_path = Path(out_key)
    # Create the key file 0600 from the start, so it is never readable by others, even briefly.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    os.chmod(key_path, 0o600)
    Path(out_cert).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def describe(ssl_object) -> tuple[str | None, str | None]:
    """(protocol, cipher) of an established TLS connection, e.g. ('TLSv1.3', 'TLS_AES_256_GCM_SHA384')."""
    if ssl_object is None:
        return None, None
    cipher = ssl_object.cipher()
    return ssl_object.version(), cipher[0] if cipher else None
