"""`mariposa doctor`: what this host has and lacks for Mariposa, each with the fix.

It reads the host directly (no daemon needed), so it also answers "why won't the daemon start".
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import trio

from mariposa import config as configuration


def _check(name: str, status: str, detail: str, fix: str = "") -> dict:
    return {"check": name, "status": status, "detail": detail, "fix": fix}


def _docker(host: str | None) -> dict:
    target = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    path = target.removeprefix("unix://")
    if not target.startswith(("unix://", "/")):
        return _check("docker", "warn", f"{target}: only unix sockets are checked here")
    try:
        transport = httpx.HTTPTransport(uds=path, verify=False)  # no TLS on a unix socket
        with httpx.Client(transport=transport, base_url="http://docker", timeout=5) as client:
            version = client.get("/version").json()
        return _check("docker", "ok",
                      f"Docker Engine {version.get('Version')} (API {version.get('ApiVersion')}) at {path}")
    except (httpx.HTTPError, OSError, ValueError) as exc:
        fix = ("apt-get install docker.io && systemctl start docker" if not shutil.which("dockerd")
               else "start dockerd (systemctl start docker)")
        return _check("docker", "fail", f"no answer at {path}: {exc.__class__.__name__}", fix)


def swarm_checks(info: dict | None, nodes: list[dict] | None, cluster: str, error: str = "") -> list[dict]:
    """The Swarm section: whether the engine is in a swarm and manages it, then one line per node
    (hostname, role, availability, state, manager reachability, engine version, labels). Pure:
    ``info`` is ``GET /info``, ``nodes`` ``GET /nodes`` (None: not asked, or refused). With
    ``cluster = "swarm"`` an engine that is no manager fails: the daemon would refuse to start."""
    from mariposa.swarm import SWARM_INIT_FIX

    needed = cluster == "swarm"
    if info is None:
        return [_check("swarm", "fail" if needed else "warn", f"not checked: {error or 'no engine'}",
                       "start dockerd (systemctl start docker)" if needed else "")]
    swarm = info.get("Swarm") or {}
    state = swarm.get("LocalNodeState") or "inactive"
    if state != "active":
        return [_check("swarm", "fail" if needed else "ok",
                       f"the engine is not in a swarm (LocalNodeState {state})"
                       + (": cluster = \"swarm\" needs a manager" if needed else "; cluster = \"none\": not needed"),
                       SWARM_INIT_FIX if needed else "")]
    if not swarm.get("ControlAvailable"):
        managers = ", ".join(m.get("Addr", "?") for m in swarm.get("RemoteManagers") or ())
        return [_check("swarm", "fail" if needed else "warn",
                       f"the engine is a worker of a swarm (managers: {managers}); Mariposa needs a manager's API",
                       "point docker_host at a manager, or docker node promote this node" if needed else "")]
    cluster_id = str((swarm.get("Cluster") or {}).get("ID", ""))[:12]
    out = [_check("swarm", "ok", f"manager of swarm {cluster_id}: {swarm.get('Nodes')} nodes, "
                                 f"{swarm.get('Managers')} managers; cluster = \"{cluster}\"")]
    for node in sorted(nodes or (), key=lambda n: (n.get("Description") or {}).get("Hostname", "")):
        spec, status = node.get("Spec") or {}, node.get("Status") or {}
        manager = node.get("ManagerStatus") or {}
        description = node.get("Description") or {}
        role = spec.get("Role", "?")
        if manager:
            role += " (leader)" if manager.get("Leader") else f" ({manager.get('Reachability', '?')})"
        node_labels = ",".join(f"{k}={v}" for k, v in sorted((spec.get("Labels") or {}).items())) or "no labels"
        detail = (f"{description.get('Hostname', '?')} {str(node.get('ID', ''))[:12]}: {role}, "
                  f"{spec.get('Availability', '?')}, {status.get('State', '?')}, engine "
                  f"{(description.get('Engine') or {}).get('EngineVersion', '?')}, {node_labels}")
        healthy = status.get("State") == "ready" and manager.get("Reachability", "reachable") == "reachable"
        out.append(_check("swarm node", "ok" if healthy else "warn", detail,
                          "" if healthy else "docker node inspect " + str(node.get("ID", ""))[:12]))
    return out


def _swarm(host: str | None, cluster: str) -> list[dict]:
    target = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    path = target.removeprefix("unix://")
    if not target.startswith(("unix://", "/")):
        return swarm_checks(None, None, cluster, f"{target}: only unix sockets are checked here")
    try:
        transport = httpx.HTTPTransport(uds=path, verify=False)  # no TLS on a unix socket
        with httpx.Client(transport=transport, base_url="http://docker/v1.41", timeout=5) as client:
            info = client.get("/info").json()
            answer = client.get("/nodes")
            nodes = answer.json() if answer.status_code == 200 else None
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return swarm_checks(None, None, cluster, f"no answer at {path}: {exc.__class__.__name__}")
    return swarm_checks(info, nodes, cluster)


def _binary(name: str, binaries: list[str], package: str, needed_for: str) -> dict:
    found = [path for b in binaries if (path := shutil.which(b))]
    if found:
        return _check(name, "ok", ", ".join(found))
    return _check(name, "warn", f"not installed ({needed_for})", f"apt-get install {package}")


def _lxc_extras() -> list[dict]:
    """What the LXC driver needs besides the lxc tools (drivers/lxc.py): no Python binding (it
    drives the tools), tini to run commands under, the cgroup controllers its limits use, and
    Docker's DOCKER-USER chain, where it lets its bridges' traffic through Docker's FORWARD DROP."""
    import subprocess

    from mariposa.drivers.lxc import TINI

    out = [_check("lxc binding", "ok", "none needed: the driver runs the lxc-* tools")]
    tini = next((t for t in TINI if Path(t).exists()), None)
    out.append(_check("tini", "ok", tini) if tini else
               _check("tini", "warn", "not installed: lx commands would run as PID 1, deaf to SIGTERM",
                      "apt-get install tini"))
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        have = set((root / "cgroup.controllers").read_text().split())
        kind = "v2"
    else:
        have = {c for c in ("memory", "cpu") if (root / c).is_dir()}
        kind = "v1"
    missing = {"memory", "cpu"} - have
    out.append(_check("cgroups", "warn" if missing else "ok",
                      f"cgroup {kind}" + (f", no {' or '.join(sorted(missing))} controller: lx memory/cpus "
                                          "limits would fail" if missing else ", memory and cpu controllers"),
                      "boot with the missing controllers enabled" if missing else ""))
    try:
        chain = subprocess.run(["iptables", "-w", "-n", "-L", "DOCKER-USER"], capture_output=True, timeout=10)
        ok = chain.returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    out.append(_check("iptables", "ok", "DOCKER-USER chain present: LXC bridges get their ACCEPT rule") if ok else
               _check("iptables", "warn", "no DOCKER-USER chain: nothing to open for LXC bridges (fine without "
                      "Docker's FORWARD DROP)", "start dockerd first if Docker runs here"))
    return out


def _qemu_extras(cfg: configuration.DaemonConfig) -> list[dict]:
    """Mariposa's guest kernel, and which accelerator boots it here (a probe boot, kept)."""
    from mariposa.drivers.base import RuntimeUnavailable
    from mariposa.vm import accel, kernel

    try:
        found = kernel.find(Path(cfg.kernel_dir) if cfg.kernel_dir else None)
    except RuntimeUnavailable as exc:
        return [_check("vm kernel", "fail", str(exc), "python -m mariposa.vm.kernel fetch (tests/run.sh does)")]
    out = [_check("vm kernel", "ok", f"{found.vmlinux} ({found.version})")]
    path = Path(cfg.qemu_path or Path(cfg.state_dir) / "qemu")
    try:
        path.mkdir(parents=True, exist_ok=True)
        works, why = trio.run(accel.probe, found, path)
    except OSError as exc:
        return out + [_check("accelerator", "warn", f"not probed: {exc}")]
    if works:
        out.append(_check("accelerator", "ok", f"KVM: {why}"))
    else:
        out.append(_check("accelerator", "warn", f"TCG (software emulation, slower boots): {why}",
                          "VMs run all the same; for KVM, a host with VMX/SVM and /dev/kvm"))
    return out


def _kvm() -> dict:
    if not Path("/dev/kvm").exists():
        return _check("kvm", "warn", "/dev/kvm missing: QEMU VMs would run without acceleration",
                      "enable virtualisation in the firmware and load kvm_intel/kvm_amd")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return _check("kvm", "warn", "/dev/kvm exists but this user cannot open it",
                      "run as root or join the kvm group")
    return _check("kvm", "ok", "/dev/kvm usable")


def _state_dir(path: str) -> dict:
    p = Path(path)
    if not p.exists():
        parent = next((q for q in p.parents if q.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            return _check("state dir", "ok", f"{path} will be created on first start")
        return _check("state dir", "fail", f"{path} missing and {parent} is not writable", f"mkdir -p {path}")
    if not os.access(p, os.W_OK):
        return _check("state dir", "fail", f"{path} is not writable by this user", "run the daemon as root")
    db = p / "mariposa.db"
    store = f" (store {db.stat().st_size // 1024} KiB)" if db.exists() else " (no store yet)"
    return _check("state dir", "ok", f"{path}" + store)


def _remote(cfg: configuration.DaemonConfig) -> dict:
    """The remote API's certificate and its fingerprint, to compare with what the CLI pins on
    first use (``~/.config/mariposa/known_hosts``)."""
    from mariposa.api import tls

    cert, _key = tls.paths(cfg.state_dir, cfg.tls_cert, cfg.tls_key)
    if not cert.exists():
        return _check("remote api", "warn" if cfg.listen else "ok",
                      f"listen {cfg.listen}: no certificate yet at {cert} (made at the daemon's first start)"
                      if cfg.listen else "off (listen is not set)")
    try:
        print_ = tls.fingerprint(cert)
    except (OSError, ValueError) as exc:
        return _check("remote api", "fail", f"{cert}: {exc}", "give tls_cert a PEM certificate")
    where = f"listen {cfg.listen}" if cfg.listen else "listen is not set"
    return _check("remote api", "ok", f"{where}; certificate {cert} SHA-256 fingerprint {print_}")


def _socket(path: str) -> dict:
    if not Path(path).exists():
        return _check("daemon", "warn", f"no socket at {path}: the daemon is not running",
                      "mariposa daemon (or systemctl start mariposa)")
    try:
        transport = httpx.HTTPTransport(uds=path, verify=False)  # no TLS on a unix socket
        with httpx.Client(transport=transport, base_url="http://m", timeout=5) as client:
            info = client.get("/v1/ping").json()
        return _check("daemon", "ok", f"mariposa {info.get('version')} answers at {path} (you are {info.get('you')})")
    except (httpx.HTTPError, OSError, ValueError) as exc:
        denied = "Permission denied" in str(exc)
        return _check("daemon", "fail", f"{path}: {'permission denied' if denied else exc.__class__.__name__}",
                      "join the socket's group or run as root" if denied
                      else "restart the daemon; a stale socket is replaced on start")


def run_checks(config_path: str | None, state_dir: str | None, socket: str) -> list[dict]:
    results = []
    try:
        cfg = configuration.load(config_path, {"state_dir": state_dir} if state_dir else None)
        results.append(_check("config", "ok", cfg.source or "no configuration file: defaults"))
    except configuration.ConfigError as exc:
        cfg = configuration.DaemonConfig()
        results.append(_check("config", "fail", exc.message, "fix the file named"))
    results.append(_docker(cfg.docker_host))
    results += _swarm(cfg.docker_host, cfg.cluster)
    results.append(_binary("lxc", ["lxc-create", "lxc-start"], "lxc", "needed for compute_type lx"))
    if shutil.which("lxc-start"):
        results += _lxc_extras()
    results.append(_binary("qemu", ["qemu-system-x86_64"], "qemu-system-x86", "needed for compute_type kvm"))
    results.append(_kvm())
    if shutil.which("qemu-system-x86_64"):
        results += _qemu_extras(cfg)
    results.append(_binary("busybox", ["busybox"], "busybox-static", "the examples' local image is built from it"))
    results.append(_state_dir(cfg.state_dir))
    if cfg.manifest_dir:
        exists = Path(cfg.manifest_dir).is_dir()
        results.append(_check("manifest dir", "ok" if exists else "warn",
                              cfg.manifest_dir + ("" if exists else " does not exist yet (created on start)")))
    results.append(_remote(cfg))
    results.append(_socket(socket))
    return results
