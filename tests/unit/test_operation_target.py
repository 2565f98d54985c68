"""``@operation`` hands the policy the target as it was given, positional or by keyword (as root,
whose targets are not looked up: the scope carries the ref as given)."""

from __future__ import annotations

from types import SimpleNamespace

from mariposa.access.model import Decision
from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller

WHO = Caller(transport="unix", uid=0, gid=0, pid=1)


class Recorder:
    def __init__(self):
        self.asked = []

    def decide(self, caller, action, scope):
        self.asked.append((action, None if scope.anywhere else str(scope)))
        return Decision(True, "recorded")

    def is_root(self, caller):
        return True


class Things(Area):
    @operation("thing.get", target="ref")
    async def get(self, caller: Caller, ref: str, detail: bool = False) -> str:
        return ref

    @operation("thing.copy", target="name")
    async def copy(self, caller: Caller, ref: str, name: str | None = None, *, force: bool = False) -> str:
        return f"{ref}->{name}"

    @operation("thing.list")
    async def list(self, caller: Caller, filter: str = "") -> str:
        return filter


async def test_the_policy_sees_the_target_however_it_was_passed():
    policy = Recorder()
    things = Things(SimpleNamespace(audit=None), policy)  # type: ignore[arg-type]
    assert await things.get(WHO, "a") == "a"
    await things.get(WHO, ref="b", detail=True)
    await things.copy(WHO, "c", "d")
    await things.copy(WHO, "e", name="f", force=True)
    await things.copy(WHO, "g")  # left to its default: no target, as binding the signature said
    await things.list(WHO, "x")
    assert policy.asked == [("thing.get", "a"), ("thing.get", "b"), ("thing.copy", "d"), ("thing.copy", "f"),
                            ("thing.copy", None), ("thing.list", None)]
