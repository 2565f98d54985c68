"""Mariposa: one daemon that keeps what runs on this host equal to what the project manifests say."""

__version__ = "0.1.0"

# Here rather than in mariposa.config, whose imports (attrs, the manifest package) the CLI would
# otherwise pay for on every command just to find the socket.
DEFAULT_SOCKET = "/run/mariposa/mariposa.sock"
