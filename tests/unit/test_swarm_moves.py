"""swarm/moves.py's comparison: node state changes and reschedules from two listings, never twice."""

from __future__ import annotations

from mariposa.swarm.moves import Seen, compare

SERVICE = {"ID": "svc1", "Spec": {"Labels": {"io.mariposa.project": "p1", "io.mariposa.project-name": "sw",
                                              "io.mariposa.service": "web"},
                            "Mode": {"Replicated": {"Replicas": 1}}}}


def node(node_id: str, host: str, state: str = "ready") -> dict:
    return {"ID": node_id, "Description": {"Hostname": host}, "Status": {"State": state}}


def task(task_id: str, node_id: str, slot: int = 1, state: str = "running", desired: str = "running",
         created: str = "2026-01-01T00:00:00Z") -> dict:
    return {"ID": task_id, "ServiceID": "svc1", "Slot": slot, "NodeID": node_id, "DesiredState": desired,
            "Status": {"State": state}, "CreatedAt": created}


UP = [node("n1", "swarmnode-1"), node("n2", "swarmnode-2"), node("n3", "swarmnode-3")]
DOWN2 = [node("n1", "swarmnode-1"), node("n2", "swarmnode-2", "down"), node("n3", "swarmnode-3")]


def test_first_pass_is_the_baseline():
    changes, seen = compare(None, UP, [SERVICE], [task("t1", "n2")])
    assert changes == []
    assert seen.slots == {"svc1/1": ("t1", "n2")}
    assert seen.nodes["n2"] == ("swarmnode-2", "ready")


def test_node_down_then_the_task_elsewhere_then_back():
    _, seen = compare(None, UP, [SERVICE], [task("t1", "n2")])
    # the node is down; the Swarm made a new task, not running yet: only the node event
    tasks = [task("t1", "n2", desired="shutdown"), task("t2", "n3", state="assigned", created="2026-01-01T00:01:00Z")]
    changes, seen = compare(seen, DOWN2, [SERVICE], tasks)
    assert [(c.type, c.message) for c in changes] == [("node.down", "node swarmnode-2 is down (was ready)")]
    assert seen.slots == {"svc1/1": ("t1", "n2")}, "where it last ran is kept until a task runs"
    # the new task runs
    tasks[1] = task("t2", "n3", created="2026-01-01T00:01:00Z")
    changes, seen = compare(seen, DOWN2, [SERVICE], tasks)
    assert [(c.type, c.message, c.instance, c.project_id, c.service) for c in changes] == [
        ("instance.rescheduled", "sw-web.1 rescheduled from node swarmnode-2 (down) to node swarmnode-3", "t2", "p1",
         "web")]
    # the same listing again (a restarted daemon reads the same state): nothing twice
    again, seen2 = compare(Seen.loads(seen.dumps()), DOWN2, [SERVICE], tasks)
    assert again == [] and seen2 == seen
    # the node is back: its event; the old task was shut down, no move
    changes, _ = compare(seen, UP, [SERVICE], [task("t1", "n2", state="shutdown", desired="shutdown"), tasks[1]])
    assert [(c.type, c.message) for c in changes] == [("node.ready", "node swarmnode-2 is ready again (was down)")]


def test_a_lost_pass_loses_nothing():
    """The pass that would have seen the node down never ran: the move is still seen, with the node
    back up by then only when it was down at the last pass or now."""
    _, seen = compare(None, UP, [SERVICE], [task("t1", "n2")])
    changes, _ = compare(seen, DOWN2, [SERVICE], [task("t2", "n3")])
    assert [c.type for c in changes] == ["node.down", "instance.rescheduled"]


def test_a_rolling_update_onto_another_ready_node_is_no_reschedule():
    _, seen = compare(None, UP, [SERVICE], [task("t1", "n2")])
    changes, seen = compare(seen, UP, [SERVICE], [task("t1", "n2", "shutdown", desired="shutdown"),
                                                 task("t2", "n3", created="2026-01-01T00:01:00Z")])
    assert changes == [] and seen.slots == {"svc1/1": ("t2", "n3")}


def test_other_owners_global_tasks_and_gone_slots_are_not_kept():
    other = {**task("x1", "n1"), "ServiceID": "someone-else"}
    global_task = {**task("g1", "n1"), "Slot": None}
    _, seen = compare(None, UP, [SERVICE], [task("t1", "n2"), other, global_task])
    assert seen.slots == {"svc1/1": ("t1", "n2")}
    _, seen = compare(seen, UP, [SERVICE], [])  # between the old task's end and the new one's start
    assert seen.slots == {"svc1/1": ("t1", "n2")}
    scaled = {**SERVICE, "Spec": {**SERVICE["Spec"], "Mode": {"Replicated": {"Replicas": 0}}}}
    _, gone = compare(seen, UP, [scaled], [])  # scaled to 0
    assert gone.slots == {}
    _, seen = compare(seen, UP, [], [])  # the service was removed
    assert seen.slots == {}


def test_nodes_joining_and_leaving_and_an_unreadable_memory():
    _, seen = compare(None, UP[:2], [], [])
    changes, seen = compare(seen, UP, [], [])
    assert [(c.type, c.message) for c in changes] == [("node.joined", "node swarmnode-3 joined the swarm (ready)")]
    changes, _ = compare(seen, UP[:2], [], [])
    assert [(c.type, c.message) for c in changes] == [("node.left", "node swarmnode-3 left the swarm")]
    assert Seen.loads("{not json") is None and Seen.loads(None) is None
