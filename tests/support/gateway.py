"""Runs a real gateway in a background thread for integration tests.

The gateway listens on a free loopback port, writes its real mail_logs file and spool
under the test's tmp_path, and uses a StaticResolver so no test touches real DNS.
"""
from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher, Type

from mailward.auth.users import UserStore
from mailward.config import Config, parse_config
from mailward.gateway.app import Gateway
from mailward.net.dns import StaticResolver

TIMESTAMP = re.compile(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} ")

# A listener HAT row that ACCEPTs every client: relaying then takes AUTH.
ACCEPT_ALL = """
[[listener.hat]]
group = "None"
match = ["ALL"]
policy = "ACCEPT"
"""


def fast_user_store(tmp: Path, users: dict[str, str], name: str = "users.db") -> UserStore:
    """The users file ``config_text`` points at, with cheap Argon2id parameters (the gateway
    verifies with the parameters stored in each hash)."""
    store = UserStore(tmp / name, create=True,
                      hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID))
    for user, password in users.items():
        store.add(user, password)
    return store


def config_text(tmp: Path, listener: str = "", extra: str = "", users_file: str = "users.db") -> str:
    return f"""
[gateway]
hostname = "gw.example.test"
spool_dir = "{tmp / 'spool'}"
log_dir = "{tmp / 'log'}"
serial = "MWTEST-0001"

[dns]
reverse_lookups = true

[auth_guard]
free_failures = 100
lockout_failures = 1000

[auth_profiles.IncomingAuthentication]
type = "local"
users_file = "{tmp / users_file}"

[[listener]]
name = "IncomingMail"
address = "127.0.0.1"
port = 0
type = "private"
auth = "preferred"
auth_profile = "IncomingAuthentication"
accepted_domains = ["example.test"]
{listener}

{extra}
"""


@dataclass
class RunningGateway:
    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    tmp: Path

    @property
    def port(self) -> int:
        return self.gateway.bound_ports()[0]

    @property
    def ports(self) -> list[int]:
        return self.gateway.bound_ports()

    @property
    def log_path(self) -> Path:
        return self.tmp / "log" / "mail_logs" / "mail.current"

    def flush(self) -> None:
        sink = self.gateway.sink
        if not hasattr(sink, "flush"):
            return
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(_call(sink.flush), self.loop).result(10)
        else:   # stopped: the writer was closed and flushed by Gateway.stop()
            sink.flush()

    def log_bodies(self) -> list[str]:
        """The log lines with the timestamp stripped: 'Info: New SMTP ICID ...'."""
        self.flush()
        return [TIMESTAMP.sub("", line) for line in self.log_path.read_text().splitlines()]

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.gateway.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _call(fn):
    return fn()


FROM_CONFIG = object()   # start_gateway(resolver=FROM_CONFIG): the gateway's own, from [dns]


def start_gateway(cfg: Config | str, tmp: Path, *, resolver=None, delivery: bool = False) -> RunningGateway:
    """The gateway in a thread of this process; DNS from ``resolver`` (default: an empty
    StaticResolver, so no test touches the network; ``FROM_CONFIG``: what [dns] says)."""
    if isinstance(cfg, str):
        cfg = parse_config(cfg, "test.toml", tmp)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    if resolver is FROM_CONFIG:
        resolver = None
    elif resolver is None:
        resolver = StaticResolver()
    gw = Gateway(cfg, resolver=resolver, delivery=delivery)
    asyncio.run_coroutine_threadsafe(gw.start(), loop).result(30)
    return RunningGateway(gw, loop, thread, tmp)
