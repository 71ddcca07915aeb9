"""The commands a host runs on a session: one table, used in-process and in workers.

Each command is a plain call into the pure ``Session``; both hosts run them
through ``run_command`` so that a command means exactly the same wherever the
session steps. ``create_session`` is the one way either host builds a session.

``step`` (``STEP``: ``(count, wait=None) -> StepProgress``) is not in the table:
it runs in the background, in slices (``stepping.StepJob``), and each host
answers it when the Step ended or after ``wait`` seconds, whichever is first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twin_server.engine.session import Progress, Session, SessionSettings, SessionSnapshot
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import InvalidArgument, SessionFault

COMMANDS: dict[str, Callable[..., Any]] = {
    "start": Session.start,
    "suspend": Session.suspend,
    "resume": Session.resume,
    "halt": Session.halt,
    "reset": Session.reset,  # (parameters=None)
    "write": Session.write,  # (key, value) -> the coerced value
    "release": Session.release,  # (key) -> whether it was forced
    "release_all": Session.release_all,  # -> the keys that were forced
    "read": Session.read,  # (key) -> value
    "forced": Session.forced,  # -> {key: value}
    "set_parameters": Session.set_parameters,  # (overrides) -> the coerced overrides
    "set_realtime_factor": Session.set_realtime_factor,  # (factor)
    "snapshot": Session.snapshot,  # -> SessionSnapshot
    "restore": Session.restore,  # (snapshot)
    "statistics": Session.statistics,  # -> SessionStatistics
    "emit": Session.emit,  # (kind, message, severity)
    "alarm": Session.alarm,  # (name, action, event, comment, user) -> AlarmState
    "alarm_states": Session.alarm_states,  # -> (AlarmState, ...)
    "alarm_definitions": Session.alarm_definitions,  # -> (AlarmDefinition, ...)
    "inject_fault": Session.inject_fault,  # (FaultSpec) -> its id
    "clear_fault": Session.clear_fault,  # (id)
    "clear_faults": Session.clear_faults,  # -> the ids cleared
    "faults": Session.faults,  # -> [FaultState]
}


#: the host-level command that runs a Step in the background (module docstring)
STEP = "step"


def run_command(session: Session, command: str, args: tuple[Any, ...]) -> Any:
    """Run ``command`` on ``session``; InvalidArgument for an unknown command."""
    try:
        method = COMMANDS[command]
    except (KeyError, TypeError):
        raise InvalidArgument(
            f"{command!r} is not a session command (commands: {', '.join(COMMANDS)}, {STEP})"
        ) from None
    return method(session, *args)


def create_session(
    name: str,
    twin: TwinDefinition,
    settings: SessionSettings,
    *,
    snapshot: SessionSnapshot | None = None,
    fault: SessionFault | None = None,
    progress: Progress | None = None,
    keep_faulted: bool = False,
) -> Session:
    """A new session, restored from ``snapshot`` when given (as ``Session.fork`` does:
    the snapshot's run state decides Ready or Suspended), and halted on ``fault``
    when given (a session brought back after its worker died). A refusal closes
    what was built and raises; with ``keep_faulted``, a first Reset that fails
    does not (``Session``): the session is Halted on that fault, which wins over
    ``fault`` (it is the newer), and a snapshot is still restored if it can be."""
    session = Session(name, twin, settings, progress=progress, keep_faulted=keep_faulted)
    try:
        if snapshot is not None:
            session.restore(snapshot)
        if fault is not None and session.fault is None:
            session.halt_on_fault(fault)
    except BaseException:
        session.close()
        raise
    return session
