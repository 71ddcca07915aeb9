"""Refusals over HTTP: the OPC UA status name and the message, with an HTTP status.

Every refusal of the REST API answers ``{"status": "<OPC UA status name>",
"message": "..."}``: the status and message an OPC UA client gets for the same
call (``errors.py`` names the status of each of our exceptions), and an HTTP
status a web client branches on. The table is the one place that maps them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

#: OPC UA status name -> HTTP status (a name not listed: 400)
HTTP_STATUS: dict[str, int] = {
    "BadInvalidArgument": 400,
    "BadTypeMismatch": 400,
    "BadArgumentsMissing": 400,
    "BadDecodingError": 400,
    "BadIdentityTokenRejected": 401,
    "BadUserAccessDenied": 403,
    "BadNotFound": 404,
    "BadNodeIdUnknown": 404,
    "BadMethodInvalid": 405,
    "BadBrowseNameDuplicated": 409,
    "BadInvalidState": 409,
    "BadNotWritable": 409,
    "BadEventIdUnknown": 409,
    "BadConditionBranchAlreadyAcked": 409,
    "BadConditionBranchAlreadyConfirmed": 409,
    "BadConditionAlreadyEnabled": 409,
    "BadConditionAlreadyDisabled": 409,
    "BadConditionDisabled": 409,
    "BadConditionAlreadyShelved": 409,
    "BadConditionNotShelved": 409,
    "BadShelvingTimeOutOfRange": 409,
    "BadRequestTooLarge": 413,
    "BadOutOfRange": 422,
    "BadConfigurationError": 422,
    "BadInternalError": 500,
    "BadNotSupported": 501,
    "BadNotImplemented": 501,
    "BadResourceUnavailable": 503,
}


def http_status(status: str) -> int:
    """The HTTP status answering the OPC UA status ``status``."""
    return HTTP_STATUS.get(status, 400)


def refusal(status: str, message: str, *, headers: dict[str, str] | None = None,
            http: int | None = None) -> web.Response:
    """The JSON answer of a refused request."""
    body: dict[str, Any] = {"status": status, "message": message}
    return web.json_response(body, status=http if http is not None else http_status(status),
                             headers=headers)


class Refused(Exception):
    """A refusal decided by the web front itself (authentication, the request's form)."""

    def __init__(self, status: str, message: str, *, http: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.http = http
        self.headers = headers

    def response(self) -> web.Response:
        return refusal(self.status, self.message, headers=self.headers, http=self.http)
