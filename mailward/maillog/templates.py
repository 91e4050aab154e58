"""The template table: the text shape of every event class, one line per shape.

Owns: which words the appliance writes for each event, including the legacy shapes real
logs carry. It knows nothing of how a template is compiled, matched or escaped (that is
``grammar.py``) nor of framing (timestamps, syslog headers).

Slot syntax inside a template: ``{field}`` free text (escaped), ``{field:int}``, ``{field:sint}``
(signed), ``{field:rids}`` (``[0, 1]``), ``{field:resp}`` (``('554', ['...'])``), ``{field:q}``
(quoted like Python's repr), ``{field:qs}`` (quoted in the style of the event's ``quote``
field), ``{field:uq}`` (unquoted text that must not look quoted), ``{field:yn}`` (yes/no),
``{field:sf}`` (succeeded/failed), ``{field:rdns}`` (None is ``unknown``), ``{field:list}``
(a raw ``[...]`` list), ``{field:enum:A|B}``.

``Shape`` options: ``fixed`` pins fields the template implies (a legacy flag, a kind);
``guards`` names extra texts a free-text field must never contain (so that a sibling
template cannot steal the line; ``^text``: must not start with it); ``parse_only`` marks shapes we read but never write.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import events as ev


@dataclass(frozen=True)
class Shape:
    cls: type
    text: str
    fixed: dict = field(default_factory=dict)
    guards: dict = field(default_factory=dict)
    parse_only: bool = False


def S(cls: type, text: str, parse_only: bool = False, guards: dict | None = None, **fixed) -> Shape:
    return Shape(cls, text, fixed, guards or {}, parse_only)


_RESP_GUARD = (" ('", ' ("')


def _failure_shapes(cls: type, head: str, legacy: bool = False) -> list[Shape]:
    """Bounced/Delayed: <head> - <status> - <description>[ <response>[ <extra>]]."""
    out = []
    fixed = {"legacy": True} if legacy else {}
    tails = [
        (" - {status} - {description} {response:resp} {extra:list}", {}),
        (" - {status} - {description} {response:resp}", {}),
        (" - {status} - {description}", {}),
    ]
    for tail, _ in tails:
        guards = {"description": _RESP_GUARD + (" [",)}
        out.append(S(cls, head + tail, guards=guards, **fixed))
    return out


def _bounce_shapes() -> list[Shape]:
    out = []
    heads = [
        ("Bounced: DCID {dcid:int} MID {mid:int} From: <{sender}> To: <{rcpt}> RID {rid:int}", {}),
        ("Bounced: DCID {dcid:int} MID {mid:int} to RID {rid:int}", {}),
    ]
    for head, _ in heads:
        by = head + " - Bounced by destination server with response:"
        for sh in _failure_shapes(ev.Bounced, by):
            # "...with response: - 5.1.0 - ..." is not the real shape: the status follows at once.
            text = sh.text.replace("response: - {status}", "response: {status}")
            out.append(S(ev.Bounced, text, guards=sh.guards, by_destination=True))
        for sh in _failure_shapes(ev.Bounced, head):
            guards = dict(sh.guards, status=("^Bounced by destination server with response: ",))
            out.append(S(ev.Bounced, sh.text, guards=guards, by_destination=False))
    return out


def _delayed_shapes() -> list[Shape]:
    out = []
    out += _failure_shapes(ev.Delayed,
                           "Delayed: DCID {dcid:int} MID {mid:int} From: <{sender}> To: <{rcpt}> RID {rid:int}")
    out += _failure_shapes(ev.Delayed, "Delayed: DCID {dcid:int} MID {mid:int} to RID {rid:int}")
    out += _failure_shapes(ev.Delayed, "Delayed: DCID: {dcid:int} Message {mid:int} to {rid:int}", legacy=True)
    return out


SHAPES: list[Shape] = [
    # --- housekeeping
    S(ev.BeginLogfile, "Begin Logfile"),
    S(ev.EndLogfile, "End Logfile"),
    S(ev.VersionInfo, "Version: {version} SN: {serial}"),
    S(ev.TimeOffset, "Time offset from UTC: {seconds:sint} seconds"),

    # --- inbound connection
    S(ev.NewIcid, "New SMTP ICID {icid:int} interface {interface} ({interface_ip}) address {address} "
                  "reverse dns host {rdns:rdns} verified {verified:yn}", legacy=False),
    S(ev.NewIcid, "New SMTP ICID {icid:int} interface {interface} address {address}",
      legacy=True, interface_ip="", rdns=None, verified=False),
    S(ev.HatDecision, "ICID {icid:int} {policy:enum:ACCEPT|RELAY|REJECT|TCPREFUSE|CONTINUE} SG {sender_group} "
                      "match {match} SBRS {sbrs} country {country}"),
    S(ev.HatDecision, "ICID {icid:int} {policy:enum:ACCEPT|RELAY|REJECT|TCPREFUSE|CONTINUE} SG {sender_group} "
                      "match {match} SBRS {sbrs}", guards={"sbrs": (" country ",)}),
    # 4.5 quirk: no "match" at all; read as an empty match.
    S(ev.HatDecision, "ICID {icid:int} {policy:enum:ACCEPT|RELAY|REJECT|TCPREFUSE|CONTINUE} SG {sender_group} "
                      "SBRS {sbrs}", parse_only=True, match=""),
    S(ev.HatDecision, "ICID {icid:int} SBRS {sbrs}", policy="", sender_group="", match=""),
    S(ev.IcidTlsSuccess, "ICID {icid:int} TLS success protocol {protocol} cipher {cipher}"),
    S(ev.IcidTlsSuccess, "ICID {icid:int} TLS success", protocol=None, cipher=None),
    S(ev.IcidTlsFailed, "ICID {icid:int} TLS failed: {reason}"),
    S(ev.IcidTlsFailed, "ICID {icid:int} TLS failed", reason=None),
    S(ev.IcidTlsRequired, "ICID {icid:int} TLS was required but remote host did not initiate it"),
    S(ev.IcidClose, "ICID {icid:int} close"),
    S(ev.IcidLost, "ICID {icid:int} lost"),
    S(ev.ReceivingFailed, "ICID {icid:int} Receiving Failed: {reason}"),
    S(ev.InvalidAddress, "ICID {icid:int} MID {mid:int} Invalid {kind:enum:sender|recipient} address: {reason}"),
    S(ev.InvalidAddress, "ICID {icid:int} Invalid {kind:enum:sender|recipient} address: {reason}", mid=None),

    # --- SMTP AUTH
    S(ev.SmtpAuthResult, "SMTP Auth: (ICID {icid:int}) {succeeded:sf} for user: {user} using AUTH mechanism: "
                         "{mechanism} with profile: {profile}", colon=True),
    S(ev.SmtpAuthResult, "SMTP Auth (ICID {icid:int}) {succeeded:sf} for user: {user} using AUTH mechanism: "
                         "{mechanism} with profile: {profile}", colon=False),
    S(ev.SmtpAuthLockout, "SMTP Auth: (ICID {icid:int}) lockout of {scope:enum:address|user} {key} for "
                          "{seconds:int} seconds after {failures:int} failures"),
    S(ev.SmtpAuthRejected, "SMTP Auth: (ICID {icid:int}) rejected using AUTH mechanism: {mechanism} reason: {reason}"),
    *[shape
      for colon, head in ((True, "SMTP Auth: (ICID {icid:int})"), (False, "SMTP Auth (ICID {icid:int})"))
      for shape in (
          S(ev.SmtpAuthForwardUnreachable, head + " could not reach forwarding server {server} with reason: {reason}",
            colon=colon),
          S(ev.SmtpAuthForwardUnreachable, head + " could not reach forwarding server {server}", colon=colon,
            reason=None, guards={"server": (" with reason: ",)}),
          S(ev.SmtpAuthLdapLookupFailed, head + " LDAP query/user lookup failed for user: {user}", colon=colon),
          S(ev.SmtpAuthMisconfigured, head + " profile: {profile} is misconfigured or missing causing an Auth "
                                             "failure", colon=colon),
          S(ev.SmtpAuthRequiredNotInitiated, head + " was required but remote host did not initiate it",
            colon=colon),
      )],

    # --- message lifecycle
    S(ev.StartMid, "Start MID {mid:int} ICID {icid:int} {note}"),
    S(ev.StartMid, "Start MID {mid:int} ICID {icid:int}", note=None),
    S(ev.MailFrom, "MID {mid:int} ICID {icid:int} From: <{sender}>"),
    S(ev.RcptTo, "MID {mid:int} ICID {icid:int} RID {rid:int} To: <{rcpt}>"),
    S(ev.RcptRejected, "MID {mid:int} ICID {icid:int} To: <{rcpt}> Rejected by {by}"),
    S(ev.MessageIdHeader, "MID {mid:int} Message-ID {message_id:q}"),
    S(ev.SubjectHeader, "MID {mid:int} Subject {subject:qs}"),
    S(ev.SubjectHeader, "MID {mid:int} Subject {subject:uq}", quote=""),
    S(ev.MessageReady, "MID {mid:int} ready {size:int} bytes from <{sender}>"),
    S(ev.PolicyMatch, "MID {mid:int} matched all recipients for per-recipient policy {policy} in the "
                      "{direction:enum:inbound|outbound} table"),
    S(ev.QueuedForDelivery, "MID {mid:int} queued for delivery"),
    S(ev.MessageFinished, "Message finished MID {mid:int} {status}"),
    S(ev.MessageAborted, "Message aborted MID {mid:int} {reason}"),
    S(ev.GeneratedForBounce, "MID {mid:int} was generated for bounce of MID {original_mid:int}"),
    S(ev.GeneratedBcc, "MID {mid:int} was generated based on MID {original_mid:int} by bcc filter {filter_name:q}",
      legacy=False),
    S(ev.GeneratedBcc, "MID {mid:int} generated based on MID {original_mid:int} by bcc filter {filter_name:q}",
      legacy=True),
    S(ev.SplitMid, "MID {mid:int} was split creating MID {new_mid:int} due to {reason}"),
    S(ev.RewrittenMid, "MID {mid:int} rewritten to MID {new_mid:int} by {by}", legacy=False),
    S(ev.RewrittenMid, "MID {mid:int} rewritten to {new_mid:int} by {by}", legacy=True),
    S(ev.DeliveryResponse, "MID {mid:int} RID {rids:rids} Response {response:qs}"),
    S(ev.DeliveryResponse, "MID {mid:int} RID {rids:rids} Response {response:uq}", quote=""),
    S(ev.PendingTill, "Message {mid:int} to RID {rids:rids} pending till {until}", legacy=False),
    S(ev.PendingTill, "MID {mid:int} to RID {rids:rids} pending till {until}", legacy=True),
    S(ev.IsqTagged, "ISQ: Tagging MID {mid:int} for quarantine"),
    S(ev.Reinjected, "EUQ: Reinjected MID {mid:int} as MID {new_mid:int}"),
    S(ev.LdapReroute, "LDAP: Reroute query {query} MID {mid:int} RID {rid:int} address {address} to {targets}"),
    S(ev.LdapDrop, "LDAP: Drop query {query} MID {mid:int} RID {rid:int} address {address}"),

    # --- delivery
    S(ev.NewDcid, "New SMTP DCID {dcid:int} interface {interface} address {address} port {port:int}"),
    S(ev.NewDcid, "New SMTP DCID {dcid:int} interface {interface} address {address}", port=None,
      guards={"address": (" port ",)}),
    S(ev.DcidTlsSuccess, "DCID {dcid:int} TLS success protocol {protocol} cipher {cipher} for {domain}"),
    S(ev.DcidTlsSuccess, "DCID {dcid:int} TLS success protocol {protocol} cipher {cipher}", domain=None,
      guards={"cipher": (" for ",)}),
    S(ev.DcidTlsSuccess, "DCID {dcid:int} TLS success", protocol=None, cipher=None, domain=None),
    S(ev.DcidTlsFailed, "DCID {dcid:int} TLS failed: {reason}"),
    S(ev.DcidTlsFailed, "DCID {dcid:int} TLS failed", reason=None),
    S(ev.DcidTlsRequired, "DCID {dcid:int} IP {address} TLS was required but could not be successfully negotiated"),
    S(ev.OutboundAuthResult, "DCID: {dcid:int} IP: {address} SMTP authentication using the profile {profile} "
                             "succeeded.", succeeded=True, response=None),
    S(ev.OutboundAuthResult, "DCID: {dcid:int} IP: {address} SMTP authentication using the profile {profile} "
                             "failed: {response:resp}", succeeded=False),
    S(ev.OutboundAuthResult, "DCID: {dcid:int} IP: {address} SMTP authentication using the profile {profile} "
                             "failed.", succeeded=False, response=None),
    S(ev.DeliveryStart, "Delivery start DCID {dcid:int} MID {mid:int} to RID {rids:rids} {note}", legacy=False),
    S(ev.DeliveryStart, "Delivery start DCID {dcid:int} MID {mid:int} to RID {rids:rids}", legacy=False, note=None),
    S(ev.DeliveryStart, "Delivery start DCID {dcid:int} MID {mid:int} to {rids:rids} {note}", legacy=True),
    S(ev.DeliveryStart, "Delivery start DCID {dcid:int} MID {mid:int} to {rids:rids}", legacy=True, note=None),
    S(ev.MessageDone, "Message done DCID {dcid:int} MID {mid:int} to RID {rids:rids} {note}"),
    S(ev.MessageDone, "Message done DCID {dcid:int} MID {mid:int} to RID {rids:rids}", note=None),
    *_bounce_shapes(),
    *_delayed_shapes(),
    S(ev.DoubleBounce, "Double bounce: Message {mid:int} to {rid:int} - {status} - {description}"),
    S(ev.PossibleDelivery, "Possible Delivery: DCID: {dcid:int} MID {mid:int} to {rids:rids}"),
    S(ev.DeliveryConnectionError, "Connection Error: DCID {dcid:int} domain: {domain} IP: {address} port: "
                                  "{port:int} details: {details} interface: {interface} reason: {reason}",
      legacy=False),
    S(ev.DeliveryConnectionError, "Connection Error: DCID: {dcid:int} IP: {address} details: {details} "
                                  "interface: {interface} reason: {reason}", legacy=True, domain="", port=0),
    S(ev.DnsError, "DNS Error {domain} MX - {detail}", kind="Error"),
    S(ev.DnsError, "DNS Temporary Failure {domain} MX - {detail}", kind="Temporary Failure"),
    S(ev.DnsError, "DNS failure for SMTP route destination {domain}", kind="route", detail=""),
    S(ev.DcidClose, "DCID {dcid:int} close"),
    S(ev.RpcDeliveryStart, "RPC Delivery start RCID {rcid:int} MID {mid:int} to {destination}"),
    S(ev.RpcMessageDone, "RPC Message done RCID {rcid:int} MID {mid:int}"),

    # --- catch-alls (tried last within their first word)
    S(ev.MidNote, "MID {mid:int} {text}", inline=False),
    S(ev.IcidNote, "ICID {icid:int} {text}", inline=False),
    S(ev.DcidNote, "DCID {dcid:int} {text}", inline=False),
]

#: Classes whose text is free: the formatter re-reads what it wrote and escapes the first
#: character of the text when a more specific template would steal the line.
CATCH_ALLS = (ev.MidNote, ev.IcidNote, ev.DcidNote, ev.SystemNote)

#: Id-less bodies the appliance writes (beyond the templates above): read as SystemNote
#: without an "unknown-body" flag.
KNOWN_SYSTEM_PREFIXES = (
    "A ", "Internal SMTP", "Status:", "CASE cache status:", "SenderBase upload:", "URL_REP_CLIENT:",
    "graymail ", "GRAYMAIL:", "Error while sending alert", "Your ", "URL category definitions",
    "Deliveries are currently suspended", "SMTP Auth LDAP query failed", "SMTP Auth forward server",
    "LDAP:", "Mail delivery client", "DNS ", "Internal SMTP system",
)
