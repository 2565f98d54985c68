"""A service's ``affinity`` rules evaluated against a Swarm's nodes: Swarm placement constraints
and preferences, or the reason a rule cannot be honoured there.

The rules are RFD 36's (``<key><op><value>``, DOCKER-630): ``==`` / ``!=`` are hard (the
instance must / must not be on the same node), ``==~`` / ``!=~`` are soft. A value is an exact
string, a ``*`` glob, or a ``/regular expression/``. Keys:

* ``node.id``, ``node.hostname``, ``node.role``, ``node.platform.os|arch``, ``node.labels.K``,
  ``engine.labels.K``: the node itself. A hard rule with an exact value is passed to Swarm as is
  (Swarm evaluates it, for nodes that join later too); a glob or regex is matched against the
  nodes known now and becomes ``node.id`` constraints. A soft rule on a node label becomes a
  Swarm preference, ``Spread`` over that label: the only preference Swarm has, it spreads tasks
  evenly over the label's values and cannot favour one value, so this is an approximation and
  the message says so; other soft node rules are ignored, with the reason.
* ``container`` / ``instance`` (instance names), ``service`` (service names), any other key (a
  tag of instances): other instances. These are resolved against where tasks run **now**
  (``running``) into ``node.id==X`` / ``node.id!=X``; they are evaluated at placement time,
  so a task placed later elsewhere does not move this one (as with DOCKER-630 on Triton).
  A hard ``!=`` that names the service's own instances means "one per node": ``MaxReplicas: 1``.
  Soft rules on instances are ignored with the reason (Swarm has no soft co-location), except a
  soft ``!=~`` on the service's own instances, which is what Swarm's scheduler does by default
  (it spreads a service's tasks over the nodes).

When a hard rule leaves no node free for a surge task (``MaxReplicas: 1`` and as many replicas as
eligible nodes), a start-first update would deadlock (kubernetes#116891): the update order
becomes stop-first, and ``messages`` says so for the task to show.

Pure: no I/O. ``nodes`` is ``GET /nodes`` as the Engine answers it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from mariposa.manifest.report import AFFINITY_RE

NODE_KEYS = ("node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch")
INSTANCE_KEYS = ("container", "instance")


@attrs.frozen
class Placed:
    """One task that runs now: its instance name, service, node and tags."""

    name: str
    service: str
    node_id: str
    tags: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Problem:
    field: str
    reason: str
    # True when it depends on what runs now (no instance to be next to yet, no node matching): a
    # new version is not refused for it (swarm/admit.py); its converge task fails saying why, and
    # is retried with the back-off, until what it needs runs
    transient: bool = attrs.field(default=False, eq=False)


@attrs.frozen
class Placement:
    constraints: tuple[str, ...] = ()
    preferences: tuple[dict[str, Any], ...] = ()
    max_replicas: int = 0  # 0: no limit per node
    order: str = "start-first"  # the update order a rollout can use: start-first | stop-first
    problems: tuple[Problem, ...] = ()  # rules refused: the version is not made
    messages: tuple[str, ...] = ()  # what became of the rules, for the task to show

    def swarm(self) -> dict[str, Any]:
        """``TaskTemplate.Placement``."""
        out: dict[str, Any] = {}
        if self.constraints:
            out["Constraints"] = list(self.constraints)
        if self.preferences:
            out["Preferences"] = list(self.preferences)
        if self.max_replicas:
            out["MaxReplicas"] = self.max_replicas
        return out


def matcher(value: str):
    """An exact string, a ``*`` glob or a ``/regex/``, as a predicate on strings."""
    if len(value) > 1 and value.startswith("/") and value.endswith("/"):
        pattern = re.compile(value[1:-1])
        return lambda s: pattern.search(s) is not None
    if "*" in value:
        return lambda s: fnmatch.fnmatchcase(s, value)
    return lambda s: s == value


def _is_exact(value: str) -> bool:
    return "*" not in value and not (len(value) > 1 and value.startswith("/") and value.endswith("/"))


def node_attribute(node: Mapping[str, Any], key: str) -> str | None:
    """A node's value for a constraint key, as Swarm reads it (None: the node has none)."""
    spec = node.get("Spec") or {}
    description = node.get("Description") or {}
    if key == "node.id":
        return node.get("ID")
    if key == "node.hostname":
        return description.get("Hostname")
    if key == "node.role":
        return spec.get("Role")
    if key == "node.platform.os":
        return (description.get("Platform") or {}).get("OS")
    if key == "node.platform.arch":
        return (description.get("Platform") or {}).get("Architecture")
    if key.startswith("node.labels."):
        return (spec.get("Labels") or {}).get(key.removeprefix("node.labels."))
    if key.startswith("engine.labels."):
        return ((description.get("Engine") or {}).get("Labels") or {}).get(key.removeprefix("engine.labels."))
    return None


def _is_node_key(key: str) -> bool:
    return key in NODE_KEYS or key.startswith(("node.labels.", "engine.labels."))


def eligible(node: Mapping[str, Any]) -> bool:
    """A node that takes new tasks: ready and active (not paused, not drained)."""
    return ((node.get("Status") or {}).get("State") == "ready"
            and (node.get("Spec") or {}).get("Availability") == "active")


def _satisfies(node: Mapping[str, Any], constraint: str) -> bool:
    key, op, value = re.split(r"(==|!=)", constraint, maxsplit=1)
    have = node_attribute(node, key.strip())
    same = have is not None and have == value.strip()
    return same if op == "==" else not same


def place(
    service: str, project_name: str, affinity: Iterable[str], replicas: int,
    nodes: Sequence[Mapping[str, Any]], running: Iterable[Placed] = (), own_tags: Mapping[str, str] | None = None,
) -> Placement:
    """The placement of service ``service`` (``replicas`` tasks, tags ``own_tags``) under its
    ``affinity`` rules, given the Swarm's ``nodes`` and the tasks ``running`` now. Problems
    name the rule as ``affinity[i]``."""
    running = list(running)
    own_tags = own_tags or {}
    constraints: list[str] = []
    preferences: list[dict[str, Any]] = []
    problems: list[Problem] = []
    messages: list[str] = []
    one_per_node = False

    def add(constraint: str) -> None:
        if constraint not in constraints:
            constraints.append(constraint)

    for index, rule in enumerate(affinity):
        field = f"affinity[{index}]"
        match = AFFINITY_RE.match(rule.strip())
        if not match:
            problems.append(Problem(field, f"invalid affinity rule {rule!r}"))
            continue
        key, op, value = match["key"].strip(), match["op"], match["value"].strip()
        hard = not op.endswith("~")
        same = op.startswith("==")
        test = matcher(value)
        if _is_node_key(key):
            if not hard:
                if key.startswith("node.labels."):
                    preferences.append({"Spread": {"SpreadDescriptor": key}})
                    messages.append(f"{rule}: Swarm spreads tasks evenly over the values of {key} (its only "
                                    "kind of preference); it cannot favour one value")
                else:
                    messages.append(f"{rule}: ignored: Swarm's only preference spreads over node labels, "
                                    f"not {key}")
                continue
            if _is_exact(value):
                add(f"{key}{op}{value}")
                continue
            matching = [n["ID"] for n in nodes if (v := node_attribute(n, key)) is not None and test(v)]
            if same:
                for node in nodes:
                    if node["ID"] not in matching:
                        add(f"node.id!={node['ID']}")
                if not matching:
                    problems.append(Problem(field, f"{rule}: no node matches {value} now", transient=True))
            else:
                for node_id in matching:
                    add(f"node.id!={node_id}")
            messages.append(f"{rule}: matched against the {len(nodes)} nodes known now (a pattern is no "
                            "Swarm constraint); nodes that join later are not eligible" if same else
                            f"{rule}: matched against the {len(nodes)} nodes known now (a pattern is no Swarm "
                            "constraint)")
            continue
        # rules about other instances: by name, service or tag
        if key in INSTANCE_KEYS:
            own = test(f"{project_name}-{service}-") or any(test(t.name) for t in running if t.service == service)
            hits = [t for t in running if t.service != service and test(t.name)]
        elif key == "service":
            own = test(service)
            hits = [t for t in running if t.service != service and test(t.service)]
        else:
            own = key in own_tags and test(own_tags[key])
            hits = [t for t in running if t.service != service and key in t.tags and test(t.tags[key])]
        where = sorted({t.node_id for t in hits})
        if not hard:
            if own and not same and not hits:
                messages.append(f"{rule}: Swarm spreads a service's tasks over the nodes by default")
            else:
                messages.append(f"{rule}: ignored: Swarm has no soft placement next to or away from other "
                                "tasks")
            continue
        if own:
            if same:
                own_nodes = sorted({t.node_id for t in running if t.service == service})
                if len(own_nodes) == 1 and not hits:
                    add(f"node.id=={own_nodes[0]}")
                    messages.append(f"{rule}: the service's instances share node {own_nodes[0]}, where they run now")
                else:
                    problems.append(Problem(field, f"{rule}: Swarm cannot keep a service's replicas together "
                                                   "on one node without naming it; use node.hostname==HOST"))
                continue
            one_per_node = True
            messages.append(f"{rule}: at most one instance of {service} per node (MaxReplicas 1)")
        if same:
            if not hits:
                if not own:
                    problems.append(Problem(field, f"{rule}: no instance matching {value!r} runs now, so there is "
                                                   "no node to be on", transient=True))
                continue
            if len(where) == 1:
                add(f"node.id=={where[0]}")
            else:
                for node in nodes:
                    if node["ID"] not in where:
                        add(f"node.id!={node['ID']}")
            messages.append(f"{rule}: on the node(s) where the matching instances run now ({', '.join(where)}); "
                            "evaluated at placement time")
        elif hits:
            for node_id in where:
                add(f"node.id!={node_id}")
            messages.append(f"{rule}: away from node(s) {', '.join(where)}, where the matching instances run now; "
                            "evaluated at placement time")
        elif not own:
            messages.append(f"{rule}: no instance matching {value!r} runs now: nothing to keep away from "
                            "(evaluated at placement time)")
    usable = [n for n in nodes if eligible(n) and all(_satisfies(n, c) for c in constraints)]
    order = "start-first"
    if one_per_node:
        if replicas > len(usable):
            problems.append(Problem("affinity", f"{replicas} instances at most one per node need {replicas} "
                                                f"eligible nodes; the Swarm has {len(usable)}"))
        if replicas >= len(usable):
            order = "stop-first"
            messages.append(f"one instance per node and {replicas} instances on {len(usable)} eligible nodes leave "
                            "no node for a surge instance: the rollout stops an old instance before it starts "
                            "its replacement (surge 0)")
    elif nodes and not usable and constraints:
        problems.append(Problem("affinity", "no node satisfies every hard rule now: " + ", ".join(constraints),
                                transient=True))
    return Placement(tuple(constraints), tuple(preferences), 1 if one_per_node else 0, order, tuple(problems),
                     tuple(messages))
