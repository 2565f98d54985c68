"""How Mariposa supervises a service: health checks, restart policy, stop options and the
rollout timings. None of these shape an instance, so none of them changes the spec hash."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mariposa.manifest.report import HEALTHCHECK_TYPES, PRESERVE_STOPPED, RESTART_POLICIES, _At, _did_you_mean, _is_int
from mariposa.manifest.shapes import MAX_SECONDS, _Shapes, _shown
from mariposa.model import HealthCheck

# Every integer has an upper bound: past it a value is a typo, and past 4,300 digits no JSON
# answer about the spec could even be written.
MAX_RETRIES = 10_000


class _SupervisionChecks(_Shapes):
    def healthchecks(self, at: _At) -> None:
        checks = self.list_of(at, "health check mappings")
        if checks is None:
            return
        built = []
        for check in checks:
            if not isinstance(check.value, Mapping):
                self.wrong_type(check, "a health check mapping")
                continue
            hc = self.healthcheck(check)
            if hc is not None:
                built.append(hc)
        self.fields["healthchecks"] = tuple(built)

    def status_range(self, at: _At) -> tuple[int, int] | None:
        """200, "200-299" or "2xx"."""
        value = at.value
        if _is_int(value):
            code = int(value)
            lo, hi = code, code
        elif isinstance(value, str) and re.fullmatch(r"\s*[1-5]xx\s*", value):
            lo = int(value.strip()[0]) * 100
            hi = lo + 99
        elif isinstance(value, str) and re.fullmatch(r"\s*\d{3}\s*-\s*\d{3}\s*", value):
            lo, hi = (int(v) for v in value.split("-"))
        else:
            self.wrong_type(at, "a status code, a range like \"200-399\", or \"2xx\"")
            return None
        if not (100 <= lo <= hi <= 599):
            self.problem(at, f"status range {_shown(lo)}-{_shown(hi)} is not within 100-599, low to high")
            return None
        return (lo, hi)

    def healthcheck(self, at: _At) -> HealthCheck | None:
        known = ("type", "network", "port", "path", "method", "status", "body", "tls_verify", "poll",
                 "unhealthy_poll", "timeout", "retries", "grace", "command", "user")
        opts = self.options(at, known, "health check") or {}
        failed_before = self.failed
        self.failed = False
        values: dict[str, Any] = {}
        kind = None
        if "type" in opts:
            kind = self.choice(opts["type"], HEALTHCHECK_TYPES, "health check type")
        else:
            self.problem(at, f"a health check needs a 'type' ({', '.join(HEALTHCHECK_TYPES)})")
        values["type"] = kind
        if "port" in opts:
            values["port"] = self.integer(opts["port"], 1, 65535)
        elif kind == "tcp":
            self.problem(at, "a tcp health check needs a 'port'")
        for name in ("poll", "unhealthy_poll", "timeout", "grace"):
            if name in opts:
                values[name] = self.seconds(opts[name], positive=name != "grace")
        if "retries" in opts:
            values["retries"] = self.integer(opts["retries"], 0, MAX_RETRIES)
        for name in ("user", "body"):
            if name in opts:
                values[name] = self.string(opts[name])
        if "network" in opts:
            self.problem(opts["network"], "'network' is not supported: checks reach an instance on its project's "
                         "network (or the host's, with network_mode: host)", on_key=True)
        if "user" in opts and kind != "command":
            self.problem(opts["user"], "'user' only applies to command checks", on_key=True)
        if "path" in opts:
            path = self.string(opts["path"])
            if path is not None and not self.template(opts["path"], path, fixed=False):
                path = None
            elif path is not None and not path.startswith("/"):
                self.problem(opts["path"], f"path must start with '/', got {path!r}")
            values["path"] = path
        if "method" in opts:
            values["method"] = self.choice(opts["method"], ("GET", "HEAD", "POST", "OPTIONS"), "HTTP method")
        if "status" in opts:
            values["status"] = self.status_range(opts["status"])
        if "tls_verify" in opts:
            if isinstance(opts["tls_verify"].value, bool):
                values["tls_verify"] = opts["tls_verify"].value
            else:
                self.wrong_type(opts["tls_verify"], "true or false")
        if "command" in opts:
            values["command"] = self.argv(opts["command"], fixed=False)
        elif kind == "command":
            self.problem(at, "a command health check needs a 'command'")
        if kind in ("tcp", "command"):
            for name in ("path", "method", "status", "body", "tls_verify"):
                if name in opts:
                    self.problem(opts[name], f"{name!r} only applies to http and https checks", on_key=True)
        ok = not self.failed
        self.failed = failed_before or self.failed
        if not ok:
            return None
        return HealthCheck(**{k: v for k, v in values.items() if v is not None})

    def restart(self, at: _At) -> None:
        if at.value is False:  # YAML 1.1 reads a bare `no` as false
            policy = "no"
        elif isinstance(at.value, str):
            policy = at.value.strip()
        else:
            self.wrong_type(at, f"one of {', '.join(RESTART_POLICIES)}")
            return
        name, colon, retries = policy.partition(":")
        if name not in RESTART_POLICIES or (colon and name != "on-failure"):
            self.problem(
                at,
                f"unknown restart policy {policy!r}{_did_you_mean(name, RESTART_POLICIES)}"
                f" (expected one of {', '.join(RESTART_POLICIES)}, or on-failure:N)",
            )
        elif colon and not (retries.isascii() and retries.isdigit() and len(retries) <= 9):
            self.problem(
                at,
                f"invalid restart policy {policy!r}: the retry count after ':' must be"
                " an integer 0 or more",
            )
        else:
            self.fields["restart"] = f"{name}:{int(retries)}" if colon else name

    def stop(self, at: _At) -> None:
        opts = self.options(at, ("timeout", "preservestopped"), "stop")
        if opts is None:
            return
        if "timeout" in opts:
            timeout = self.integer(opts["timeout"], -MAX_SECONDS, MAX_SECONDS)  # negative: wait forever
            if timeout is not None:
                self.fields["stop_timeout"] = timeout
        if "preservestopped" in opts:
            value = self.choice(opts["preservestopped"], PRESERVE_STOPPED, "preservestopped value")
            if value is not None:
                self.fields["preserve_stopped"] = value

    def min_healthy_time(self, at: _At) -> None:
        value = self.seconds(at, positive=False)
        if value is not None:
            self.fields["min_healthy_time"] = value

    def secret_env(self, at: _At) -> None:
        """Whether environment may name secrets ({{ .secret.NAME }}): a deliberate opt-in, as such
        values are visible to anyone who can inspect the container (files are not)."""
        value = self.flag(at)
        if value is not None:
            self.fields["secret_env"] = value

    def on_meta_change(self, at: _At) -> None:
        """What a meta change does to instances whose environment, command, entrypoint or tags
        use the key (or a secret change, to those whose environment names the secret): a rolling
        new version (rolling), or nothing until the next reprovision."""
        value = self.choice(at, ("rolling", "none"), "on_meta_change")
        if value is not None:
            self.fields["on_meta_change"] = value

    def progress_deadline(self, at: _At) -> None:
        value = self.seconds(at, positive=True)
        if value is not None:
            self.fields["progress_deadline"] = value

