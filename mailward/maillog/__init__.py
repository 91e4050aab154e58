"""mail_logs: the typed event model, one grammar that formats and parses it, the writer.

Components log only by ``sink.emit(event)``; this package turns events into the appliance's
exact text (file or syslog framing) and reads such text (ours or a real appliance's) back.
"""
from .events import Event
from .grammar import LogRecord, format_body, format_file_line, format_syslog_line, parse_body, parse_line
from .sink import EventSink, ListSink

__all__ = [
    "Event", "EventSink", "ListSink", "LogRecord", "MailLogWriter", "format_body", "format_file_line",
    "format_syslog_line", "parse_body", "parse_line",
]


def __getattr__(name: str):
    # The writer pulls in asyncio and file handling; load it only when asked for.
    if name == "MailLogWriter":
        from .writer import MailLogWriter
        return MailLogWriter
    raise AttributeError(name)
