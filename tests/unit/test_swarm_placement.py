"""affinity evaluated against a Swarm's nodes (mariposa/swarm/placement.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mariposa.swarm.placement import Placed, Problem, eligible, matcher, place


def node(node_id: str, hostname: str, labels=None, role="worker", availability="active", state="ready") -> dict:
    return {"ID": node_id, "Spec": {"Role": role, "Availability": availability, "Labels": labels or {}},
            "Description": {"Hostname": hostname, "Platform": {"OS": "linux", "Architecture": "x86_64"}},
            "Status": {"State": state}}


NODES = [node("n1", "alpha", {"zone": "east"}, "manager"), node("n2", "beta", {"zone": "west"}),
         node("n3", "gamma", {"zone": "east"})]
RUNNING = [Placed("shop-db-0a1b2c3d", "db", "n2", {"role": "database"}),
           Placed("shop-cache-1", "cache", "n1"), Placed("shop-cache-2", "cache", "n3"),
           Placed("shop-web-11111111", "web", "n1")]


def placed(rules, replicas=2, nodes=NODES, running=RUNNING, tags=None):
    return place("web", "shop", rules, replicas, nodes, running, tags)


def test_values_are_exact_globs_or_regular_expressions():
    assert matcher("db")("db") and not matcher("db")("db2")
    assert matcher("foo*")("foobar") and not matcher("foo*")("afoo")
    assert matcher("/^fo+$/")("fooo") and not matcher("/^fo+$/")("fob")


def test_hard_rules_on_exact_node_attributes_are_swarm_constraints():
    out = placed(["node.labels.zone==east", "node.hostname!=gamma", "node.role==manager"])
    assert out.constraints == ("node.labels.zone==east", "node.hostname!=gamma", "node.role==manager")
    assert out.problems == () and out.order == "start-first" and out.max_replicas == 0
    assert out.swarm() == {"Constraints": list(out.constraints)}


def test_node_patterns_are_matched_against_the_nodes_known_now():
    out = placed(["node.hostname==/^(alpha|beta)$/"])
    assert out.constraints == ("node.id!=n3",)
    assert "nodes that join later are not eligible" in out.messages[0]
    assert placed(["node.hostname!=g*"]).constraints == ("node.id!=n3",)
    none = placed(["node.hostname==zeta*"])
    assert none.problems[0] == Problem("affinity[0]", "node.hostname==zeta*: no node matches zeta* now")


def test_soft_node_label_rules_spread_and_others_are_ignored_with_the_reason():
    out = placed(["node.labels.zone==~east", "node.hostname!=~alpha"])
    assert out.preferences == ({"Spread": {"SpreadDescriptor": "node.labels.zone"}},)
    assert out.constraints == () and out.problems == ()
    assert "cannot favour one value" in out.messages[0]
    assert out.messages[1] == ("node.hostname!=~alpha: ignored: Swarm's only preference spreads over node labels, "
                               "not node.hostname")


def test_rules_on_other_instances_are_resolved_where_they_run_now():
    assert placed(["service!=db"]).constraints == ("node.id!=n2",)
    assert placed(["role!=database"]).constraints == ("node.id!=n2",)  # a tag of instances
    assert placed(["container==shop-db-*"]).constraints == ("node.id==n2",)
    both = placed(["service==cache"])  # cache runs on n1 and n3: "next to one of them"
    assert both.constraints == ("node.id!=n2",)
    assert "evaluated at placement time" in both.messages[0]
    gone = placed(["service==search"])
    assert gone.problems == (Problem("affinity[0]", "service==search: no instance matching 'search' runs now, so "
                                                    "there is no node to be on"),)
    assert placed(["service!=search"]).constraints == ()  # nothing to avoid


def test_hard_anti_affinity_within_the_service_is_one_per_node():
    out = placed(["service!=web"], replicas=2)
    assert out.max_replicas == 1 and out.order == "start-first" and out.problems == ()
    assert out.swarm() == {"MaxReplicas": 1}
    assert placed(["container!=shop-web-*"]).max_replicas == 1
    assert placed(["tier!=front"], tags={"tier": "front"}).max_replicas == 1


def test_one_per_node_on_every_eligible_node_rolls_with_surge_0():
    """kubernetes#116891: with no node free for a surge task a start-first rollout deadlocks."""
    out = placed(["service!=web"], replicas=3)
    assert out.order == "stop-first" and out.problems == ()
    assert "surge 0" in out.messages[-1]
    drained = [*NODES[:2], node("n3", "gamma", availability="drain")]
    assert placed(["service!=web"], replicas=2, nodes=drained).order == "stop-first"
    too_many = placed(["service!=web"], replicas=4)
    assert too_many.problems == (Problem("affinity", "4 instances at most one per node need 4 eligible nodes; "
                                                     "the Swarm has 3"),)


def test_soft_rules_on_instances():
    own = placed(["service!=~web"])
    assert own.constraints == () and own.messages == ("service!=~web: Swarm spreads a service's tasks over the "
                                                      "nodes by default",)
    other = placed(["service==~db"])
    assert other.constraints == () and "ignored" in other.messages[0]


def test_a_service_kept_together_needs_a_node():
    assert placed(["service==web"]).constraints == ("node.id==n1",)  # where its one task runs
    spread = place("web", "shop", ["service==web"], 2, NODES, [Placed("a", "web", "n1"), Placed("b", "web", "n2")])
    assert "without naming it" in spread.problems[0].reason


def test_rules_that_leave_no_node_are_refused():
    out = placed(["node.labels.zone==east", "node.role==worker", "node.hostname!=gamma"])
    assert out.problems == (Problem("affinity", "no node satisfies every hard rule now: node.labels.zone==east, "
                                                "node.role==worker, node.hostname!=gamma"),)


def test_eligible_nodes_are_ready_and_active():
    assert eligible(NODES[0])
    assert not eligible(node("x", "x", availability="pause")) and not eligible(node("x", "x", state="down"))


rules = st.builds(lambda k, op, v: f"{k}{op}{v}",
                  st.sampled_from(["node.labels.zone", "node.hostname", "node.id", "service", "container", "role"]),
                  st.sampled_from(["==", "!=", "==~", "!=~"]),
                  st.sampled_from(["east", "west", "alpha", "n1", "db", "web", "cache", "*", "/a/", "shop-*"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(rules, max_size=4), st.integers(1, 5))
def test_every_rule_is_a_constraint_a_preference_a_message_or_a_problem(chosen, replicas):
    out = placed(chosen, replicas)
    for rule in chosen:  # each rule is a Swarm constraint as written, or what became of it is said
        assert rule in out.constraints or any(text.startswith(rule + ":") for text in out.messages) or any(
            p.reason.startswith(rule + ":") for p in out.problems), rule
    for constraint in out.constraints:
        assert constraint.split("=")[0].rstrip("!") in ("node.labels.zone", "node.hostname", "node.id")
    if out.max_replicas and replicas >= sum(map(eligible, NODES)):
        assert out.order == "stop-first"
    if out.order == "stop-first":
        assert out.max_replicas == 1


def test_what_depends_on_what_runs_now_is_transient_and_what_never_can_is_not():
    """A new version is refused only for what no running task or joining node can change
    (swarm/admit.py): 'no instance runs now' is transient, 'more instances than nodes' is not."""
    node = {"ID": "n1", "Description": {"Hostname": "h1"}, "Spec": {"Role": "manager", "Availability": "active"},
            "Status": {"State": "ready"}}
    waiting = place("web", "p", ("service==db",), 1, [node], [], {})
    assert [p.transient for p in waiting.problems] == [True]
    crowded = place("web", "p", ("service!=web",), 2, [node], [], {})
    assert [p.transient for p in crowded.problems] == [False]
