"""Single instances, whatever their service: look one up, remove one by hand."""

from __future__ import annotations

from mariposa.control import logs, views
from mariposa.control.base import Area, Feed, operation
from mariposa.control.caller import Caller
from mariposa.store import events as event_store
from mariposa.store import instances as instance_store


class Instances(Area):
    @operation("instance.get", target="ref", kind="instance")
    async def get(self, caller: Caller, ref: str) -> dict:
        inst = await views.find_instance(self.ctx, ref)
        record = await self.ctx.store.call(instance_store.get, inst.id)
        data = views.instance_json(self.ctx, inst, record)
        watched = self.ctx.monitor.get(inst.id) if self.ctx.monitor else None
        data["checks"] = watched.to_json()["checks"] if watched else []
        data["record"] = record
        return data

    @operation("instance.remove", target="ref", kind="instance")
    async def remove(self, caller: Caller, ref: str) -> dict:
        """Remove one instance now (a retired one, usually); the reconciler replaces it if its
        service still wants it."""
        inst = await views.find_instance(self.ctx, ref)
        await self.ctx.driver_for(inst.compute_type).remove(inst)

        def forget(db) -> None:
            instance_store.forget(db, [inst.id])
            event_store.record(db, "instance.rm", f"{inst.name} removed by the operator", project_id=inst.project_id,
                               service=inst.service, instance=inst.id, author=caller.author)

        await self.ctx.store.call(forget)
        await self.ctx.discard_instance_files(inst.project_name, inst.id)
        self.ctx.wake_reconciler()
        return {"removed": inst.id, "name": inst.name, "was": inst.state}

    @operation("instance.logs", target="ref", kind="instance")
    async def logs(self, caller: Caller, ref: str, *, follow: bool = False, since: object = None,
                   tail: object = None) -> Feed:
        """One instance's output, a retired one's too until it is removed; ``follow`` goes on
        through its restarts in place and ends once it is removed or retired."""
        since_at, last = logs.parse_since(since, self.ctx.clock.now()), logs.parse_tail(tail)
        inst = await views.find_instance(self.ctx, ref)

        async def select() -> list:
            return [i for i in await self.ctx.inventory(inst.project_id) if i.id == inst.id]

        async def retired() -> bool:
            record = await self.ctx.store.call(instance_store.get, inst.id)
            return bool(record and record["retired"])

        return logs.Follower(self.ctx, select, since_at, last, follow, retired).feed()
