"""Public triggers (issue 16, the spec's ``triggers``): a URL per trigger on a local TCP listener
(``triggers_listen``), whose path holds a random token; a POST runs, starts, stops or scales the
trigger's service through the control layer, as the caller ``trigger:NAME``.

- ``tokens``: making, hashing and comparing tokens (only their sha256 is stored);
- ``limit``: failures per source address, past which an address is refused for a while;
- ``app``: one request to the answer (no sockets: tested by calling it);
- ``listener``: the TCP server in the daemon's nursery, on the control socket's h11 code.
"""
