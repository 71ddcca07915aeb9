"""Translation of our exceptions into OPC UA status codes, at the boundary.

Every ``TwinServerError`` names its status (``errors.py``); anything else that
escapes a handler is a bug and becomes BadInternalError (and is logged with its
traceback by the caller).
"""

from __future__ import annotations

from asyncua import ua

from twin_server.errors import TwinServerError


def status_code(name: str) -> ua.StatusCode:
    """``ua.StatusCode`` for a status name such as ``"BadOutOfRange"``."""
    value = getattr(ua.StatusCodes, name, None)
    if not isinstance(value, int):
        value = ua.StatusCodes.BadInternalError
    return ua.StatusCode(value)


def status_of(exc: BaseException) -> ua.StatusCode:
    """The status code a client sees for ``exc``."""
    if isinstance(exc, TwinServerError):
        return status_code(exc.status)
    return ua.StatusCode(ua.StatusCodes.BadInternalError)


def diagnostic(message: str, status: ua.StatusCode | None = None) -> ua.DiagnosticInfo:
    """A DiagnosticInfo carrying ``message`` as AdditionalInfo (no string table needed)."""
    return ua.DiagnosticInfo(AdditionalInfo=message, InnerStatusCode=status)


GOOD = ua.StatusCode(ua.StatusCodes.Good)
