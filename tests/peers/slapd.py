"""A private OpenLDAP ``slapd`` as a real directory for end-to-end tests.

Owns one throw-away slapd: its own slapd.conf, mdb database, pid/args files and a self-signed
TLS certificate, all under one temp dir; listening on 127.0.0.1 on two free private ports
(``ldap://`` with StartTLS available, and ``ldaps://``). The directory holds
``ou=people,dc=example,dc=test`` with a few users (``uid``, ``cn``, ``mail``, ``userPassword``)
and a service account allowed to search.

Must not know anything about mailward: tests may drive it with any LDAP client.

Nothing is skipped: if slapd is missing, ``SlapdInstance.start`` fails with a message saying
which Debian package to install.

Use the ``slapd_peer`` fixture (module scoped) or ``SlapdInstance`` directly; ``stop()`` and
``start()`` again to simulate an outage (same ports, same data).
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"
SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

BASE_DN = "dc=example,dc=test"
PEOPLE_DN = f"ou=people,{BASE_DN}"
ADMIN_DN = f"cn=admin,{BASE_DN}"
SERVICE_DN = f"cn=mailward,ou=services,{BASE_DN}"


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now (bind port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def make_self_signed(cert_path: Path, key_path: Path, cn: str = "localhost") -> None:
    """A self-signed certificate for ``cn``, 127.0.0.1 and localhost (key mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


@dataclass(frozen=True)
class LdapUser:
    uid: str
    password: str
    cn: str
    mail: str

    @property
    def dn(self) -> str:
        return _ldif_dn(self)


DEFAULT_USERS = (
    LdapUser("alice", "wonderland", "Alice Liddell", "alice@example.test"),
    LdapUser("bob", "builder-42", "Bob Builder", "bob@example.test"),
    LdapUser("admin", "adm1n-pw", "Directory Admin Person", "admin@example.test"),
    # A name that needs RFC 4514/4515 escaping on the way in.
    LdapUser("o'hara+x", "scarlett", "Scarlett O'Hara", "scarlett@example.test"),
)


@dataclass
class SlapdInstance:
    """One private slapd. Attributes tests use: ``ldap_url``, ``ldaps_url``, ``ca_file``,
    ``service_dn``/``service_password`` (may search), ``users`` (uid -> LdapUser)."""

    root: Path | None = None
    users: dict[str, LdapUser] = field(default_factory=lambda: {u.uid: u for u in DEFAULT_USERS})
    host: str = LOOPBACK
    admin_password: str = "root-secret"
    service_password: str = "svc-secret"

    def __post_init__(self) -> None:
        self._owns_root = self.root is None
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="mwldap-"))
        self.base_dn = BASE_DN
        self.people_dn = PEOPLE_DN
        self.admin_dn = ADMIN_DN
        self.service_dn = SERVICE_DN
        self.port = 0
        self.ldaps_port = 0
        self.cert_file = self.root / "server.crt"
        self.key_file = self.root / "server.key"
        self.ca_file = self.cert_file           # self-signed: the cert is its own CA
        self.conf = self.root / "slapd.conf"
        self.db_dir = self.root / "db"
        self.run_dir = self.root / "run"
        self.log_path = self.root / "slapd.log"
        self._proc: subprocess.Popen | None = None
        self._configured = False

    @property
    def ldap_url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.host}:{self.ldaps_port}"

    # -- lifecycle --

    def start(self) -> "SlapdInstance":
        for tool in (SLAPD, SLAPADD):
            if not Path(tool).exists():
                raise RuntimeError(f"{tool} not found: install the Debian package 'slapd' "
                                   "(apt-get install slapd ldap-utils) to run the LDAP tests")
        if not self._configured:
            self.port = free_port(self.host)
            self.ldaps_port = free_port(self.host)
            self._configure()
            self._configured = True
        log = open(self.log_path, "ab")
        # -d 0: stay in the foreground (we own the process) without debug noise.
        self._proc = subprocess.Popen(
            [SLAPD, "-f", str(self.conf), "-h", f"{self.ldap_url}/ {self.ldaps_url}/", "-d", "0"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_listening(timeout=15.0)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        if self._owns_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "SlapdInstance":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- internals --

    def _configure(self) -> None:
        for d in (self.db_dir, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        make_self_signed(self.cert_file, self.key_file)
        schemas = "".join(f"include {SCHEMA_DIR / s}.schema\n"
                          for s in ("core", "cosine", "nis", "inetorgperson"))
        self.conf.write_text(
            schemas
            + f"modulepath {MODULE_DIR}\n"
            "moduleload back_mdb\n"
            f"pidfile {self.run_dir / 'slapd.pid'}\n"
            f"argsfile {self.run_dir / 'slapd.args'}\n"
            f"TLSCertificateFile {self.cert_file}\n"
            f"TLSCertificateKeyFile {self.key_file}\n"
            "loglevel none\n"
            "database mdb\n"
            f'suffix "{BASE_DN}"\n'
            f'rootdn "{ADMIN_DN}"\n'
            f"rootpw {self.admin_password}\n"
            f"directory {self.db_dir}\n"
            "maxsize 67108864\n"
            # Passwords: only usable to bind, never readable; the service account may search.
            "access to attrs=userPassword\n"
            "  by anonymous auth\n"
            "  by self auth\n"
            "  by * none\n"
            "access to *\n"
            f'  by dn.exact="{SERVICE_DN}" read\n'
            "  by self read\n"
            "  by anonymous auth\n"
            "  by * none\n")
        ldif = self.root / "data.ldif"
        ldif.write_text(self._ldif())
        proc = subprocess.run([SLAPADD, "-f", str(self.conf), "-l", str(ldif)],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"slapadd failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def _ldif(self) -> str:
        entries = [
            f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
            f"dn: {PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people\n",
            f"dn: ou=services,{BASE_DN}\nobjectClass: organizationalUnit\nou: services\n",
            f"dn: {SERVICE_DN}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\n"
            f"cn: mailward\nuserPassword: {self.service_password}\n",
        ]
        for u in self.users.values():
            entries.append(
                f"dn: {_ldif_dn(u)}\nobjectClass: inetOrgPerson\nuid: {u.uid}\ncn: {u.cn}\n"
                f"sn: {u.cn.split()[-1]}\nmail: {u.mail}\nuserPassword: {u.password}\n")
        return "\n".join(entries)

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self._proc.returncode}:\n{self.log_text()}")
            ok = 0
            for port in (self.port, self.ldaps_port):
                try:
                    with socket.create_connection((self.host, port), timeout=0.5):
                        ok += 1
                except OSError:
                    pass
            if ok == 2:
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"slapd did not listen on {self.host}:{self.port} and "
                                   f":{self.ldaps_port} within {timeout}s:\n{self.log_text()}")
            time.sleep(0.05)


def _ldif_dn(u: LdapUser) -> str:
    """The entry's DN in LDIF, with the uid escaped per RFC 4514."""
    from ldap3.utils.dn import escape_rdn

    return f"uid={escape_rdn(u.uid)},{PEOPLE_DN}"


@pytest.fixture(scope="module")
def slapd_peer():
    inst = SlapdInstance()
    try:
        inst.start()
        yield inst
    finally:
        inst.close()
