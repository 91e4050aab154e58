"""The gateway process: builds every part from the config and runs them in one event loop.

Owns start-up and shutdown order (spool before listeners, listeners closed before the spool,
log flushed last) and the slicing of the config into plain values for each part. It holds
no policy of its own: sessions (`session.py`), delivery (`delivery/`), the spool
(`queue/`) and the log writer (`maillog/`) do the work.
"""
from __future__ import annotations

import asyncio
import hashlib
import secrets
import signal
import socket
from dataclasses import dataclass, field

from .. import __version__
from ..config import Config
from ..maillog.sink import EventSink
from ..net.dns import DnsPythonResolver, Resolver
from ..policy.hat import HostAccessTable
from ..queue.counters import IdCounter
from ..queue.spool import Spool
from .session import InboundSession, ListenerContext, connection_limit_logger


def serial_for(cfg: Config) -> str:
    if cfg.gateway.serial:
        return cfg.gateway.serial
    digest = hashlib.sha256(cfg.gateway.hostname.encode()).hexdigest().upper()
    return f"MW{digest[:10]}-{digest[10:20]}"


@dataclass
class Gateway:
    """A running gateway; `start()` / `stop()` are awaited by `run_gateway` and by tests."""

    cfg: Config
    resolver: Resolver | None = None
    sink: EventSink | None = None           # tests may inject a ListSink; default = the file writer
    delivery: bool = True
    servers: list = field(default_factory=list)
    contexts: list = field(default_factory=list)

    async def start(self) -> None:
        cfg = self.cfg
        state = cfg.gateway.spool_dir
        state.mkdir(parents=True, exist_ok=True)
        if self.sink is None:
            from ..maillog.writer import MailLogWriter
            from ..maillog.syslog import SyslogTarget

            syslog = None
            if cfg.logging.syslog is not None:
                s = cfg.logging.syslog
                syslog = SyslogTarget(s.host, s.port, protocol=s.protocol, facility=s.facility,
                                      hostname=cfg.gateway.hostname if s.send_hostname else None)
            self.sink = MailLogWriter(cfg.gateway.log_dir, version=__version__, serial=serial_for(cfg),
                                      max_bytes=cfg.logging.max_bytes, rotate_seconds=cfg.logging.rotate_seconds,
                                      syslog=syslog, hash_chain=cfg.logging.hash_chain)
        hats = {lst.name: HostAccessTable.from_config(lst.hat) for lst in cfg.listener}
        uses_dnslists = any(h.dnslists() for h in hats.values())
        if self.resolver is None and (cfg.dns.reverse_lookups or uses_dnslists):
            self.resolver = DnsPythonResolver(cfg.dns.nameservers or None, cfg.dns.timeout)
        self.spool = Spool(state)
        await self.spool.open()
        self.icids = IdCounter(state / "icid.counter")
        self.mids = IdCounter(state / "mid.counter")
        self.dcids = IdCounter(state / "dcid.counter")
        from ..auth.cache import CredentialCache
        from ..auth.factory import build_profiles
        from ..auth.guard import AuthGuard, GuardSettings
        from ..auth.service import Authenticator

        # One guard and one cache for all listeners: an attacker gains nothing by switching ports.
        guard = AuthGuard(GuardSettings.from_config(cfg.auth_guard), self.sink)
        profiles = build_profiles(cfg.auth_profiles, cache=CredentialCache())
        self.authenticator = Authenticator(profiles, self.sink, guard)
        from ..net.server import serve_listener
        from ..net.tls import server_context

        for lst in cfg.listener:
            ctx = ListenerContext(
                name=lst.name, hostname=cfg.gateway.hostname,
                hat=hats[lst.name], accepted_domains=tuple(lst.accepted_domains),
                starttls=lst.starttls, auth=lst.auth,
                auth_requires_tls=lst.effective_auth_requires_tls,
                profile_name=lst.auth_profile, authenticator=self.authenticator, spool=self.spool, sink=self.sink, icids=self.icids, mids=self.mids,
                resolver=self.resolver if cfg.dns.reverse_lookups else None,
                dnsbl_resolver=self.resolver if hats[lst.name].dnslists() else None,
                max_message_size=lst.max_message_size, max_recipients=lst.max_recipients,
                dns_timeout=cfg.dns.timeout)
            ssl_ctx = server_context(lst.cert_file, lst.key_file) if lst.cert_file else None
            server = await serve_listener(lst, ssl_ctx, lambda ctx=ctx: InboundSession(ctx),
                                          hostname=cfg.gateway.hostname, on_limit=connection_limit_logger(ctx))
            self.contexts.append(ctx)
            self.servers.append(server)
        self.manager = None
        if self.delivery:
            from ..delivery.manager import build_manager

            self.manager = build_manager(cfg, spool=self.spool, sink=self.sink, dcids=self.dcids,
                                         mids=self.mids, resolver=self.resolver,
                                         credentials=_outgoing_credentials(cfg))
            await self.manager.start()

    def bound_ports(self) -> list[int]:
        return [s.port for s in self.servers]

    async def stop(self) -> None:
        for server in self.servers:
            await server.close()
        if self.manager is not None:
            await self.manager.stop()
        await self.authenticator.aclose()      # LDAP and forwarding connection pools
        await self.spool.close()
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()


def _outgoing_credentials(cfg: Config) -> dict:
    from ..auth.outgoing import OutgoingCredentials

    return {name: OutgoingCredentials(name, o.username, password_file=o.password_file, password_env=o.password_env)
            for name, o in cfg.outgoing_auth.items()}


def _demo_setup(cfg: Config) -> None:
    """First start of `make run`: a self-signed pair and the demo user with a fresh password."""
    from ..auth.users import UserStore
    from ..net.tls import selfsigned

    lst = cfg.listener[0]
    if lst.cert_file and not lst.cert_file.exists():
        lst.cert_file.parent.mkdir(parents=True, exist_ok=True)
        selfsigned("localhost", lst.cert_file, lst.key_file)
    prof = cfg.auth_profiles[lst.auth_profile]
    prof.users_file.parent.mkdir(parents=True, exist_ok=True)
    store = UserStore(prof.users_file, create=True)
    if "demo" not in store:
        password = secrets.token_urlsafe(12)
        store.add("demo", password)
        print(f"demo user created: user 'demo', password '{password}' (shown once; change it with "
              f"`mailward users passwd demo --file {prof.users_file}`)", flush=True)


def run_gateway(cfg: Config, *, demo: bool = False) -> None:
    if demo:
        _demo_setup(cfg)
    try:
        import uvloop  # optional extra: measurably faster loop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(_main(cfg))


async def _main(cfg: Config) -> None:
    gw = Gateway(cfg)
    await gw.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for lst, port in zip(cfg.listener, gw.bound_ports()):
        print(f"listener {lst.name} on {lst.address}:{port}", flush=True)
    print(f"mail_logs: {cfg.gateway.log_dir / 'mail_logs' / 'mail.current'} (host {socket.gethostname()})",
          flush=True)
    await stop.wait()
    await gw.stop()
