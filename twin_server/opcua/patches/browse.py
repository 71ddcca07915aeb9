"""A faster Browse: reference subtypes are looked up once, not per reference.

asyncua's ``ViewService._suitable_reftype`` decides for every reference of every
browsed node whether its type is the requested one or a subtype of it, by walking
the type hierarchy from the requested type again each time (a recursive generator
that builds a ``NodeId`` at each step): browsing a session of 100 variables with
``HierarchicalReferences`` and subtypes, as every client does, costs ~100 ms of
the event loop, which a busy machine stretches past a client's 1 s keep-alive
probe. ``install`` wraps the instance's method (never the class) with one that
keeps each requested type's subtypes as a set, and forgets them whenever a client
adds or deletes nodes or references (the only way reference types change after
start: the server itself adds none). Relies on ``ViewService._suitable_reftype``
and ``_get_sub_ref`` and ``NodeManagementService``'s four methods (asyncua 2.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asyncua import ua

_MARK = "_twin_server_browse"
_NULL = ua.NodeId(ua.ObjectIds.Null)


def install(iserver: Any) -> None:
    """Cache reference subtypes in ``iserver``'s Browse (idempotent)."""
    view = iserver.view_service
    if getattr(view, _MARK, False):
        return
    subtypes: dict[ua.NodeId, frozenset[ua.NodeId]] = {}
    walk = view._get_sub_ref

    def suitable_reftype(ref1: ua.NodeId, ref2: ua.NodeId, include: bool) -> bool:
        if ref1 in (_NULL, ref2):
            return True
        if not include:
            return False
        found = subtypes.get(ref1)
        if found is None:
            found = subtypes[ref1] = frozenset(walk(ref1))
        return ref2 in found

    view._suitable_reftype = suitable_reftype
    setattr(view, _MARK, True)
    nodes = iserver.node_mgt_service
    for name in ("add_nodes", "delete_nodes", "add_references", "delete_references"):
        setattr(nodes, name, _forgetting(getattr(nodes, name), subtypes.clear))


def _forgetting(method: Callable[..., Any], forget: Callable[[], None]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            forget()
    return wrapped
