"""Secrets: encrypted at rest under a key file (``keys``), stored in the store's ``secrets`` table
(``mariposa.store.secrets``), delivered to instances as files on a tmpfs (``delivery``).

The value of a secret travels only from the caller's stdin to the store (encrypted), and from the
store to an instance's ``/run/secrets`` file or to ``secret reveal`` (root only). Everything else
(events, logs, listings) sees names, versions and an HMAC of the value.
"""

from mariposa.vault.keys import KeyRing as KeyRing
from mariposa.vault.keys import SecretKeyError as SecretKeyError
from mariposa.vault.vault import Vault as Vault
