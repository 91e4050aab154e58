"""The one configuration schema of mailward, read once from one TOML file.

Owns: the typed model of every setting, its default and the reason for that default; loading
and validating a file (an unknown key or a bad value is fatal and names the key and the file
line); the views `config show --defaults` / `--non-default` print. It must not know how any
part uses its slice: `gateway/app.py` slices this model and passes plain values on.
No file or environment is read at import time.
"""
from __future__ import annotations

import ipaddress
import re
import stat
import tomllib
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator (file, line, key, reason)."""


def _each_parses(parse: Callable[[str], object], values: list[str]) -> list[str]:
    """A list validator: every entry must parse (the parser's ValueError is the message)."""
    for v in values:
        parse(v)
    return values


class _Model(BaseModel):
    # Unknown keys are fatal: a typo must never silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- host access table -------------------------------------------------------------------

Policy = Literal["ACCEPT", "RELAY", "REJECT", "TCPREFUSE", "CONTINUE"]


class SenderGroup(_Model):
    """One row of a listener's host access table, evaluated in order; the first match decides."""

    group: str = Field(description="sender group name as logged after SG")
    match: list[str] = Field(description="IP, CIDR, range a.b.c.d-e or a.b.c.d-a.b.c.e, "
                             "rDNS name or .suffix, dnslist[zone], or ALL")
    policy: Policy

    @field_validator("match")
    @classmethod
    def _check_matchers(cls, values: list[str]) -> list[str]:
        from .policy.hat import parse_matcher  # one grammar for matchers, in the HAT module

        return _each_parses(parse_matcher, values)


def _default_hat() -> list[SenderGroup]:
    # Refuse by default: loopback may relay (it is the host itself), everyone else may only
    # deliver to the accepted domains unless they authenticate.
    return [
        SenderGroup(group="RELAYLIST", match=["127.0.0.0/8", "::1"], policy="RELAY"),
        SenderGroup(group="None", match=["ALL"], policy="ACCEPT"),
    ]


# --- listeners ---------------------------------------------------------------------------

class Listener(_Model):
    name: str = Field(description="listener name as logged: 'interface NAME (ip)'")
    address: str = "127.0.0.1"          # loopback: nothing is exposed until the operator says so
    port: int = Field(2525, ge=0, le=65535)  # unprivileged, so `make run` needs no root
    type: Literal["public", "private"] = "public"
    starttls: Literal["off", "preferred", "required"] = "off"  # needs cert_file/key_file
    implicit_tls: bool = False          # RFC 8314 submissions port (465 style)
    cert_file: Path | None = None
    key_file: Path | None = None
    auth: Literal["off", "preferred", "required"] = "preferred"
    auth_profile: str | None = None
    # None = on for public listeners (no passwords in clear text on the internet), off for private.
    auth_requires_tls: bool | None = None
    accepted_domains: list[str] = Field(default_factory=list)  # the recipient access table
    max_message_size: int = Field(10 * 1024 * 1024, gt=0)  # the appliance's default 10 MB
    max_recipients: int = Field(1000, gt=0)    # RFC 5321 asks servers to take at least 100
    max_messages_per_connection: int = Field(10, gt=0)  # appliance default
    max_connections: int = Field(300, gt=0)    # appliance default for a listener
    max_connections_per_ip: int = Field(25, gt=0)
    command_timeout: float = Field(300.0, gt=0)   # RFC 5321 §4.5.3.2: 5 minutes
    data_timeout: float = Field(600.0, gt=0)      # RFC 5321 §4.5.3.2: 10 minutes for a data block
    bare_newline: Literal["reject", "normalize"] = "reject"  # Postfix's smtpd_forbid_bare_newline
    hat: list[SenderGroup] = Field(default_factory=_default_hat)

    @field_validator("address")
    @classmethod
    def _ip(cls, v: str) -> str:
        ipaddress.ip_address(v)
        return v

    @field_validator("accepted_domains")
    @classmethod
    def _domains(cls, values: list[str]) -> list[str]:
        return [v.lower().rstrip(".") for v in values]

    @model_validator(mode="after")
    def _tls_files(self) -> "Listener":
        if (self.starttls != "off" or self.implicit_tls) and not (self.cert_file and self.key_file):
            raise ValueError("starttls/implicit_tls need cert_file and key_file "
                             "(make a pair for testing with `mailward tls selfsigned`)")
        if self.auth != "off" and not self.auth_profile:
            raise ValueError("auth is enabled but auth_profile is not set")
        return self

    @property
    def effective_auth_requires_tls(self) -> bool:
        if self.auth_requires_tls is not None:
            return self.auth_requires_tls
        return self.type == "public"


# --- authentication profiles ---------------------------------------------------------------

class LocalProfile(_Model):
    type: Literal["local"]
    users_file: Path


class LdapProfile(_Model):
    type: Literal["ldap"]
    urls: list[str] = Field(min_length=1)       # tried in order: failover
    starttls: bool = False
    tls_verify: bool = True
    ca_file: Path | None = None
    bind_dn: str | None = None                  # None = anonymous search
    bind_password_file: Path | None = None
    search_base: str | None = None
    search_filter: str = "(uid={user})"         # {user} is RFC 4515-escaped
    dn_template: str | None = None              # direct bind instead of search: uid={user},ou=people,...
    timeout: float = 5.0
    pool_size: int = Field(4, gt=0)             # warm connections per server: AUTH bursts need no new bind


class ForwardServer(_Model):
    host: str
    port: int = 25
    tls: Literal["off", "starttls", "implicit"] = "starttls"
    tls_verify: bool = True
    ca_file: Path | None = None                 # a private CA for this server's certificate
    mechanisms: list[Literal["PLAIN", "LOGIN"]] = Field(default_factory=lambda: ["PLAIN"])


class SmtpForwardProfile(_Model):
    type: Literal["smtp_forward"]
    servers: list[ForwardServer] = Field(min_length=1)
    timeout: float = 10.0
    pool_size: int = 4


class ChainProfile(_Model):
    type: Literal["chain"]
    members: list[str] = Field(min_length=1)


AuthProfileConfig = LocalProfile | LdapProfile | SmtpForwardProfile | ChainProfile


class OutgoingAuth(_Model):
    """Credentials the gateway presents to a next hop; the secret is never inline."""

    username: str
    password_file: Path | None = None
    password_env: str | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> "OutgoingAuth":
        if bool(self.password_file) == bool(self.password_env):
            raise ValueError("set exactly one of password_file or password_env")
        return self


class AuthGuardConfig(_Model):
    # Counting failures per client IP and per user: a few typos are free, a script is not.
    free_failures: int = 3
    base_delay: float = 0.5          # seconds of tarpit after the free failures, doubling each time
    max_delay: float = 8.0           # never hold a connection longer than this per attempt
    lockout_failures: int = 10       # then refuse for lockout_seconds
    lockout_seconds: int = 600
    window_seconds: int = 900        # failures older than this are forgotten


# --- delivery ------------------------------------------------------------------------------

class RouteHost(_Model):
    host: str
    port: int = 25
    priority: int = 0                # lower first; equal priorities share the load


class Route(_Model):
    domain: str                      # example.com, .example.com (subdomains), or ALL
    hosts: list[RouteHost] = Field(default_factory=list)
    usedns: bool = False             # MX lookup instead of hosts
    auth_profile: str | None = None  # an [outgoing_auth.NAME]
    tls: Literal["off", "preferred", "required", "required-verify"] = "preferred"
    on_auth_failure: Literal["continue", "defer"] = "continue"  # continue = what the appliance does

    @model_validator(mode="after")
    def _hosts_or_dns(self) -> "Route":
        if bool(self.hosts) == self.usedns:
            raise ValueError("a route needs either hosts or usedns = true (not both)")
        return self


class DeliveryConfig(_Model):
    # The appliance's bounce-profile defaults.
    max_retries: int = 100
    max_queue_lifetime: int = 72 * 3600
    initial_retry: int = 60
    max_retry_interval: int = 3600
    delay_warning: int | None = None         # seconds; None = no delay-warning DSN
    concurrency_per_destination: int = 20    # Postfix's default_destination_concurrency_limit
    total_concurrency: int = 100
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    source_address: str | None = None        # bind outbound connections to this IP


# --- logging -------------------------------------------------------------------------------

class SyslogConfig(_Model):
    host: str
    port: int = 514
    protocol: Literal["udp", "tcp"] = "udp"
    facility: int = 2                          # mail; with severity info -> <22>, as real appliances
    send_hostname: bool = True


class LoggingConfig(_Model):
    max_bytes: int | None = 10 * 1024 * 1024   # roll mail.current at 10 MiB
    rotate_seconds: int | None = 86400         # and at least daily
    hash_chain: bool = False                   # tamper-evident side file (mail.current.chain)
    syslog: SyslogConfig | None = None


class DnsConfig(_Model):
    nameservers: list[str] = Field(default_factory=list)  # empty = the system resolver; "ip" or "ip:port"
    timeout: float = 5.0
    reverse_lookups: bool = True               # "reverse dns host NAME verified yes|no"

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, values: list[str]) -> list[str]:
        from .net.dns import parse_nameserver  # the resolver's own syntax check

        return _each_parses(parse_nameserver, values)


class GatewayConfig(_Model):
    hostname: str = "mailward.localdomain"
    spool_dir: Path = Path("var/spool")
    log_dir: Path = Path("var/log")
    serial: str | None = None                  # logged as SN:; None = derived from the hostname


class Config(_Model):
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    dns: DnsConfig = Field(default_factory=DnsConfig)
    auth_guard: AuthGuardConfig = Field(default_factory=AuthGuardConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    listener: list[Listener] = Field(default_factory=list)
    auth_profiles: dict[str, AuthProfileConfig] = Field(default_factory=dict)
    outgoing_auth: dict[str, OutgoingAuth] = Field(default_factory=dict)
    route: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> "Config":
        names = set()
        for i, lst in enumerate(self.listener):
            if lst.name in names:
                raise ValueError(f"listener[{i}].name: duplicate listener name {lst.name!r}")
            names.add(lst.name)
            if lst.auth_profile and lst.auth_profile not in self.auth_profiles:
                raise ValueError(f"listener[{i}].auth_profile: no [auth_profiles.{lst.auth_profile}]")
        for name, prof in self.auth_profiles.items():
            if isinstance(prof, ChainProfile):
                for m in prof.members:
                    if m not in self.auth_profiles or m == name:
                        raise ValueError(f"auth_profiles.{name}.members: unknown profile {m!r}")
        for i, r in enumerate(self.route):
            if r.auth_profile and r.auth_profile not in self.outgoing_auth:
                raise ValueError(f"route[{i}].auth_profile: no [outgoing_auth.{r.auth_profile}]")
        return self

    def resolve_paths(self, base: Path) -> "Config":
        """Relative paths in a config file are relative to that file's directory."""
        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else (base / p)

        data = self.model_dump()
        data["gateway"]["spool_dir"] = fix(self.gateway.spool_dir)
        data["gateway"]["log_dir"] = fix(self.gateway.log_dir)
        for lst in data["listener"]:
            lst["cert_file"] = fix(lst["cert_file"])
            lst["key_file"] = fix(lst["key_file"])
        for prof in data["auth_profiles"].values():
            for key in ("users_file", "bind_password_file", "ca_file"):
                if prof.get(key):
                    prof[key] = fix(prof[key])
            for server in prof.get("servers") or ():
                if server.get("ca_file"):
                    server["ca_file"] = fix(server["ca_file"])
        for out in data["outgoing_auth"].values():
            if out.get("password_file"):
                out["password_file"] = fix(out["password_file"])
        return Config.model_validate(data)


# --- loading -------------------------------------------------------------------------------

def _loc_to_str(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic inserts the union member tag (e.g. 'local') into the location of tagged unions
    # and function-validator names: drop what is not a key of the file.
    tags = {"local", "ldap", "smtp_forward", "chain", "function-after[_check_matchers()]"}
    return tuple(p for p in loc if not (isinstance(p, str) and (p in tags or p.startswith("function-"))))


_TABLE_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
_KEY_RE = re.compile(r"^\s*([A-Za-z0-9_\-\"]+)\s*=")


def locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort 1-based line of the key at ``loc`` in a TOML text (tomllib keeps no positions).

    Tracks the current table header ([a.b] and the n-th [[a]]) and finds the first matching
    ``key =`` line; falls back to the closest enclosing table header.
    """
    want = [p for p in loc]
    counters: dict[str, int] = {}
    current: list[Any] = []
    best: int | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _TABLE_RE.match(line)
        if m:
            parts = [p.strip().strip('"') for p in m.group(2).split(".")]
            if m.group(1) == "[[":
                key = ".".join(parts)
                idx = counters.get(key, -1) + 1
                counters[key] = idx
                # reset counters of nested arrays of tables under a new parent element
                for k in list(counters):
                    if k.startswith(key + "."):
                        del counters[k]
                current = _expand_nested(parts, counters, idx)
            else:
                current = parts
            if want[: len(current)] == current:
                best = lineno
            continue
        m = _KEY_RE.match(line)
        if m:
            key = m.group(1).strip('"')
            full = current + [key]
            if want[: len(full)] == full:
                return lineno
    return best


def _expand_nested(parts: list[str], counters: dict[str, int], idx: int) -> list[Any]:
    # [[listener.hat]] under the 2nd [[listener]] is loc ('listener', 1, 'hat', k)
    out: list[Any] = []
    for i, p in enumerate(parts):
        out.append(p)
        prefix = ".".join(parts[: i + 1])
        if i < len(parts) - 1 and prefix in counters:
            out.append(counters[prefix])
    out.append(idx)
    return out


def parse_config(text: str, source: str = "<config>", base: Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _clean_loc(tuple(err["loc"]))
            line = locate(text, loc)
            where = f"{source}:{line}" if line else source
            key = _loc_to_str(loc) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{where}: {key}: {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
    return cfg.resolve_paths(base) if base else cfg


def load_config(path: Path, *, resolve: bool = True) -> Config:
    """Load and validate ``path``; relative paths in it are made absolute unless ``resolve``
    is false (`config show` prints the file's own values)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    cfg = parse_config(text, str(path), path.resolve().parent if resolve else None)
    if resolve:
        check_secret_files(cfg)
    return cfg


def check_secret_files(cfg: Config) -> None:
    """Refuse, at load time, a secret file named by the config that others can read (the
    parts read them only when first used; an operator must hear of a loose file at once).
    A file that does not exist yet is left to the part that reads it."""
    paths = [o.password_file for o in cfg.outgoing_auth.values() if o.password_file]
    paths += [p.bind_password_file for p in cfg.auth_profiles.values()
              if isinstance(p, LdapProfile) and p.bind_password_file]
    for path in paths:
        if path.exists():
            check_secret_file(path)


def check_secret_file(path: Path) -> None:
    """Refuse a secret that other users can read (the way ssh refuses a loose key)."""
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: secret file must not be accessible by group or others "
                          f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")


def default_config_text() -> str:
    from importlib.resources import files

    return files("mailward").joinpath("example.toml").read_text(encoding="utf-8")


def demo_config(base: Path) -> Config:
    """The embedded config `make run` uses: loopback only, one listener, one demo user."""
    return parse_config(default_config_text(), "example.toml", base)


def dump(cfg: Config, *, non_default: bool) -> dict[str, Any]:
    """`config show`: every setting with defaults filled in, or only what differs from them."""
    if non_default:
        return cfg.model_dump(mode="json", exclude_defaults=True)
    return cfg.model_dump(mode="json")

