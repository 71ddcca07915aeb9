"""Event filters' WhereClause as OPC UA Part 4 (7.7) and Part 9 describe it, where
asyncua 2.1 does not.

asyncua's ``WhereClauseEvaluator`` takes ``OfType`` for equality of the EventType
(an ExclusiveLimitAlarm event is not "of type" AcknowledgeableConditionType, so
node-opcua's standard alarm filter, ``ofType("AcknowledgeableConditionType")``,
let no alarm through), reads only the first element of an operand's BrowsePath
(``ActiveState/Id`` read ``ActiveState``), raises on a field the event does not
have (logged with a traceback per event) and lets the refresh events of a
ConditionRefresh be filtered out. ``EventWhere`` evaluates:

* ``OfType``: the event's type is the type named or one of its subtypes
  (HasSubtype in the address space, looked up once per pair of types);
* operands by their whole BrowsePath (``ActiveState/Id``); a field the event does
  not have is null, and a comparison with null is false (Part 4, 7.7.3);
* ``Like`` with Part 4's wildcards (``%``, ``_``, ``[...]``, ``[^...]``);
* RefreshStartEventType, RefreshEndEventType and RefreshRequiredEventType pass every
  filter (Part 9, 4.5: "ignore the Event content filtering ... and will always be
  delivered").

asyncua 2.1 internals relied on: ``WhereClauseEvaluator`` (subclassed: its
``_eval_el`` / ``_eval_op`` / ``eval`` structure) and each event monitored item's
``where_clause_evaluator`` (replaced by ``monitoring.install``'s
``create_monitored_items`` / ``modify_monitored_items``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace
from asyncua.server.monitored_item_service import WhereClauseEvaluator

_ID = ua.ObjectIds
#: the event types Part 9 delivers whatever a subscription's filter says
ALWAYS = frozenset(ua.NodeId(i) for i in (
    _ID.RefreshStartEventType, _ID.RefreshEndEventType, _ID.RefreshRequiredEventType))
_HAS_SUBTYPE = ua.NodeId(_ID.HasSubtype)
_FO = ua.FilterOperator
_COMPARE = {
    _FO.GreaterThan: lambda a, b: a > b,
    _FO.LessThan: lambda a, b: a < b,
    _FO.GreaterThanOrEqual: lambda a, b: a >= b,
    _FO.LessThanOrEqual: lambda a, b: a <= b,
}
_log = logging.getLogger(__name__)


class EventWhere(WhereClauseEvaluator):  # type: ignore[misc]
    """A WhereClause evaluated as the module docstring says."""

    def __init__(self, aspace: AddressSpace, clause: ua.ContentFilter | None,
                 logger: logging.Logger | None = None) -> None:
        super().__init__(logger or _log, aspace, clause or ua.ContentFilter())
        self._subtypes: dict[tuple[ua.NodeId, ua.NodeId], bool] = {}

    def eval(self, event: Any) -> bool:
        if getattr(event, "EventType", None) in ALWAYS:
            return True
        return bool(super().eval(event))

    def _eval_el(self, index: int, event: Any) -> Any:
        el = self.elements[index]
        op, ops = el.FilterOperator, el.FilterOperands
        if op == _FO.OfType:
            return self.is_subtype(getattr(event, "EventType", None), self._eval_op(ops[0], event))
        if op in _COMPARE:
            a, b = self._eval_op(ops[0], event), self._eval_op(ops[1], event)
            if a is None or b is None:
                return False
            try:
                return _COMPARE[op](a, b)
            except TypeError:
                return False
        if op == _FO.Like:
            text, pattern = self._eval_op(ops[0], event), self._eval_op(ops[1], event)
            if isinstance(text, ua.LocalizedText):
                text = text.Text
            return isinstance(text, str) and isinstance(pattern, str) and \
                _like(pattern).fullmatch(text) is not None
        return super()._eval_el(index, event)

    def _eval_op(self, op: Any, event: Any) -> Any:
        if isinstance(op, ua.SimpleAttributeOperand) and op.BrowsePath:
            return getattr(event, "/".join(q.Name for q in op.BrowsePath), None)
        if isinstance(op, ua.AttributeOperand) and op.BrowsePath and op.BrowsePath.Elements:
            return getattr(event, "/".join(e.TargetName.Name for e in op.BrowsePath.Elements),
                           None)
        return super()._eval_op(op, event)

    def is_subtype(self, etype: Any, wanted: Any) -> bool:
        """``etype`` is ``wanted`` or one of its subtypes."""
        if not isinstance(etype, ua.NodeId) or not isinstance(wanted, ua.NodeId):
            return False
        key = (etype, wanted)
        if key not in self._subtypes:
            seen: set[ua.NodeId] = set()
            node: ua.NodeId | None = etype
            while node is not None and node not in seen and node != wanted:
                seen.add(node)
                node = _parent(self._aspace, node)
            self._subtypes[key] = node == wanted
        return self._subtypes[key]


def _parent(aspace: AddressSpace, nodeid: ua.NodeId) -> ua.NodeId | None:
    if nodeid not in aspace:
        return None
    for ref in aspace[nodeid].references:
        if ref.ReferenceTypeId == _HAS_SUBTYPE and not ref.IsForward:
            return ref.NodeId
    return None


def _like(pattern: str) -> re.Pattern[str]:
    """Part 4's Like pattern as a regular expression."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1:end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def refit(aspace: AddressSpace, mdata: Any) -> None:
    """Give an event monitored item (asyncua's ``MonitoredItemData``) our evaluator of
    its filter's WhereClause; a data-change item is left alone."""
    if getattr(mdata, "where_clause_evaluator", None) is None:
        return
    flt = mdata.filter
    mdata.where_clause_evaluator = EventWhere(
        aspace, flt.WhereClause if isinstance(flt, ua.EventFilter) else None)
