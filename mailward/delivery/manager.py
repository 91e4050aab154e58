"""The queue manager: decides what is delivered when, over which connection, and records
every recipient's fate (the role of Postfix's qmgr).

Owns: picking ready messages fairly (new and deferred mail alternate, so a backlog of
retries cannot starve fresh mail), grouping each message's pending recipients by
destination domain, per-destination and total connection limits, keeping a delivery
connection (DCID) open for more messages to the same destination, writing each recipient's
outcome durably to the spool *before* logging it as final, scheduling retries, expiring
messages, generating bounces (``dsn.py``) and the operator's flush / delete / bounce.
When each message is due is ``schedule.py``'s bookkeeping.

Must not touch sockets (``agent.py`` and ``client.py`` do) nor decide what a failure means
(``trouble.py`` does). Logs only by emitting events.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..maillog.events import (Bounced, Delayed, DeliveryResponse, DeliveryStart, DnsError,
                              GeneratedForBounce, MailFrom, MessageAborted, MessageDone,
                              MessageFinished, MessageReady, PendingTill, QueuedForDelivery, RcptTo,
                              SmtpResponse, StartMid)
from ..maillog.sink import EventSink
from ..net.dns import Resolver
from ..queue.model import Envelope, QueuedMessage, RcptState
from ..wakeup import Wakeup
from .agent import Agent, AgentSettings, Counter, Credentials, HostsExhausted, Session
from .client import ConnectionStale
from .dsn import FailedRecipient, build_dsn, original_headers, wants_dsn
from .routes import DestinationError, RouteTable, domain_of, next_hops
from .schedule import Schedule
from .trouble import ADMIN_BOUNCE, BAD_DESTINATION, EXPIRED, Outcome, RetryPolicy, Status

log = logging.getLogger(__name__)


class Busy(Exception):
    """The message is being delivered right now; the operator should try again shortly."""


@dataclass(frozen=True)
class ManagerSettings:
    hostname: str                              # EHLO name and MAILER-DAEMON@<hostname>
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency_per_destination: int = 20
    total_concurrency: int = 100
    # The appliance closes an idle delivery connection after about five seconds (seed:
    # "Message done" at :20, "DCID close" at :25); mail for the destination meanwhile reuses it.
    idle_timeout: float = 5.0
    delay_warning: float | None = None         # seconds in queue before a delay DSN; None = never
    scan_interval: float = 30.0                # upper bound on sleeping between queue scans
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    source_address: str | None = None
    tls_cafile: str | None = None


def ctime(ts: float) -> str:
    """``Mon Aug 10 09:56:56 2020`` in local time, as the appliance's pending-till lines."""
    return time.ctime(ts)


@dataclass
class _Round:
    """One delivery attempt of one message: its jobs (one per destination) and what they
    left to do when all are back."""

    msg: QueuedMessage
    jobs: int = 0
    headers: bytes | None = None
    bounced: list[FailedRecipient] = field(default_factory=list)
    deferred: dict[int, str] = field(default_factory=dict)
    next_attempt: float | None = None
    next_decided: bool = False
    warn: bool = False


@dataclass
class _Job:
    round: _Round
    domain: str
    rids: list[int]


@dataclass
class _Destination:
    domain: str
    queue: deque = field(default_factory=deque)
    workers: int = 0
    idle: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class QueueManager:
    def __init__(self, spool, sink: EventSink, routes: RouteTable, *, dcids: Counter, mids: Counter,
                 settings: ManagerSettings, resolver: Resolver | None = None,
                 credentials: Mapping[str, Credentials] | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 control_path=None):
        self.spool = spool
        self.sink = sink
        self.routes = routes
        self.mids = mids
        self.settings = settings
        self.resolver = resolver
        self.clock = clock
        self.rng = rng or random.Random()
        self.control_path = control_path
        self.agent = Agent(AgentSettings(helo=settings.hostname, connect_timeout=settings.connect_timeout,
                                         command_timeout=settings.command_timeout,
                                         source_address=settings.source_address,
                                         tls_cafile=settings.tls_cafile),
                           sink, dcids, credentials)
        self._rounds: dict[int, _Round] = {}
        self._locked: set[int] = set()           # MIDs the scheduler must not pick (admin, bounce being announced)
        self._dests: dict[str, _Destination] = {}
        self._tasks: set[asyncio.Task] = set()
        self._wake: Wakeup | None = None          # the scheduler's wait (start(); see wakeup.py)
        self._flush = False
        self._stopping = False
        self._runner: asyncio.Task | None = None
        self._total: asyncio.Semaphore | None = None
        self._slot_waiters = 0
        self._schedule: Schedule | None = None
        self._control = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._total = asyncio.Semaphore(self.settings.total_concurrency)
        self._schedule = Schedule(self.spool, rescan_interval=self.settings.scan_interval, clock=self.clock)
        self._wake = Wakeup(asyncio.get_running_loop())
        self.spool.on_commit(self._on_commit)
        self._runner = asyncio.create_task(self._run(), name="delivery-scheduler")
        if self.control_path is not None:
            from .control import ControlServer

            self._control = ControlServer(self.control_path, self)
            await self._control.start()

    async def stop(self) -> None:
        """Stop picking work; interrupt deliveries in progress (they are retried after a
        restart: nothing is recorded final before the destination accepted it)."""
        self._stopping = True
        if self._control is not None:
            await self._control.stop()
        tasks = [t for t in (self._runner, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def flush(self) -> int:
        """Try every queued message now, ignoring retry times (``postqueue -f``)."""
        self._flush = True
        self.wake()
        return sum(1 for _ in self.spool.messages())

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until nothing is due and nothing is being delivered (for tests and tools; it
        walks the queue, so it is not for the hot path)."""
        async with asyncio.timeout(timeout):
            while True:
                await asyncio.sleep(0.01)
                if not self._rounds and not self._tasks_busy() and not self._due_now():
                    return

    def _tasks_busy(self) -> bool:
        return any(d.workers > d.idle for d in self._dests.values())

    def _due_now(self) -> bool:
        now = self.clock()
        return any(m.next_attempt <= now and m.mid not in self._locked for m in self.spool.messages())

    # --- scheduling --------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._schedule is not None
        while not self._stopping:
            self._wake.clear()
            try:
                flush, self._flush = self._flush, False
                now = self.clock()
                for msg in self._schedule.due(busy=self._rounds, locked=self._locked, flush=flush):
                    self._start_round(msg, now)
            except Exception:   # a bug in one pass must not stop delivery for good
                log.exception("delivery scheduler pass failed")
            await self._wake.wait(max(self._schedule.seconds_to_next(), 0.01))

    def _on_commit(self, msg: QueuedMessage) -> None:
        if self._schedule is not None:
            self._schedule.committed(msg.mid)
        self.wake()

    def _arm(self, msg: QueuedMessage, at: float | None = None) -> None:
        if self._schedule is not None:
            self._schedule.arm(msg, at)

    def _start_round(self, msg: QueuedMessage, now: float) -> None:
        rnd = _Round(msg)
        self._rounds[msg.mid] = rnd
        env = msg.envelope
        if msg.attempts > 0 and self.settings.retry.expired(attempts=msg.attempts, now=now,
                                                             received_at=env.received_at):
            self._spawn(self._expire(rnd))
            return
        by_domain: dict[str, list[int]] = {}
        for rid in msg.pending_rids():
            by_domain.setdefault(domain_of(env.recipients[rid]), []).append(rid)
        rnd.jobs = len(by_domain)
        for domain, rids in by_domain.items():
            self._enqueue(_Job(rnd, domain, rids))

    def _enqueue(self, job: _Job) -> None:
        dest = self._dests.get(job.domain)
        if dest is None:
            dest = self._dests[job.domain] = _Destination(job.domain)
        dest.queue.append(job)
        dest.arrived.set()
        if dest.idle == 0 and dest.workers < self.settings.concurrency_per_destination:
            dest.workers += 1
            self._spawn(self._worker(dest))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())

    # --- one destination's connections ------------------------------------------------------

    async def _worker(self, dest: _Destination) -> None:
        try:
            assert self._total is not None
            if self._total.locked():
                # All connection slots are taken: idle connections kept for reuse give theirs up.
                self._slot_waiters += 1
                for other in self._dests.values():
                    if other.idle:
                        other.arrived.set()
                try:
                    await self._total.acquire()
                finally:
                    self._slot_waiters -= 1
            else:
                await self._total.acquire()
            try:
                await self._connections(dest)
            finally:
                self._total.release()
        finally:
            dest.workers -= 1
            if not dest.workers and not dest.queue:
                self._dests.pop(dest.domain, None)
            elif dest.queue and not self._stopping and dest.idle == 0:
                dest.workers += 1               # work arrived while this worker was leaving
                self._spawn(self._worker(dest))

    async def _connections(self, dest: _Destination) -> None:
        """Serve the destination's queue over one connection at a time, reusing each while
        work keeps coming within ``idle_timeout``; closed (QUIT) before the slot is freed."""
        session: Session | None = None
        try:
            route = self.routes.lookup(dest.domain)
            try:
                hops = await next_hops(route, dest.domain, self.resolver, self.rng)
            except DestinationError as exc:
                await self._dns_failed(dest, exc)
                return
            while True:
                if not dest.queue:
                    if session is None or not await self._wait_for_job(dest):
                        return
                    continue
                job = dest.queue.popleft()
                if session is not None and not await self.agent.reusable(session):
                    session = None
                if session is None:
                    try:
                        session = await self.agent.connect(dest.domain, route, hops)
                    except HostsExhausted as exc:
                        jobs = [job, *dest.queue]
                        dest.queue.clear()
                        for j in jobs:
                            await self._hosts_failed(j, exc)
                        return
                if not await self._deliver(session, job):
                    # The kept connection was dead (its RSET failed) and is closed: the same
                    # job goes first over a new one. A new connection's first message has no
                    # RSET, so this happens at most once per job.
                    session = None
                    dest.queue.appendleft(job)
        finally:
            if session is not None:
                await asyncio.shield(self.agent.close(session))

    async def _wait_for_job(self, dest: _Destination) -> bool:
        dest.idle += 1
        dest.arrived.clear()
        try:
            async with asyncio.timeout(self.settings.idle_timeout):
                while not dest.queue:
                    if self._slot_waiters:
                        return False        # another destination needs this connection slot
                    await dest.arrived.wait()
                    dest.arrived.clear()
            return True
        except TimeoutError:
            return bool(dest.queue)
        finally:
            dest.idle -= 1

    async def _deliver(self, session: Session, job: _Job) -> bool:
        """One job over ``session``. False: the kept connection turned out dead before the
        message began (``ConnectionStale``, session closed); the job is not done, deliver it
        over a new connection."""
        rnd, msg = job.round, job.round.msg
        env = msg.envelope
        mid = env.mid
        if self.spool.get(mid) is None:          # deleted by the operator meanwhile
            self._job_done(job)
            return True
        done = True
        try:
            with self.spool.open_body(mid) as body:
                try:
                    result = await self.agent.transaction(
                        session, env.sender, [(r, env.recipients[r]) for r in job.rids], body,
                        size=msg.size, params=env.params,
                        started=lambda: self.sink.emit(DeliveryStart(session.dcid, mid, tuple(job.rids))))
                except ConnectionStale:
                    done = False
                    return False
            if result.bounced:
                self._ensure_headers(rnd)
            # Durable first: a recipient logged delivered is never delivered again.
            await asyncio.gather(*(self.spool.record(mid, r, RcptState.DELIVERED) for r in result.delivered))
            if result.delivered:
                rids = tuple(result.delivered)
                self.sink.emit(MessageDone(session.dcid, mid, rids))
                self.sink.emit(DeliveryResponse(mid, rids, result.reply.text.lstrip() if result.reply else ""))
            for b in result.bounced:
                await self._bounce_rcpt(rnd, b.rid, session.dcid, b.status, b.response, b.by_destination,
                                        remote=session.hop.name)
            for d in result.deferred:
                await self._defer_rcpt(rnd, d.rid, session.dcid, d.status, d.response)
        finally:
            if done:
                self._job_done(job)
        return True

    # --- failures before a transaction -------------------------------------------------------

    async def _dns_failed(self, dest: _Destination, exc: DestinationError) -> None:
        jobs = list(dest.queue)
        dest.queue.clear()
        self.sink.emit(DnsError(exc.kind, dest.domain, exc.detail))
        for job in jobs:
            try:
                if exc.temporary:
                    status = Status("4.4.3", "DNS temporary failure")
                    resp = SmtpResponse("000", (f"DNS Temporary Failure looking up {dest.domain} (MX): {exc.detail}",))
                    for rid in job.rids:
                        await self._defer_rcpt(job.round, rid, 0, status, resp)
                else:
                    self._ensure_headers(job.round)
                    resp = SmtpResponse("000", (f"DNS Hard Error looking up {dest.domain} (MX):  {exc.detail}",))
                    for rid in job.rids:
                        await self._bounce_rcpt(job.round, rid, 0, BAD_DESTINATION, resp, False)
            finally:
                self._job_done(job)

    async def _hosts_failed(self, job: _Job, exc: HostsExhausted) -> None:
        try:
            f = exc.failure
            if exc.outcome is Outcome.BOUNCE_MESSAGE:
                self._ensure_headers(job.round)
                for rid in job.rids:
                    await self._bounce_rcpt(job.round, rid, exc.dcid, exc.status, f.response,
                                            f.reply is not None)
            else:
                for rid in job.rids:
                    await self._defer_rcpt(job.round, rid, exc.dcid, exc.status, f.response)
        finally:
            self._job_done(job)

    async def _expire(self, rnd: _Round) -> None:
        msg = rnd.msg
        try:
            self._ensure_headers(rnd)
            resp = SmtpResponse("000", (msg.last_error or "timeout",))
            for rid in msg.pending_rids():
                await self._bounce_rcpt(rnd, rid, 0, EXPIRED, resp, False)
        finally:
            await self._finish_round(rnd)

    # --- per-recipient outcomes ----------------------------------------------------------------

    def _ensure_headers(self, rnd: _Round) -> None:
        # Read before the first final record: the last one removes the message and its body.
        if rnd.headers is None and wants_dsn(rnd.msg.envelope.sender):
            try:
                with self.spool.open_body(rnd.msg.mid) as body:
                    rnd.headers = original_headers(body)
            except KeyError:
                rnd.headers = b""

    async def _bounce_rcpt(self, rnd: _Round, rid: int, dcid: int, status: Status,
                           response: SmtpResponse | None, by_destination: bool, remote: str | None = None) -> None:
        mid = rnd.msg.mid
        await self.spool.record(mid, rid, RcptState.BOUNCED, error=f"{status.code} {status.description}")
        self.sink.emit(Bounced(dcid, mid, rid, status.code, status.description, response, by_destination))
        rnd.bounced.append(FailedRecipient(rnd.msg.envelope.recipients[rid], status.code, status.description,
                                           response, remote))

    async def _defer_rcpt(self, rnd: _Round, rid: int, dcid: int, status: Status,
                          response: SmtpResponse | None) -> None:
        msg = rnd.msg
        now = self.clock()
        if not rnd.next_decided:
            retry = self.settings.retry
            rnd.next_attempt = retry.next_attempt(attempts=msg.attempts + 1, now=now,
                                                  received_at=msg.envelope.received_at)
            rnd.next_decided = True
            warn_at = self.settings.delay_warning
            if warn_at is not None and rnd.next_attempt is not None:
                age = now - msg.envelope.received_at
                before = age - (retry.delay(msg.attempts) if msg.attempts else age)
                rnd.warn = before < warn_at <= age
        if rnd.next_attempt is None:
            # Out of retries or too old: the last failure's reply goes with the bounce.
            self._ensure_headers(rnd)
            await self._bounce_rcpt(rnd, rid, dcid, EXPIRED, response, False)
            return
        self.sink.emit(Delayed(dcid, msg.mid, rid, status.code, status.description, response))
        self.sink.emit(PendingTill(msg.mid, (rid,), ctime(rnd.next_attempt)))
        text = f"{status.code} {status.description}"
        if response is not None:
            text += f" {response.code} {' '.join(response.lines)}"
        rnd.deferred[rid] = text
        if rnd.warn:
            self._ensure_headers(rnd)

    def _job_done(self, job: _Job) -> None:
        job.round.jobs -= 1
        if self._stopping:
            # Shutting down: whatever is not recorded yet is simply tried again after restart.
            self._rounds.pop(job.round.msg.mid, None)
            return
        if job.round.jobs <= 0:
            self._spawn(self._finish_round(job.round))

    async def _finish_round(self, rnd: _Round) -> None:
        msg = rnd.msg
        env = msg.envelope
        try:
            if rnd.deferred and self.spool.get(msg.mid) is not None:
                errors = sorted(set(rnd.deferred.values()))
                await self.spool.defer(msg.mid, sorted(rnd.deferred), next_attempt=rnd.next_attempt,
                                       error="; ".join(errors))
            if rnd.bounced and wants_dsn(env.sender):
                await self._inject_dsn(rnd, rnd.bounced, delayed=False)
            if rnd.warn and rnd.deferred and wants_dsn(env.sender):
                failed = [FailedRecipient(env.recipients[r], "4.0.0", "Delivery delayed", None)
                          for r in sorted(rnd.deferred)]
                await self._inject_dsn(rnd, failed, delayed=True)
            if self.spool.get(msg.mid) is None:
                self.sink.emit(MessageFinished(msg.mid, "done"))
        except Exception:
            log.exception("MID %s: finishing the delivery round failed", msg.mid)
        finally:
            self._rounds.pop(msg.mid, None)
            left = self.spool.get(msg.mid)
            if left is not None:
                if rnd.deferred and rnd.next_attempt is not None:
                    self._arm(left)
                else:
                    # Nothing recorded for the pending recipients (a bug or an interrupted
                    # job): try again later, never in a tight loop.
                    self._arm(left, self.clock() + self.settings.retry.initial)
            self.wake()

    async def _inject_dsn(self, rnd: _Round, failed: list[FailedRecipient], *, delayed: bool) -> int:
        env = rnd.msg.envelope
        now = self.clock()
        retry_until = env.received_at + self.settings.retry.max_lifetime
        data = build_dsn(hostname=self.settings.hostname, sender=env.sender, mid=env.mid,
                         arrival=env.received_at, now=now, recipients=failed, headers=rnd.headers or b"",
                         delayed=delayed, retry_until=retry_until)
        new = self.mids.next()
        self._locked.add(new)           # announce it in the log before anyone delivers it
        try:
            writer = self.spool.writer()
            writer.write(data)
            await writer.commit(Envelope(mid=new, icid=0, sender="", recipients=(env.sender,),
                                         received_at=now, helo=self.settings.hostname, origin_mid=env.mid))
            self.sink.emit(GeneratedForBounce(new, env.mid))
            self.sink.emit(StartMid(new, 0))
            self.sink.emit(MailFrom(new, 0, ""))
            self.sink.emit(RcptTo(new, 0, 0, env.sender))
            self.sink.emit(MessageReady(new, len(data), ""))
            self.sink.emit(QueuedForDelivery(new))
        finally:
            self._locked.discard(new)
            self.wake()
        return new

    # --- operator actions (control channel) ----------------------------------------------------

    async def delete(self, mid: int) -> None:
        """Remove a message without notice (``postsuper -d``)."""
        self._claim(mid)
        try:
            await self.spool.delete(mid)
            self.sink.emit(MessageAborted(mid, "deleted by administrator"))
            self.sink.emit(MessageFinished(mid, "aborted"))
        finally:
            self._release(mid)

    async def bounce(self, mid: int) -> int | None:
        """Bounce every pending recipient now; returns the DSN's MID (None for a null sender)."""
        msg = self._claim(mid)
        rnd = _Round(msg)
        try:
            self._ensure_headers(rnd)
            for rid in msg.pending_rids():
                await self._bounce_rcpt(rnd, rid, 0, ADMIN_BOUNCE, None, False)
            new = await self._inject_dsn(rnd, rnd.bounced, delayed=False) if wants_dsn(msg.envelope.sender) else None
            if self.spool.get(mid) is None:
                self.sink.emit(MessageFinished(mid, "done"))
            return new
        finally:
            self._release(mid)

    def _release(self, mid: int) -> None:
        self._locked.discard(mid)
        if (msg := self.spool.get(mid)) is not None:   # the operation failed half way
            self._arm(msg)
            self.wake()

    def _claim(self, mid: int) -> QueuedMessage:
        msg = self.spool.get(mid)
        if msg is None:
            raise KeyError(f"MID {mid} is not queued")
        if mid in self._rounds or mid in self._locked:
            raise Busy(f"MID {mid} is being delivered; try again in a moment")
        self._locked.add(mid)
        return msg


def build_manager(cfg, *, spool, sink: EventSink, dcids: Counter, mids: Counter,
                  resolver: Resolver | None = None, credentials: Mapping[str, Credentials] | None = None,
                  **overrides) -> QueueManager:
    """The manager from the config (``config.Config``): routes, retry policy, limits; the
    control socket lives in the spool directory."""
    from .routes import routes_from_config

    d = cfg.delivery
    settings = ManagerSettings(
        hostname=cfg.gateway.hostname,
        retry=RetryPolicy(initial=d.initial_retry, max_interval=d.max_retry_interval,
                          max_lifetime=d.max_queue_lifetime, max_retries=d.max_retries),
        concurrency_per_destination=d.concurrency_per_destination, total_concurrency=d.total_concurrency,
        delay_warning=d.delay_warning, connect_timeout=d.connect_timeout, command_timeout=d.command_timeout,
        source_address=d.source_address)
    if resolver is None:
        from ..net.dns import DnsPythonResolver

        resolver = DnsPythonResolver(cfg.dns.nameservers or None, cfg.dns.timeout)
    kwargs = dict(settings=settings, resolver=resolver, credentials=credentials,
                  control_path=cfg.gateway.spool_dir / "control.sock")
    kwargs.update(overrides)
    return QueueManager(spool, sink, routes_from_config(cfg.route), dcids=dcids, mids=mids, **kwargs)
