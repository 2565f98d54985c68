"""Two real registries for the pull tests: Debian's ``docker-registry`` (the distribution
registry, 2.8), run from a config file in a temporary directory, one open and one behind htpasswd
basic auth, each on a free port of 127.0.0.1 (which Docker allows over plain HTTP).

Images get there the way users put them there: ``docker tag`` + ``docker push`` (with a private
``docker --config`` directory for the login, so the host's ``~/.docker/config.json`` is never
touched), then the local tag is removed so the image exists only in the registry. Every
repository is under one unique prefix, and ``close`` removes the local tags under it and nothing
else (other suites share this Engine).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path

import attrs

REGISTRY = "/usr/bin/docker-registry"
USER = "mariposa-ci"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bcrypt(password: str) -> str:
    """htpasswd's bcrypt line, from the standard library's crypt (deprecated, present in 3.11;
    libxcrypt does bcrypt): no apache2-utils and no bcrypt wheel needed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as _crypt

        return _crypt.crypt(password, _crypt.mksalt(_crypt.METHOD_BLOWFISH))


def _docker(*args: str, input: str | None = None, check: bool = True) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, input=input, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


@attrs.define
class Registries:
    root: Path
    open_host: str
    auth_host: str
    password: str
    prefix: str  # the repository prefix of everything these tests push
    procs: list[subprocess.Popen] = attrs.field(factory=list)
    user: str = USER

    def ref(self, host: str, name: str, tag: str = "v1") -> str:
        return f"{host}/{self.prefix}/{name}:{tag}"

    def push(self, image: str, ref: str) -> str:
        """``image`` (local) into the registry as ``ref``, and its local tag ``ref`` removed."""
        config = self.root / "docker-config"
        _docker("tag", image, ref)
        try:
            if ref.startswith(self.auth_host + "/"):
                _docker("--config", str(config), "login", "-u", self.user, "--password-stdin", self.auth_host,
                        input=self.password)
            _docker("--config", str(config), "push", ref)
        finally:
            _docker("rmi", ref, check=False)
        return ref

    def remove_local(self, ref: str) -> None:
        _docker("rmi", ref, check=False)

    def local_tags(self) -> list[str]:
        """Local names under the prefix: tags, and the digest references a pull leaves once its
        tag is gone (`docker images` shows them as <none>)."""
        out = _docker("images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}")
        refs = []
        for line in out.splitlines():
            repo, tag, digest = (line.split() + ["", "", ""])[:3]
            if f"/{self.prefix}/" not in repo:
                continue
            if tag and tag != "<none>":
                refs.append(f"{repo}:{tag}")
            if digest and digest != "<none>":
                refs.append(f"{repo}@{digest}")
        return refs

    def close(self) -> None:
        for ref in self.local_tags():
            _docker("rmi", ref, check=False)
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_answers(host: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"docker-registry exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # 401 from the one with auth: it answers
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"docker-registry on {host} did not answer within 20 s: {log.read_text()[-2000:]}")


def start(root: Path) -> Registries:
    if not shutil.which(REGISTRY):
        raise AssertionError("the pull tests need Debian's docker-registry: apt-get install docker-registry "
                             "(tests/run.sh does)")
    root.mkdir(parents=True, exist_ok=True)
    password = uuid.uuid4().hex + "-Pw"
    (root / "htpasswd").write_text(f"{USER}:{_bcrypt(password)}\n")
    hosts = []
    regs = Registries(root, "", "", password, f"mariposa-pulls-{uuid.uuid4().hex[:8]}")
    for kind in ("open", "auth"):
        host = f"127.0.0.1:{_free_port()}"
        auth = f"auth: {{htpasswd: {{realm: mariposa-test, path: {root / 'htpasswd'}}}}}\n" if kind == "auth" else ""
        config = root / f"{kind}.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {root / kind}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: '{host}'}}\n" + auth)
        log = root / f"{kind}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=out, stderr=out)
        regs.procs.append(proc)
        _wait_answers(host, proc, log)
        hosts.append(host)
    regs.open_host, regs.auth_host = hosts
    return regs
