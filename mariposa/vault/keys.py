"""The key file and the ciphers it makes.

Why Fernet in a MultiFernet: Fernet is authenticated encryption with a versioned token format
(AES-128-CBC + HMAC-SHA256) that ``cryptography`` maintains, so we write no crypto of our own;
a MultiFernet decrypts with any of its keys and encrypts with the first, which is exactly what a
key rotation needs (add the new key first, re-encrypt, drop the old one).

The key file holds one key per line, newest first. It is ``/etc/mariposa/secret.key`` (mode
0600, made on first use, outside the state directory so a copy of the store alone reveals
nothing), or systemd's ``$CREDENTIALS_DIRECTORY/mariposa-secret-key`` when that is set
(``LoadCredentialEncrypted=``): then the file is systemd's, read-only, and rotation is done with
``systemd-creds`` instead. Every write is a new 0600 file renamed over the old one, so the file is
always whole: a crash mid-rotation leaves either the old keys or both.

Everything here blocks (file I/O): call it from a worker thread.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mariposa.errors import MariposaError

DEFAULT_KEY_FILE = "/etc/mariposa/secret.key"
CREDENTIAL_NAME = "mariposa-secret-key"


class SecretKeyError(MariposaError):
    """The key file is missing, unreadable or does not open the store's secrets."""

    kind = "secret-key"


def key_source(configured: str | None) -> tuple[Path, bool]:
    """(the key file, whether Mariposa may write it): systemd's credential when the unit passes one."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        return Path(creds) / CREDENTIAL_NAME, False
    return Path(configured or DEFAULT_KEY_FILE), True


def _parse(text: str, path: Path) -> list[bytes]:
    keys = [line.strip().encode() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise SecretKeyError(f"{path}: a line is not a Fernet key (32 url-safe base64-encoded bytes)") from None
    if not keys:
        raise SecretKeyError(f"{path} holds no key")
    return keys


def write_keys(path: Path, keys: list[bytes]) -> None:
    """The whole file anew, 0600 from its first byte, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(k + b"\n" for k in keys))
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class KeyRing:
    """The keys of one key file, read once and kept in memory."""

    def __init__(self, path: Path | str | None = None, writable: bool = True) -> None:
        if path is None:
            self.path, self.writable = key_source(None)
        else:
            self.path, self.writable = Path(path), writable
        self._keys: list[bytes] | None = None
        self._lock = threading.Lock()

    @classmethod
    def configured(cls, key_file: str | None) -> KeyRing:
        path, writable = key_source(key_file)
        return cls(path, writable)

    def exists(self) -> bool:
        return self._keys is not None or self.path.exists()

    def _load(self, create: bool) -> list[bytes]:
        with self._lock:
            if self._keys is not None:
                return self._keys
            try:
                self._keys = _parse(self.path.read_text(), self.path)
            except FileNotFoundError:
                if not create:
                    raise SecretKeyError(f"the secret key file {self.path} is missing: the store's secrets cannot be "
                                    "read without it (restore it from your backup)") from None
                if not self.writable:
                    raise SecretKeyError(f"the systemd credential {self.path} is missing") from None
                self._keys = [Fernet.generate_key()]
                write_keys(self.path, self._keys)
            except PermissionError:
                raise SecretKeyError(f"cannot read the secret key file {self.path}") from None
            return self._keys

    def cipher(self, create: bool = False) -> MultiFernet:
        """The ciphers of the file's keys (a new file with one key when ``create`` and none yet)."""
        return MultiFernet([Fernet(k) for k in self._load(create)])

    def encrypt(self, value: bytes) -> str:
        return self.cipher(create=True).encrypt(value).decode()

    def decrypt(self, token: str) -> bytes:
        try:
            return self.cipher().decrypt(token.encode())
        except InvalidToken:
            raise SecretKeyError(f"the key file {self.path} does not open a secret of the store "
                            "(a different key file?)") from None

    def fingerprint(self) -> list[str]:
        """Short, non-secret ids of the keys (a hash of each), newest first: for tests and doctor."""
        import hashlib

        return [hashlib.sha256(k).hexdigest()[:12] for k in self._load(False)]

    # -- rotation: add, re-encrypt (the caller, in one store transaction), drop ------------------

    def add_new_key(self) -> MultiFernet:
        """Write the file with a new key first and the old ones after; the cipher that re-encrypts."""
        if not self.writable:
            raise SecretKeyError(f"the key is systemd's credential {self.path}: rotate it with systemd-creds "
                            "(a new credential holding the new key first, then the old) and restart")
        old = self._load(create=True)
        keys = [Fernet.generate_key(), *old]
        write_keys(self.path, keys)
        with self._lock:
            self._keys = keys
        return MultiFernet([Fernet(k) for k in keys])

    def drop_old_keys(self) -> None:
        """Keep only the newest key (every secret is encrypted with it now)."""
        keys = self._load(create=False)[:1]
        write_keys(self.path, keys)
        with self._lock:
            self._keys = keys
