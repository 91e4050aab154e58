"""Outbound delivery: from the spool to the next hop, every step in mail_logs.

The parts, each with one job (modelled on Postfix's qmgr / smtp / smtp_trouble split):

- ``routes.py``   SMTP routes: domain (exact, ``.suffix``, ``ALL``) -> hosts by priority, or
                  USEDNS (MX, implicit MX, null MX) through an injected resolver.
- ``trouble.py``  the one failure-policy table (stage x reply class -> next host / defer /
                  bounce), the appliance's status texts and the retry schedule.
- ``client.py``   one SMTP client connection (asyncio streams): STARTTLS, one AUTH
                  mechanism per attempt, PIPELINING, streamed dot-stuffed DATA.
- ``agent.py``    a delivery connection (DCID): hops in order, TLS policy, outgoing AUTH,
                  per-recipient results of a transaction.
- ``manager.py``  the queue manager: fair picking, per-destination connections and limits,
                  durable per-recipient outcomes before they are logged, retries, expiry.
- ``dsn.py``      RFC 3464 bounces and delay warnings.
- ``control.py`` / ``cli.py``  flush / delete / bounce on the running gateway.

Outgoing AUTH failure, per route (``on_auth_failure``):

- ``"continue"`` (default; what the appliance does, and what the seed shows): the failed
  AUTH is logged (``DCID: d IP: a SMTP authentication using the profile P failed: ('535',
  [...])``) and the mail is still offered; the destination's own reply decides (Postfix
  answers ``554 5.7.1 <rcpt>: Relay access denied`` and the recipient bounces).
- ``"defer"`` (Postfix's ``smtp_sasl_auth_soft_bounce = yes``): the destination is deferred
  with a 4.7.0 status and retried on the normal schedule; nothing bounces while a
  password is being rotated.

A route whose TLS policy is not ``"off"`` never sends a password in clear: without STARTTLS
only CRAM-MD5 is used, otherwise the hop fails (and mail is deferred).
"""
