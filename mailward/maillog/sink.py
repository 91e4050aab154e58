"""Where events go. The gateway, the auth profiles and the delivery agent log only by
calling ``sink.emit(event)``; they never format text themselves. ``MailLogWriter`` (the
real file/syslog writer) and ``ListSink`` (for tests) both satisfy ``EventSink``."""
from __future__ import annotations

from typing import Protocol

from .events import Event


class EventSink(Protocol):
    def emit(self, event: Event) -> None:
        """Record one event. Must not block on disk and must not raise."""


class ListSink:
    """Keeps events in memory; tests read ``.events``."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, cls: type) -> list:
        return [e for e in self.events if isinstance(e, cls)]
