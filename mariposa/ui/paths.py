"""Where the dashboard's templates and static files are, inside the package."""

from pathlib import Path

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def is_dashboard(target: bytes) -> bool:
    """Whether a request target (its path, or path and query as sent) is the dashboard's:
    ``/ui``, ``/ui/...`` or ``/ui?...``; ``/uiv1`` is not. The one rule for the socket's fast
    path (api/simple.py), the remote listener's sign-in (api/remote.py) and its dispatcher."""
    return target == b"/ui" or target.startswith((b"/ui/", b"/ui?"))
