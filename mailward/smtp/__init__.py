"""Sans-IO SMTP: the protocol as pure state machines, with no sockets, no asyncio, no ssl
and no clock (``tests/unit/test_smtp_sansio.py`` enforces it).

Modules, one concept each:

* ``reply``   — the `Reply` value and its wire form.
* ``codes``   — the replies the server core gives by itself.
* ``address`` — RFC 5321 path grammar: `Address`, ``parse_path``, ``parse_params``.
* ``lines``   — framing: CRLF-only command lines, the DATA body (smuggling defence,
  dot-unstuffing, size and line limits).
* ``sasl``    — PLAIN, LOGIN and CRAM-MD5 exchanges and the `Credentials` they produce.
* ``events``  — what the server core hands to its driver.
* ``server``  — `ServerConnection`, the ESMTP server state machine.

The asyncio shell that drives these lives in ``mailward.net.server``.
"""
