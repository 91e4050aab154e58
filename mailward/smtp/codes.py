"""The replies the SMTP server core gives by itself, in one table.

Owns the exact text and enhanced status code (RFC 2034/3463) of every answer the core
makes without asking the application: syntax, sequence and line-length errors, the
defaults used when the application answers ``None``. Texts follow Postfix where it has
one, so clients and log readers see familiar wording. Knows nothing of state or I/O.
"""
from __future__ import annotations

from .events import AuthCredentials, DataEnd, DataStart, MailFrom, RcptTo
from .reply import Reply

R_SYNTAX = Reply(500, "5.5.1 Error: command not recognized")
R_TOO_LONG = Reply(500, "5.5.2 Error: line too long")
R_BARE_LF_CMD = Reply(500, "5.5.2 Error: bare <LF> received")
R_BAD_CHARS = Reply(500, "5.5.2 Error: invalid characters in command")
R_NEED_HELO = Reply(503, "5.5.1 Error: send HELO/EHLO first")
R_NEED_MAIL = Reply(503, "5.5.1 Error: need MAIL command")
R_NEED_RCPT = Reply(503, "5.5.1 Error: need RCPT command")
R_NO_VALID_RCPT = Reply(554, "5.5.1 Error: no valid recipients")
R_NESTED_MAIL = Reply(503, "5.5.1 Error: nested MAIL command")
R_IN_TRANSACTION = Reply(503, "5.5.1 Error: MAIL transaction in progress")
R_OK = Reply(250, "2.0.0 Ok")
R_BYE = Reply(221, "2.0.0 Bye")
R_VRFY = Reply(252, "2.0.0 Cannot VRFY user, but will accept message and attempt delivery")
R_HELP = Reply(214, "2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH")
R_NOT_IMPL = Reply(502, "5.5.1 Error: command not implemented")
R_TLS_GO = Reply(220, "2.0.0 Ready to start TLS")
R_TLS_ALREADY = Reply(503, "5.5.1 Error: TLS already active")
R_AUTH_ALREADY = Reply(503, "5.5.1 Error: already authenticated")
R_AUTH_UNKNOWN = Reply(504, "5.5.4 Unrecognized authentication type")
R_AUTH_CANCEL = Reply(501, "5.0.0 Authentication cancelled")
R_AUTH_B64 = Reply(501, "5.5.2 Cannot decode response")
R_AUTH_AUTHZ = Reply(535, "5.7.8 Error: authentication failed: authorization identity not allowed")
R_UTF8 = Reply(553, "5.6.7 Error: SMTPUTF8 not requested for this address")
R_SIZE = Reply(552, "5.3.4 Message size exceeds fixed limit")
R_BARE_LF = Reply(554, "5.5.0 Error: bare <LF> received")
R_DATA_LINE = Reply(500, "5.5.2 Error: message line too long")
R_DEFAULT = {MailFrom: Reply(250, "2.1.0 Ok"), RcptTo: Reply(250, "2.1.5 Ok"),
             DataStart: Reply(354, "End data with <CR><LF>.<CR><LF>"), DataEnd: Reply(250, "2.0.0 Ok"),
             AuthCredentials: Reply(535, "5.7.8 Error: authentication failed")}

