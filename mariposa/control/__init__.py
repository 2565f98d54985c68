"""The control layer: every operation of Mariposa once, with no transport in it.

Front ends (the control socket's HTTP routes, the watched manifest directory, later a TLS API
and the dashboard) turn their input into plain arguments and a ``Caller`` and call one method
here. Each method authorizes the caller first (``authorize``), returns plain data that has
passed the one redaction point (``redact``), and lets every exception out as one
``MariposaError`` with an HTTP status and a CLI exit code (``mariposa.errors.translate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mariposa.control.access import Access
from mariposa.control.authorize import AccessPolicy as AccessPolicy
from mariposa.control.authorize import AllowAll as AllowAll
from mariposa.control.authorize import Policy as Policy
from mariposa.control.authorize import authorize as authorize
from mariposa.control.caller import WATCHER as WATCHER
from mariposa.control.caller import Caller as Caller
from mariposa.control.dashboard import Dashboard
from mariposa.control.events import Events
from mariposa.control.exports import Exports
from mariposa.control.instances import Instances
from mariposa.control.meta import Meta
from mariposa.control.metrics import Metrics
from mariposa.control.projects import Projects
from mariposa.control.queue import Queue
from mariposa.control.redact import redact as redact
from mariposa.control.registry import Registry
from mariposa.control.runs import Runs
from mariposa.control.secrets import Secrets
from mariposa.control.services import Services
from mariposa.control.system import System
from mariposa.control.tokens import Tokens
from mariposa.control.triggers import Triggers
from mariposa.control.volumes import Volumes
from mariposa.control.webhooks import Webhooks

if TYPE_CHECKING:
    from mariposa.context import Context
    from mariposa.queue.executor import Executor


class Control:
    """All areas over one daemon context, under one authorization policy."""

    def __init__(self, ctx: Context, policy: Policy, executor: Executor | None = None) -> None:
        self.ctx = ctx
        self.policy = policy
        self.system = System(ctx, policy, executor)
        self.projects = Projects(ctx, policy, executor)
        self.exports = Exports(ctx, policy, executor)
        self.services = Services(ctx, policy, executor)
        self.instances = Instances(ctx, policy, executor)
        self.queue = Queue(ctx, policy, executor)
        self.events = Events(ctx, policy, executor)
        self.volumes = Volumes(ctx, policy, executor)
        self.registry = Registry(ctx, policy, executor)
        self.secrets = Secrets(ctx, policy, executor)
        self.meta = Meta(ctx, policy, executor)
        self.runs = Runs(ctx, policy, executor)
        self.triggers = Triggers(ctx, policy, executor)
        self.webhooks = Webhooks(ctx, policy, executor)
        self.metrics = Metrics(ctx, policy, executor)
        self.access = Access(ctx, policy, executor)
        self.tokens = Tokens(ctx, policy, executor)
        self.dashboard = Dashboard(ctx, policy, executor)
