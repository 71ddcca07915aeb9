"""twin-server's reliance on asyncua's internals, and the asyncua version it was
tested with.

asyncua 2.1 offers few hooks, so twin-server wraps attributes of its server's
instances (never asyncua's classes) and reads a few private attributes. What
touches asyncua's internals lives in this package or goes through it:

    patches/fastpath.py          monitored items' data-change path; subscriptions'
                                 ``_triggered_datachanges``, ``publish_results``;
                                 ``AddressSpace._nodes``
    patches/aspace_cache.py      ``AddressSpace._nodes`` (the pickled standard space),
                                 ``InternalServer.load_standard_address_space``
    patches/browse.py            ``ViewService._suitable_reftype`` and ``_get_sub_ref``
                                 (reference subtypes cached), ``NodeManagementService``
    patches/monitoring.py        ``SubscriptionService.create_monitored_items`` /
                                 ``modify_monitored_items`` (sampling intervals,
                                 deadbands), ``AddressSpace._handle_to_attribute_map``,
                                 ``delete_datachange_callback`` and the data-change
                                 callbacks of deleted nodes (items that outlive them)
    patches/bulk.py              ``ReferenceDescription``'s slots, filled directly (the
                                 machine faces' bulk loader, ``faces/loader.py``)
    patches/events.py            ``WhereClauseEvaluator`` (subclassed) and event items'
                                 ``where_clause_evaluator`` (Part 4's OfType, browse
                                 paths, Like; Part 9's refresh events)
    patches/internals.py         every private attribute read or written elsewhere, one
                                 named function each (``external_sessions``,
                                 ``monitored_items``, ``listening_sockets``, ...)

No module outside this package reads or writes an asyncua private attribute
(``tests/opcua/test_patches.py`` checks the source). These modules still wrap
public methods of asyncua's instances, or rely on its behaviour, each naming what
in its docstring:

    opcua/server.py              the binary server's socket, the CurrentTime loop and
                                 monitored items (through ``internals``)
    opcua/history_read.py,       the history manager's session hook, each session's
    security/history_sessions.py ``history_read`` and ``close_session``
    security/context.py          the channels' policy factories (``internals``)
    security/guard.py            the attribute and method services,
                                 ``PermissionRuleset.check_validity``, the user manager,
                                 monitored items (``internals``)
    security/sessions.py         session tokens, ``lookup_external_session``,
                                 subscriptions' publish callbacks, TransferSubscriptions;
                                 sessions, Publish requests, monitored items (``internals``)
    security/room.py             the sessions by token, ``asyncio_transports``, each
                                 session's last activity (``internals``)
    security/tokens.py           ``add_endpoint``, ``decrypt_user_token``
    security/protocol.py         each connection's ``UaProcessor`` (``process``,
                                 ``process_message``, the request dispatcher through
                                 ``internals``; ``_process_message`` found by name in
                                 tracebacks)
    faces/datatypes.py           ``ua_binary``'s serializers of built-in types and
                                 structures; an ``ExtensionObject`` with a bytes Body
                                 sent as it is (a NodeSet's own structures' values)
    security/limits.py           ``TransportLimits``, a connection's buffered bytes and
                                 the subscription counter (``internals``), subscription
                                 loggers

These were written against and tested with asyncua ``TESTED`` (pyproject.toml
pins that minor version). ``check_asyncua`` runs at start-up: another version
refuses to start, naming both, unless ``TWIN_SERVER_UNTESTED_ASYNCUA=1`` asks to
run anyway (with a warning), for a user who tries a newer asyncua on purpose.
"""

from __future__ import annotations

import os

import asyncua
import structlog

from twin_server.errors import TwinServerError

log = structlog.get_logger(__name__)

#: the asyncua minor version every hook above was tested with
TESTED: tuple[int, int] = (2, 1)
#: set to 1 to run on another asyncua version anyway
OVERRIDE = "TWIN_SERVER_UNTESTED_ASYNCUA"


class UntestedAsyncua(TwinServerError):
    """The installed asyncua is not the minor version twin-server's hooks were
    tested with."""

    def __init__(self, installed: str) -> None:
        self.installed = installed
        super().__init__(
            f"asyncua {installed} is installed, but twin-server hooks into asyncua's "
            f"internals as of {TESTED[0]}.{TESTED[1]}.x and was tested with that only; "
            f"install asyncua=={TESTED[0]}.{TESTED[1]}.* (pip install -e . does), or set "
            f"{OVERRIDE}=1 to run on {installed} anyway")


def minor(version: str) -> tuple[int, int] | None:
    """``(2, 1)`` of ``"2.1.0"``; None for a version that does not start with two numbers."""
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def check_asyncua(version: str | None = None) -> None:
    """Raise UntestedAsyncua unless asyncua (or ``version``) is the TESTED minor version,
    or the user asked to run anyway."""
    installed = version if version is not None else asyncua.__version__
    if minor(installed) == TESTED:
        return
    if os.environ.get(OVERRIDE) == "1":
        log.warning("asyncua_untested", installed=installed,
                    tested=f"{TESTED[0]}.{TESTED[1]}", override=OVERRIDE)
        return
    raise UntestedAsyncua(installed)
