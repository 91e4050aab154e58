"""One flat record per message-recipient, with the joined ICID/MID/DCID facts, under three
naming schemes: our own (``native``), Elastic Common Schema (``ecs``, nested objects) and Splunk
CIM Email (``cim``).

Owns the field list and the name mappings. It does not read logs or write files.
ECS names follow the ECS ``email.*``, ``source.*``, ``destination.*``, ``user.*``, ``tls.*``
field sets; fields with no ECS home go under ``cisco.esa.*`` (as Elastic's own integration
does: ``cisco_secure_email_gateway.log.*``). CIM names follow the Splunk Email data model
(``internal_message_id``, ``src_user``, ``recipient``, ``message_subject``, ...), with the
``action`` values of Splunk's Cisco ESA add-on lookup (delivered, blocked, deferred, quarantined).
"""
from __future__ import annotations

from typing import Iterator

from .model import Message
from .times import iso

NATIVE_FIELDS = (
    "time", "appliance", "mid", "rid", "icid", "dcid", "sender", "recipient", "outcome", "response",
    "status", "description", "attempts", "message_id", "subject", "size", "direction", "policy",
    "peer_ip", "rdns", "rdns_verified", "listener", "listener_ip", "sender_group", "hat_policy", "sbrs",
    "country", "tls_in", "auth_user", "auth_mechanism", "auth_profile", "dest_ip", "dest_port",
    "source_ip", "tls_out", "outbound_auth_profile", "outbound_auth", "parent_mid", "relation",
    "finished", "message_status", "abort_reason", "expired",
)

TABLE_FIELDS = ("time", "mid", "rid", "sender", "recipient", "outcome", "peer_ip", "auth_user", "dcid",
                "dest_ip", "response")


def records(m: Message) -> Iterator[dict]:
    """The native records of one story, one per recipient (one with an empty recipient when the
    message ended before any recipient was known, e.g. rejected at connection time)."""
    c = m.connection
    base = {
        "time": iso(m.started if m.started is not None else m.last_seen),
        "appliance": m.appliance or None, "mid": m.mid, "icid": m.icid, "sender": m.sender,
        "message_id": m.message_id, "subject": m.subject, "size": m.size, "direction": m.direction,
        "policy": m.policy,
        "peer_ip": c.peer_ip if c else None, "rdns": c.rdns if c else None,
        "rdns_verified": c.verified if c else None, "listener": c.interface if c else None,
        "listener_ip": c.interface_ip if c else None, "sender_group": c.sender_group if c else None,
        "hat_policy": c.policy if c else None, "sbrs": c.sbrs if c else None,
        "country": c.country if c else None,
        "tls_in": (f"{c.tls_protocol} {c.tls_cipher or ''}".strip() if c and c.tls_protocol else None),
        "auth_user": c.auth_user if c else None, "auth_mechanism": c.auth_mechanism if c else None,
        "auth_profile": c.auth_profile if c else None,
        "parent_mid": m.parent, "relation": m.relation, "finished": iso(m.finished),
        "message_status": m.status, "abort_reason": m.abort_reason, "expired": m.expired,
    }
    rcpts = sorted(m.recipients.items())
    if not rcpts:
        yield base | {k: None for k in ("rid", "recipient", "dcid", "dest_ip", "dest_port", "source_ip",
                                         "tls_out", "outbound_auth_profile", "outbound_auth", "response",
                                         "status", "description")} | {
            "outcome": "dropped" if m.status == "aborted" or m.abort_reason else "none", "attempts": 0}
        return
    for rid, r in rcpts:
        d = r.delivery
        outcome = r.outcome
        yield base | {
            "rid": rid, "recipient": r.address, "outcome": outcome, "response": r.response,
            "status": r.status, "description": r.description, "attempts": r.attempts,
            "dcid": d.dcid if d else None, "dest_ip": d.address if d else None,
            "dest_port": d.port if d else None, "source_ip": d.interface if d else None,
            "tls_out": (f"{d.tls_protocol} {d.tls_cipher or ''}".strip() if d and d.tls_protocol else None),
            "outbound_auth_profile": d.auth_profile if d else None,
            "outbound_auth": (None if d is None or d.auth_succeeded is None
                              else ("success" if d.auth_succeeded else "failure")),
        }


# --- ECS -----------------------------------------------------------------------------------

_ECS_ACTION = {"delivered": "delivered", "bounced": "bounced", "delayed": "deferred",
               "quarantined": "quarantined", "pending": "pending", "dropped": "dropped", "split": "split",
               "none": "none"}


def _put(doc: dict, dotted: str, value) -> None:
    if value is None:
        return
    node = doc
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def to_ecs(rec: dict) -> dict:
    """Nested ECS document for one native record."""
    doc: dict = {}
    put = lambda k, v: _put(doc, k, v)  # noqa: E731 - a local shorthand
    put("@timestamp", rec["time"])
    put("event.kind", "event")
    put("event.category", ["email"])
    put("event.action", _ECS_ACTION.get(rec["outcome"], rec["outcome"]))
    put("event.outcome", {"delivered": "success", "bounced": "failure"}.get(rec["outcome"], "unknown"))
    put("observer.vendor", "Cisco")
    put("observer.product", "Email Security Appliance")
    put("observer.serial_number", rec["appliance"])
    put("email.direction", rec["direction"])
    put("email.from.address", [rec["sender"]] if rec["sender"] is not None else None)
    put("email.to.address", [rec["recipient"]] if rec["recipient"] is not None else None)
    put("email.message_id", rec["message_id"])
    put("email.subject", rec["subject"])
    put("email.local_id", str(rec["mid"]))
    put("source.ip", rec["peer_ip"])
    put("source.domain", rec["rdns"])
    put("source.geo.country_name", rec["country"] if rec["country"] not in (None, "not enabled") else None)
    put("destination.ip", rec["dest_ip"])
    put("destination.port", rec["dest_port"])
    put("user.name", rec["auth_user"])
    put("tls.version_protocol", "tls" if rec["tls_in"] or rec["tls_out"] else None)
    put("tls.cipher", (rec["tls_out"] or rec["tls_in"] or "").split(" ", 1)[-1] or None)
    esa = {
        "mid": rec["mid"], "icid": rec["icid"], "dcid": rec["dcid"], "rid": rec["rid"],
        "size": rec["size"], "policy": rec["policy"], "sender_group": rec["sender_group"],
        "hat_policy": rec["hat_policy"], "sbrs": rec["sbrs"], "listener": rec["listener"],
        "listener_ip": rec["listener_ip"], "rdns_verified": rec["rdns_verified"],
        "tls_in": rec["tls_in"], "tls_out": rec["tls_out"], "auth_mechanism": rec["auth_mechanism"],
        "auth_profile": rec["auth_profile"], "outbound_auth_profile": rec["outbound_auth_profile"],
        "outbound_auth": rec["outbound_auth"], "response": rec["response"], "status": rec["status"],
        "description": rec["description"], "attempts": rec["attempts"], "outcome": rec["outcome"],
        "source_interface_ip": rec["source_ip"], "parent_mid": rec["parent_mid"],
        "relation": rec["relation"], "message_status": rec["message_status"],
        "abort_reason": rec["abort_reason"], "expired": rec["expired"], "finished": rec["finished"],
    }
    put("cisco.esa", {k: v for k, v in esa.items() if v is not None})
    return doc


# --- Splunk CIM Email -------------------------------------------------------------------------

_CIM_ACTION = {"delivered": "delivered", "bounced": "blocked", "delayed": "deferred",
               "quarantined": "quarantined", "dropped": "blocked", "pending": "deferred", "split": "split",
               "none": "blocked"}

_CIM_NAMES = {
    "time": "_time", "appliance": "dvc", "mid": "internal_message_id", "icid": "icid", "dcid": "dcid",
    "rid": "rid", "sender": "src_user", "recipient": "recipient", "message_id": "message_id",
    "subject": "message_subject", "size": "message_size", "peer_ip": "src_ip", "rdns": "src",
    "dest_ip": "dest_ip", "dest_port": "dest_port", "auth_user": "user", "response": "vendor_reason",
    "outcome": "vendor_action", "direction": "direction", "policy": "policy", "sbrs": "sbrs",
    "sender_group": "sender_group", "tls_in": "tls_in", "tls_out": "tls_out",
    "auth_mechanism": "auth_mechanism", "auth_profile": "auth_profile",
    "outbound_auth_profile": "outbound_auth_profile", "outbound_auth": "outbound_auth",
    "status": "status_code", "description": "status_description", "attempts": "delivery_attempts",
    "parent_mid": "orig_internal_message_id", "relation": "relation", "country": "src_country",
    "listener": "src_interface", "hat_policy": "hat_action", "source_ip": "src_interface_ip",
}


def to_cim(rec: dict) -> dict:
    out = {_CIM_NAMES[k]: v for k, v in rec.items() if k in _CIM_NAMES}
    out["action"] = _CIM_ACTION.get(rec["outcome"], rec["outcome"])
    out["vendor_product"] = "Cisco ESA"
    return out


def columns(names: str) -> list[str]:
    """The fixed CSV columns of a naming scheme (so CSV can be written as stories finish)."""
    full = {k: "x" for k in NATIVE_FIELDS} | {"outcome": "delivered"}
    if names == "native":
        return list(NATIVE_FIELDS)
    if names == "cim":
        return list(to_cim(full))
    return list(flatten(to_ecs(full)))


def flatten(doc: dict, prefix: str = "") -> dict:
    """Dotted keys for CSV output of nested ECS documents."""
    out: dict = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = ";".join(str(x) for x in v)
        else:
            out[key] = v
    return out
