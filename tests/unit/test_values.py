"""fast_init: a frozen slots dataclass built through its slot descriptors is the same value as
one built by the dataclass __init__ (fields, defaults, factories, __post_init__, equality,
hash, frozenness, replace), and classes it cannot speed up safely keep their own __init__."""
from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass, field

import pytest

from mailward.maillog import events as ev
from mailward.smtp import events as smtp_ev
from mailward.smtp.reply import Reply
from mailward.smtp.sasl import Credentials
from mailward.values import fast_init


def _pair():
    def make():
        @dataclass(frozen=True, slots=True)
        class V:
            a: int
            b: str = "x"
            c: tuple = field(default_factory=tuple)

            def __post_init__(self):
                if self.a < 0:
                    raise ValueError("negative")
        return V
    return make(), fast_init(make())


def test_same_value_as_the_dataclass_init():
    Plain, Fast = _pair()
    assert Fast.__init__ is not Plain.__init__
    for args, kw in (((1,), {}), ((1, "y"), {}), ((), {"a": 2, "c": (1,)}), ((3,), {"b": "z"})):
        p, f = Plain(*args, **kw), Fast(*args, **kw)
        assert dataclasses.astuple(p) == dataclasses.astuple(f)
        assert repr(p).split("(", 1)[1] == repr(f).split("(", 1)[1]
    assert Fast(1) == Fast(1) and Fast(1) != Fast(2)
    assert hash(Fast(1, "y")) == hash(Fast(1, "y"))


def test_defaults_factories_post_init_and_frozen_kept():
    _, Fast = _pair()
    one, two = Fast(1), Fast(1)
    assert one.c == ()
    assert smtp_ev.MailFrom(None).params is not smtp_ev.MailFrom(None).params   # a new dict per value
    with pytest.raises(ValueError, match="negative"):
        Fast(-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = 5
    with pytest.raises(TypeError):
        Fast()                                            # a required field stays required
    with pytest.raises(TypeError):
        Fast(1, "b", (), "extra")
    assert dataclasses.replace(one, b="q") == Fast(1, "q")


def test_classes_it_cannot_speed_up_keep_their_init():
    @dataclass(frozen=True)                               # no slots
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        a: int
        secret: InitVar[str] = ""

    @dataclass(frozen=True, slots=True)
    class KwOnly:
        a: int = field(kw_only=True)

    for cls in (NoSlots, WithInitVar, KwOnly):
        before = cls.__init__
        assert fast_init(cls).__init__ is before
    assert WithInitVar(1, "s").a == 1 and KwOnly(a=2).a == 2


def test_the_gateway_value_classes_use_it():
    for cls in (ev.SmtpAuthResult, ev.NewIcid, smtp_ev.MailFrom, smtp_ev.AuthCredentials, Credentials, Reply):
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
        assert "_s0" in cls.__init__.__globals__, cls       # the generated one, not the dataclass's
    assert smtp_ev.MailFrom(None).params == {}
    with pytest.raises(ValueError):
        Reply(99, "no such code")
