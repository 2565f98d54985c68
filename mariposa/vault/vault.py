"""The daemon's secrets, async: encryption on a worker thread, storage through ``Store.call``.

Values are bytes in and bytes out. Every value that passes is also handed to the redaction point
(``control/redact.py``), which then scrubs it from anything the control layer returns: a second
line of defence behind "no code path puts a value in an answer".
"""

from __future__ import annotations

import hashlib
import hmac
import os

import trio

from mariposa.control.redact import remember
from mariposa.store import secrets as secret_store
from mariposa.store.db import Store
from mariposa.store.secrets import DAEMON
from mariposa.vault.keys import KeyRing, SecretKeyError

SALT = "audit-salt"


class Vault:
    def __init__(self, store: Store, keys: KeyRing) -> None:
        self.store = store
        self.keys = keys
        self._salt: bytes | None = None
        self._lock: trio.Lock | None = None

    @property
    def lock(self) -> trio.Lock:
        """Rotation takes turns with every write (a write between "re-encrypt" and "drop the old
        key" would be under the new key anyway, but two rotations must not interleave)."""
        if self._lock is None:
            self._lock = trio.Lock()
        return self._lock

    async def _may_create_key(self) -> bool:
        """A key file is made on first use only: if the store already holds secrets, a missing
        file is an error (a new key would open none of them), never a fresh start."""
        if await trio.to_thread.run_sync(self.keys.exists):
            return False
        if await self.store.call(secret_store.count):
            await trio.to_thread.run_sync(self.keys.cipher)  # raises: the file is missing
        return True

    async def _encrypt(self, value: bytes) -> str:
        await self._may_create_key()
        return await trio.to_thread.run_sync(self.keys.encrypt, value)

    async def _decrypt(self, token: str) -> bytes:
        return await trio.to_thread.run_sync(self.keys.decrypt, token)

    async def seal(self, value: bytes) -> str:
        """``value`` encrypted for a table of the caller's (a trigger's token until it is shown
        once: mariposa/triggers/); ``secret_store.reencrypt`` rotates those too."""
        async with self.lock:
            return await self._encrypt(value)

    async def unseal(self, token: str) -> bytes:
        return await self._decrypt(token)

    async def salt(self) -> bytes:
        """The per-daemon salt of the audit HMACs: random, made once, kept encrypted in the store."""
        if self._salt is None:
            token = await self.store.call(secret_store.token, DAEMON, "", SALT)
            if token is None:
                fresh = os.urandom(32)
                token = await self._encrypt(fresh)
                await self.store.call(secret_store.put, DAEMON, "", SALT, token, "daemon")
                self._salt = fresh
            else:
                self._salt = await self._decrypt(token)
        return self._salt

    async def digest(self, value: bytes) -> str:
        """HMAC-SHA256 of a value under the daemon's salt: "was it changed?" without the value
        (and without letting anyone who reads the events try guesses against a plain hash)."""
        return hmac.new(await self.salt(), value, hashlib.sha256).hexdigest()

    async def put(self, kind: str, scope: str, name: str, value: bytes, author: str) -> int:
        remember(value)
        async with self.lock:
            token = await self._encrypt(value)
            return await self.store.call(secret_store.put, kind, scope, name, token, author)

    async def get(self, kind: str, scope: str, name: str) -> bytes | None:
        token = await self.store.call(secret_store.token, kind, scope, name)
        if token is None:
            return None
        value = await self._decrypt(token)
        remember(value)
        return value

    async def get_many(self, kind: str, scope: str, names: list[str]) -> dict[str, bytes]:
        return await self.open(await self.store.call(secret_store.tokens, kind, scope, names))

    async def open(self, tokens: dict[str, str]) -> dict[str, bytes]:
        """The values of tokens read from the store (name -> token): a caller that copies tokens
        as they are reads what it copies, not what is there a moment later."""
        out = {}
        for name, token in tokens.items():
            out[name] = await self._decrypt(token)
            remember(out[name])
        return out

    async def digests(self, values: dict[str, bytes]) -> dict[str, str]:
        return {name: await self.digest(value) for name, value in values.items()}

    async def get_all(self, kind: str, scope: str = "") -> dict[str, bytes]:
        """Every value of a kind (the registry logins, read once at start-up)."""
        found = await self.store.call(secret_store.all_tokens, kind, scope)
        out = {}
        for name, token in found.items():
            out[name] = await self._decrypt(token)
            remember(out[name])
        return out

    async def remove(self, kind: str, scope: str, name: str) -> bool:
        async with self.lock:
            return await self.store.call(secret_store.remove, kind, scope, name)

    async def rotate(self) -> dict:
        """Add a new key, re-encrypt every secret with it in one transaction, drop the old keys.
        A crash before the transaction commits leaves the old tokens and both keys (all readable);
        after it, the new tokens and both keys (all readable); the next rotation tidies up."""
        async with self.lock:
            if not await trio.to_thread.run_sync(self.keys.exists) and not await self.store.call(secret_store.count):
                await trio.to_thread.run_sync(self.keys.cipher, True)  # first use: nothing to re-encrypt
            before = await trio.to_thread.run_sync(self.keys.fingerprint)
            cipher = await trio.to_thread.run_sync(self.keys.add_new_key)

            def rotate(token: str) -> str:
                return cipher.rotate(token.encode()).decode()

            count = await self.store.call(secret_store.reencrypt, rotate)
            await trio.to_thread.run_sync(self.keys.drop_old_keys)
            after = await trio.to_thread.run_sync(self.keys.fingerprint)
        return {"reencrypted": count, "old_keys": before, "key": after[0]}


__all__ = ["SecretKeyError", "Vault"]
