"""`volumes:` in compose's spelling: named volumes of the project (data that outlives every
instance, rollout and `project delete` without `--purge-volumes`), bind mounts of host paths
under the configured `bind_roots`, and tmpfs mounts.

A named volume belongs to the project's *name*, not its id, so deleting a project and adding it
again under the same name finds its data again, as compose does with its project name."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from mariposa.manifest.report import _At, _did_you_mean, _Report
from mariposa.manifest.shapes import _Shapes
from mariposa.model import MountSpec

VOLUME_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
MOUNT_TYPES = ("volume", "bind", "tmpfs")


def top_level_volumes(at: _At, report: _Report) -> dict[str, tuple[tuple[str, str], ...]]:
    """The project's declared named volumes (name -> labels). Problems go to ``report``."""
    if at.value is None:
        return {}
    if not isinstance(at.value, Mapping):
        report.wrong_type(at, "a mapping of volume names to their options (or nothing)")
        return {}
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for name, entry in at.entries():
        if not isinstance(name, str) or not VOLUME_NAME_RE.fullmatch(name):
            report.add(entry, f"invalid volume name {name!r}: letters, digits, '_', '.' and '-', at most 63",
                       on_key=True)
            continue
        labels: tuple[tuple[str, str], ...] = ()
        if isinstance(entry.value, Mapping):
            for key, option in entry.entries():
                if key == "labels":
                    labels = _labels(option, report)
                else:
                    report.add(option, f"unknown volume option {key!r}{_did_you_mean(str(key), ['labels'])}"
                               " (a volume is the project's own, kept until --purge-volumes)", on_key=True)
        elif entry.value is not None:
            report.wrong_type(entry, "a mapping of volume options (labels) or nothing")
        out[name] = labels
    return out


def _labels(at: _At, report: _Report) -> tuple[tuple[str, str], ...]:
    if isinstance(at.value, Mapping):
        return tuple((str(k), str(e.value)) for k, e in at.entries())
    if isinstance(at.value, list):
        pairs = []
        for item in at.items():
            key, sep, value = str(item.value).partition("=")
            if not sep:
                report.add(item, f"label {key!r} has no '='")
            else:
                pairs.append((key.strip(), value))
        return tuple(pairs)
    report.wrong_type(at, "a mapping of labels or a list of KEY=VALUE")
    return ()


class _VolumeChecks(_Shapes):
    def volumes(self, at: _At) -> None:
        items = self.list_of(at, "volumes (NAME:/path, /host/path:/path[:ro] or {type: ..., target: ...})")
        if items is None:
            return
        mounts: list[MountSpec] = []
        for item in items:
            mount = self.mount(item)
            if mount is None:
                continue
            if any(m.target == mount.target for m in mounts):
                self.problem(item, f"{mount.target} is mounted twice")
                continue
            mounts.append(mount)
        self.fields["volumes"] = tuple(mounts)

    def mount(self, at: _At) -> MountSpec | None:
        if isinstance(at.value, str):
            return self.short_mount(at)
        if not isinstance(at.value, Mapping):
            self.wrong_type(at, "NAME:/path, /host/path:/path[:ro] or a mapping with type and target")
            return None
        opts = self.options(at, ("type", "source", "target", "read_only", "size", "tmpfs"), "volume") or {}
        kind = self.choice(opts["type"], MOUNT_TYPES, "volume type") if "type" in opts else None
        if "type" not in opts:
            self.problem(at, f"a volume mapping needs a 'type' ({', '.join(MOUNT_TYPES)})")
        target = self.string(opts["target"]) if "target" in opts else None
        if "target" not in opts:
            self.problem(at, "a volume mapping needs a 'target' (the path inside the instance)")
        read_only = bool(self.flag(opts["read_only"])) if "read_only" in opts else False
        size = None
        size_at = opts.get("size") or (opts["tmpfs"] if "tmpfs" in opts else None)
        if "tmpfs" in opts and isinstance(opts["tmpfs"].value, Mapping):
            inner = self.options(opts["tmpfs"], ("size",), "tmpfs") or {}
            size_at = inner.get("size")
        if size_at is not None and kind == "tmpfs":
            size = self.size(size_at, "64m")
        elif size_at is not None:
            self.problem(size_at, "'size' only applies to tmpfs volumes", on_key=True)
        if kind is None or target is None:
            return None
        if not self.target_ok(opts["target"], target):
            return None
        if kind == "tmpfs":
            if "source" in opts:
                self.problem(opts["source"], "a tmpfs volume has no 'source'", on_key=True)
                return None
            return MountSpec("tmpfs", None, target, read_only, size)
        if "source" not in opts:
            self.problem(at, f"a {kind} volume needs a 'source'")
            return None
        source = self.string(opts["source"])
        if source is None:
            return None
        return self.sourced(opts["source"], kind, source, target, read_only)

    def short_mount(self, at: _At) -> MountSpec | None:
        parts = str(at.value).split(":")
        if len(parts) == 1:
            self.problem(at, f"{at.value!r}: give SOURCE:TARGET (an anonymous volume would be lost with its "
                         "instance; name it)")
            return None
        if len(parts) > 3 or not parts[0] or not parts[1]:
            self.problem(at, f"{at.value!r} must be SOURCE:TARGET or SOURCE:TARGET:ro|rw")
            return None
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            self.problem(at, f"{at.value!r}: the mode must be ro or rw, not {mode!r}")
            return None
        source, target = parts[0], parts[1]
        if not self.target_ok(at, target):
            return None
        kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        return self.sourced(at, kind, source, target, mode == "ro")

    def sourced(self, at: _At, kind: str, source: str, target: str, read_only: bool) -> MountSpec | None:
        if kind == "volume":
            if not VOLUME_NAME_RE.fullmatch(source):
                self.problem(at, f"invalid volume name {source!r}: letters, digits, '_', '.' and '-', at most 63")
                return None
            declared = self.rules.volumes
            if declared is not None and source not in declared:
                known = ", ".join(declared) or "none"
                hint = _did_you_mean(source, list(declared))
                self.problem(at, f"unknown volume {source!r}: the top-level 'volumes:' declares {known}{hint}")
                return None
            labels = (declared or {}).get(source, ())
            return MountSpec("volume", source, target, read_only, labels=labels)
        path = self.host_path(at, source)
        return None if path is None else MountSpec("bind", path, target, read_only)

    def host_path(self, at: _At, source: str) -> str | None:
        if source.startswith("~"):
            self.problem(at, f"{source!r}: '~' is the daemon's home, not yours; give an absolute path")
            return None
        if not source.startswith("/"):
            base = self.rules.base_dir
            if base is None:
                self.problem(at, f"relative path {source!r} needs the manifest's directory: give the manifest "
                             "through the local mariposa CLI (a remote daemon's host has not your directory) "
                             "or the watched directory, or give an absolute path")
                return None
            source = os.path.join(base, source)
        path = os.path.normpath(source)
        roots = self.rules.bind_roots
        if roots is not None and not any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots):
            self.problem(at, f"bind mount {path} is outside bind_roots ({', '.join(roots)}); "
                         "add a root to bind_roots in mariposa.toml to allow it")
            return None
        return path

    def target_ok(self, at: _At, target: str) -> bool:
        if not target.startswith("/"):
            self.problem(at, f"the target {target!r} must be an absolute path inside the instance")
            return False
        return True

