"""A small authoritative DNS server on a private loopback UDP port, for tests that need real
DNS over a real socket (dnspython on both sides: parsing and building the messages).

Answers A queries from a name -> addresses table, NXDOMAIN for other names, and never answers
names under ``silent_zones`` (a list that has gone dark). Runs in a thread; every wait is
bounded by a socket timeout, and ``stop()`` ends it.
"""
from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self, records: dict[str, list[str]], *, silent_zones: tuple[str, ...] = ()):
        self.records = {k.lower().rstrip("."): v for k, v in records.items()}
        self.silent_zones = tuple(z.lower().rstrip(".") for z in silent_zones)
        self.queries: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "DnsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
            except Exception:
                continue
            question = query.question[0]
            name = question.name.to_text().lower().rstrip(".")
            self.queries.append(name)
            if any(name == z or name.endswith("." + z) for z in self.silent_zones):
                continue
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            addresses = self.records.get(name)
            if addresses is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.A:
                response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", *addresses))
            self._sock.sendto(response.to_wire(), peer)
