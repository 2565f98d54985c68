"""The web dashboard (issue 19): server-rendered pages over the control layer, on the remote
listener's TLS port under ``/ui/``.

Every page and action is the same control-layer call the CLI makes, with the signed-in user as
the ``Caller``: what a role may not do is refused there (403), whatever the page offered.
Pages are starlette + Jinja2, bridged onto the listener's own h11 connections
(api/asgi.py); live updates are server-sent events written by the listener itself
(ui/stream.py), which already ends a stream the moment its client hangs up.
"""
