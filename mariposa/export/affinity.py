"""Affinity rules (rfd36 services/manifest.md, DOCKER-630), sorted by what they are about.

A rule is ``<key><op><value>``: ``==``/``!=`` hard, ``==~``/``!=~`` soft. What a cluster engine
can do with it depends on what it names:

- ``node.*`` keys (``node.labels.zone==a``, ``node.hostname!=h``) name nodes: placement
  constraints (hard) or preferences (soft) wherever the target has them;
- rules on instances (``container!=foo*``), services (``service!=db``) or tags (``role!=db``)
  name other workloads. Only a scheduler that sees them at placement time honours those; a static
  file can say it only for its own service's instances ("one per node").

``classify`` answers once, and each target turns the answer into its own words.
"""

from __future__ import annotations

import fnmatch
import re

import attrs

from mariposa.manifest.report import AFFINITY_RE
from mariposa.model import ServiceSpec

NODE = "node"  # about nodes: node.labels.X, node.hostname, node.id, node.role, node.platform.*
OWN = "own"  # about the service's own instances (and no other service's)
OTHERS = "others"  # about other services' instances


@attrs.frozen
class Rule:
    text: str
    key: str
    op: str
    value: str
    kind: str  # NODE | OWN | OTHERS
    also_own: bool = False  # an OTHERS rule that matches the service's own instances too

    @property
    def hard(self) -> bool:
        return not self.op.endswith("~")

    @property
    def negated(self) -> bool:
        return self.op.startswith("!")

    @property
    def plain_value(self) -> bool:
        """An exact value (no glob, no /regex/), which label selectors can name."""
        return not any(c in self.value for c in "*?[") and not self.value.startswith("/")


def _matches(pattern: str, candidates: list[str]) -> bool:
    if len(pattern) > 1 and pattern.startswith("/") and pattern.endswith("/"):
        try:
            expr = re.compile(pattern[1:-1])
        except re.error:
            return False
        return any(expr.search(c) for c in candidates)
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)


def classify(text: str, svc: ServiceSpec, project: str, others: list[ServiceSpec]) -> Rule:
    m = AFFINITY_RE.match(text.strip())
    if m is None:  # the parser let it through, so it has the shape; keep the text anyway
        return Rule(text, text, "==", "", OTHERS)
    key, op, value = m["key"].strip(), m["op"], m["value"].strip()
    if key.startswith("node."):
        return Rule(text, key, op, value, NODE)

    def names(s: ServiceSpec) -> list[str]:
        return [s.name, f"{s.name}-1", f"{project}-{s.name}-0a1b2c3d"]

    def hits(s: ServiceSpec) -> bool:
        if key in ("container", "instance"):
            return _matches(value, names(s))
        if key == "service":
            return _matches(value, [s.name])
        return any(k == key and _matches(value, [v]) for k, v in s.tags)

    own = hits(svc)
    other = any(hits(s) for s in others if s.name != svc.name)
    if own and not other:
        return Rule(text, key, op, value, OWN)
    return Rule(text, key, op, value, OTHERS, also_own=own)


def rules_of(svc: ServiceSpec, project: str, services: tuple[ServiceSpec, ...]) -> list[Rule]:
    return [classify(t, svc, project, list(services)) for t in svc.affinity]


def swarm_constraint(rule: Rule) -> str:
    """A node rule in Swarm's constraint syntax (``node.labels.zone==a``)."""
    return f"{rule.key}{rule.op.rstrip('~')}{rule.value}"
