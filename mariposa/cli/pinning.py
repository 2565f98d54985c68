"""Trust on first use for the remote API's certificate, as ssh's ``StrictHostKeyChecking=accept-new``.

The daemon's certificate is usually self-signed (api/tls.py), so no CA vouches for it: the CLI
records its SHA-256 fingerprint the first time it talks to a ``host:port``, in
``~/.config/mariposa/known_hosts`` (one ``host:port FINGERPRINT`` a line), says so on stderr, and
from then on refuses any other certificate there, naming the line to remove and both
fingerprints (``mariposa doctor`` on the daemon's host prints the right one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mariposa.errors import CertificateChanged


def config_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "mariposa"


def known_hosts() -> Path:
    return config_dir() / "known_hosts"


def check(where: str, fingerprint: str, path: Path | None = None) -> None:
    """Accept ``fingerprint`` for ``where`` (``host:port``) if it is the pinned one, or pin it if
    none is; ``CertificateChanged`` otherwise."""
    path = path or known_hosts()
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if len(parts) < 2 or parts[0] != where or line.lstrip().startswith("#"):
            continue
        if parts[1].upper() == fingerprint.upper():
            return
        raise CertificateChanged(
            f"the certificate of {where} has changed: pinned {parts[1]} ({path}:{number}), shown now {fingerprint}. "
            f"This may be someone in between. If the daemon's certificate was replaced on purpose, check the new "
            f"fingerprint with 'mariposa doctor' on that host, then remove line {number} of {path}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "a") as f:
        f.write(f"{where} {fingerprint}\n")
    print(f"mariposa: pinned the certificate of {where} (SHA-256 {fingerprint}) in {path}; "
          f"compare it with 'mariposa doctor' on that host", file=sys.stderr)
