"""An emitted event's fields as kept in the event history, and back
(``opcua/event_fields.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asyncua import ua
from asyncua.common import event_objects

from twin_server.opcua import event_fields


def _alarm() -> event_objects.ExclusiveLimitAlarm:
    event = event_objects.ExclusiveLimitAlarm()
    event.Time = datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=UTC)
    event.Severity = 600
    event.add_property("NodeId", ua.NodeId("Sessions.a.Alarms.Level", 2), ua.VariantType.NodeId)
    event.add_property("ActiveState/Id", True, ua.VariantType.Boolean)
    event.add_property("LimitState/CurrentState", ua.LocalizedText("High"),
                       ua.VariantType.LocalizedText)
    event.add_property("ClientUserId", None, ua.VariantType.String)
    return event


class TestEventFields:
    def test_round_trip(self) -> None:
        """Every non-null field comes back with its value and VariantType; a null one
        is left out (it reads null either way)."""
        event = _alarm()
        back = event_fields.decode(event_fields.encode(event, 2), 2)
        expected = {k: ua.Variant(getattr(event, k), t) for k, t in event.data_types.items()
                    if getattr(event, k) is not None}
        assert back.get_event_props_as_fields_dict() == expected
        assert back.EventType == ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType)
        assert not hasattr(back, "ClientUserId")

    def test_our_namespace_follows_its_index(self) -> None:
        """A NodeId of our namespace comes back in the namespace's index at read time;
        the standard namespace's stay."""
        back = event_fields.decode(event_fields.encode(_alarm(), 2), 3)
        assert back.NodeId == ua.NodeId("Sessions.a.Alarms.Level", 3)
        assert back.EventType == ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType)

    @pytest.mark.parametrize("blob", [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x07\x02\x00", id="other-format"),
        pytest.param(None, id="cut-short"),
    ])
    def test_damaged_is_refused(self, blob: bytes | None) -> None:
        """Bytes that are not whole fields of our format raise BadFields."""
        if blob is None:
            blob = event_fields.encode(_alarm(), 2)[:-3]
        with pytest.raises(event_fields.BadFields):
            event_fields.decode(blob, 2)
