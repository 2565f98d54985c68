"""Errors a user can act on. Each carries the HTTP status the API answers with and the CLI exit
code that scripts can test, so both ends agree on what went wrong."""

from __future__ import annotations


class MariposaError(Exception):
    status = 400
    exit_code = 1
    kind = "bad-request"

    def __init__(self, message: str, *, details: list | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_json(self) -> dict:
        return {"error": self.kind, "message": self.message, "details": self.details}


class BadRequest(MariposaError):
    pass


class InvalidManifest(MariposaError):
    status = 422
    kind = "invalid-manifest"


class NotFound(MariposaError):
    status = 404
    exit_code = 4
    kind = "not-found"


class Conflict(MariposaError):
    status = 409
    exit_code = 5
    kind = "conflict"


ERROR_KINDS = {cls.kind: cls for cls in (BadRequest, InvalidManifest, NotFound, Conflict)}
