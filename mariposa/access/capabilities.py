"""What may be allowed: the capabilities, the control actions that need each, and the built-in
roles, in one table the docs list and ``role define`` checks against.

A capability is coarser than an action (``service:lifecycle`` covers start, stop, reprovision
and thaw) so a custom role stays a short list, after Nomad's ACL capabilities. Two are never
given by a wildcard, only by name: ``secret:reveal`` (a secret's value, the one thing Kubernetes
gives away with pod creation) and ``exec`` (a shell in an instance sees its secrets too).
"""

from __future__ import annotations

from collections.abc import Iterable

CAPABILITIES: dict[str, str] = {
    "project:read": "see projects, services, instances, versions, tasks, events, runs and metrics",
    "project:write": "add, update, copy and delete projects and services",
    "project:move": "move a project to another organisation (admin of both; a fresh token or root)",
    "service:scale": "change a service's scale",
    "service:lifecycle": "start, stop, reprovision and thaw services and projects; remove an instance",
    "service:revert": "set a project or service back to an earlier version",
    "run:create": "start and stop runs of scheduled and event services",
    "queue:stop": "stop a queued or running task",
    "meta:read": "read meta",
    "meta:write": "set, remove, increment and import meta",
    "secret:list": "list secret names (never their values)",
    "secret:write": "set and remove secrets",
    "secret:reveal": "read a secret's value or a trigger's token (named only, never by a wildcard)",
    "logs:read": "read instance and run logs",
    "exec": "run a command in an instance (named only, never by a wildcard)",
    "volume:write": "remove a project's volumes",
    "trigger:rotate": "give a trigger a new token",
    "webhook:redeliver": "send a webhook delivery again",
    "audit:read": "read the audit trail",
    "user:admin": "users, organisations, roles, grants, denies and other users' tokens",
    "registry:admin": "log the host in to and out of image registries",
    "host:admin": "host-wide settings: rotate the secrets key",
}

NAMED_ONLY = frozenset({"secret:reveal", "exec"})

# Every control action (control/*.py ``@operation``) and the capability it needs. An action not
# here is refused to everyone but root and the daemon itself: a new operation fails closed until
# it is given a line.
ACTIONS: dict[str, str] = {
    # reading
    **{a: "project:read" for a in (
        "project.list", "project.get", "project.versions", "project.version", "project.diff", "project.export",
        "project.networks", "project.instances", "project.health", "service.list", "service.get",
        "service.versions", "service.version", "service.instances", "service.health", "service.runs", "service.next",
        "service.stats", "instance.get", "queue.list", "queue.get", "queue.follow", "events.list",
        "events.follow", "run.get", "volume.list", "webhook.deliveries", "metrics.top", "trigger.list",
        "registry.list", "metrics.scrape", "access.who-can", "org.list", "role.list", "role.get")},
    # changing what runs
    "service.scale": "service:scale",
    **{a: "service:lifecycle" for a in (
        "project.start", "project.stop", "service.start", "service.stop", "service.reprovision",
        "service.thaw", "instance.remove")},
    "project.revert": "service:revert",
    "service.revert": "service:revert",
    "service.run": "run:create",
    "run.stop": "run:create",
    "queue.stop": "queue:stop",
    # changing what should run
    **{a: "project:write" for a in (
        "project.add", "project.update", "project.delete", "project.copy", "service.add", "service.update",
        "service.delete")},
    "project.move": "project:move",
    "meta.list": "meta:read",
    "meta.get": "meta:read",
    **{a: "meta:write" for a in ("meta.set", "meta.remove", "meta.increment", "meta.import")},
    "secret.list": "secret:list",
    "secret.set": "secret:write",
    "secret.remove": "secret:write",
    "secret.reveal": "secret:reveal",
    "trigger.reveal": "secret:reveal",
    "secret.rotate-key": "host:admin",
    "service.logs": "logs:read",
    "instance.logs": "logs:read",
    "run.logs": "logs:read",
    "instance.exec": "exec",
    "volume.remove": "volume:write",
    "trigger.rotate": "trigger:rotate",
    "webhook.redeliver": "webhook:redeliver",
    "audit.list": "audit:read",
    "registry.login": "registry:admin",
    "registry.logout": "registry:admin",
    # who may do what
    **{a: "user:admin" for a in (
        "user.add", "user.list", "user.get", "user.remove", "org.add", "org.remove", "role.define",
        "role.remove", "access.grant", "access.revoke", "access.deny", "token.create", "token.list",
        "token.revoke", "access.can-i-as")},
}

# What any known user may do, whatever their bindings: ask who they are and what they may do,
# and look after their own tokens (token.create and token.revoke for oneself are decided by the
# area, which asks for user:admin only when the token is somebody else's).
OPEN_ACTIONS = frozenset({"system.ping", "access.whoami", "access.can-i", "token.list-own", "token.create-own",
                          "token.revoke-own", "ui.signin"})

_VIEWER = ("project:read", "meta:read", "secret:list", "logs:read")
_OPERATOR = (*_VIEWER, "service:scale", "service:lifecycle", "service:revert", "run:create", "queue:stop",
             "webhook:redeliver")
_DEVELOPER = (*_OPERATOR, "project:write", "meta:write", "secret:write", "volume:write", "trigger:rotate")
_ADMIN = (*_DEVELOPER, "user:admin", "secret:reveal", "project:move", "audit:read", "registry:admin", "host:admin")

BUILTIN_ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "viewer": ("read everything except secret values", _VIEWER),
    "operator": ("viewer, and scale, start, stop, reprovision, revert, run, thaw and queue stop", _OPERATOR),
    "developer": ("operator, and change projects, meta and secrets", _DEVELOPER),
    "admin": ("developer, and users, roles, tokens, secret reveal and project move", _ADMIN),
}


def expand(patterns: Iterable[str]) -> frozenset[str]:
    """The capabilities a role's list gives: names as they are; ``*`` and ``area:*`` every
    capability they match except the named-only ones. An unknown name raises ValueError."""
    out: set[str] = set()
    for pattern in patterns:
        if pattern == "*" or pattern.endswith(":*"):
            prefix = "" if pattern == "*" else pattern[:-1]
            matched = {c for c in CAPABILITIES if c.startswith(prefix) and c not in NAMED_ONLY}
            if not matched and pattern != "*":
                raise ValueError(f"'{pattern}' matches no capability")
            out |= matched
        elif pattern in CAPABILITIES:
            out.add(pattern)
        else:
            raise ValueError(f"unknown capability '{pattern}' (mariposa role list --capabilities shows them)")
    return frozenset(out)


def matches(pattern: str, capability: str) -> bool:
    """Whether a deny's capability (a name, ``area:*`` or ``*``) covers ``capability``. A deny's
    wildcard covers the named-only ones too: a deny is never narrower than it reads."""
    if pattern == "*":
        return True
    if pattern.endswith(":*"):
        return capability.startswith(pattern[:-1])
    return pattern == capability


def markdown() -> str:
    """The README's table of capabilities (between its ``<!-- capabilities -->`` marks), made from
    the tables above; a unit test keeps the README equal to it: ``python -m
    mariposa.access.capabilities`` prints it."""
    by_capability: dict[str, list[str]] = {}
    for action, capability in ACTIONS.items():
        by_capability.setdefault(capability, []).append(action)
    lines = ["#### Capabilities", "",
             "What a custom role (`mariposa role define FILE`) and a deny (`mariposa deny USER CAPABILITY`) name.",
             "`*` and `area:*` in a role give every capability they match except the two marked named only;",
             "in a deny they match those too. Generated from `mariposa/access/capabilities.py`.", "",
             "| capability | allows | actions | " + " | ".join(BUILTIN_ROLES) + " |",
             "|---|---|---|" + "---|" * len(BUILTIN_ROLES)]
    for capability, text in CAPABILITIES.items():
        named = " (named only)" if capability in NAMED_ONLY else ""
        actions = ", ".join(f"`{a}`" for a in sorted(by_capability.get(capability, ())))
        roles = " | ".join("yes" if capability in caps else "" for _, caps in BUILTIN_ROLES.values())
        lines.append(f"| `{capability}`{named} | {text} | {actions} | {roles} |")
    lines += ["", "Open to every user, whatever their bindings: " + ", ".join(f"`{a}`" for a in sorted(OPEN_ACTIONS))
              + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
