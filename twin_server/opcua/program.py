"""A session's run state as the OPC UA Program state machine (Part 10).

Each session object is typed ``ProgramStateMachineType`` (ns=0;i=2391), so a
generic client (UaExpert) recognises it as a program, and it carries the type's
mandatory members with browse names in namespace 0::

    Sessions/<session>                        ProgramStateMachineType
      CurrentState     LocalizedText          FiniteStateVariableType  ("Running")
        Id             NodeId                 ns=0;i=2402 (ProgramStateMachineType.Running)
        Number         UInt32                 13 (the state's StateNumber)
      LastTransition   LocalizedText          FiniteTransitionVariableType ("ReadyToRunning")
        Id             NodeId                 ns=0;i=2410
        Number         UInt32                 2 (the transition's TransitionNumber)
        TransitionTime DateTime               when it happened
      Deletable, AutoDelete, RecycleCount     properties (RecycleCount counts Resets)
      Start, Suspend, Resume, Halt, Reset     methods (browse names 0:Start, ...)

``ProgramState`` follows a session's events (``SessionEvent.kind``) and says
which transition each one was. Decisions where the session goes beyond Part 10:

* Step from Ready (Ready -> Suspended, which Part 10 does not have) is recorded
  as the two transitions it stands for, ReadyToRunning then RunningToSuspended:
  LastTransition shows the second, from its ``step_started`` event on. Step from
  Suspended changes nothing here. While a Step runs in the background the state
  stays Suspended (the session's StepsRemaining counts down); its end is a
  ``step_completed`` (or ``step_cancelled``) event, not a transition.
* Reset in Ready (Ready -> Ready) is no transition; RecycleCount still counts it.
* A fault halts the session from whatever state it was in: RunningToHalted,
  SuspendedToHalted or ReadyToHalted (a fault during Reset).
* Restore and Fork put a session into Suspended or Ready directly: from Halted
  that is HaltedToReady (to Suspended: no Part 10 transition, LastTransition
  stays), from Ready or Suspended as the pair of states says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from asyncua import ua

from twin_server.engine.session import RunState

_P = ua.ObjectIds

#: state -> (NodeId of the standard state, StateNumber)
STATES: dict[RunState, tuple[ua.NodeId, int]] = {
    RunState.READY: (ua.NodeId(_P.ProgramStateMachineType_Ready), 12),
    RunState.RUNNING: (ua.NodeId(_P.ProgramStateMachineType_Running), 13),
    RunState.SUSPENDED: (ua.NodeId(_P.ProgramStateMachineType_Suspended), 14),
    RunState.HALTED: (ua.NodeId(_P.ProgramStateMachineType_Halted), 11),
}


@dataclass(frozen=True, slots=True)
class Transition:
    name: str
    nodeid: ua.NodeId
    number: int


def _t(name: str, number: int) -> Transition:
    return Transition(name, ua.NodeId(getattr(_P, f"ProgramStateMachineType_{name}")), number)


#: (from, to) -> the standard transition
TRANSITIONS: dict[tuple[RunState, RunState], Transition] = {
    (RunState.HALTED, RunState.READY): _t("HaltedToReady", 1),
    (RunState.READY, RunState.RUNNING): _t("ReadyToRunning", 2),
    (RunState.RUNNING, RunState.HALTED): _t("RunningToHalted", 3),
    (RunState.RUNNING, RunState.READY): _t("RunningToReady", 4),
    (RunState.RUNNING, RunState.SUSPENDED): _t("RunningToSuspended", 5),
    (RunState.SUSPENDED, RunState.RUNNING): _t("SuspendedToRunning", 6),
    (RunState.SUSPENDED, RunState.HALTED): _t("SuspendedToHalted", 7),
    (RunState.SUSPENDED, RunState.READY): _t("SuspendedToReady", 8),
    (RunState.READY, RunState.HALTED): _t("ReadyToHalted", 9),
}

PROGRAM_STATE_MACHINE_TYPE = ua.NodeId(_P.ProgramStateMachineType)
FINITE_STATE_VARIABLE_TYPE = ua.NodeId(_P.FiniteStateVariableType)
FINITE_TRANSITION_VARIABLE_TYPE = ua.NodeId(_P.FiniteTransitionVariableType)

#: the Part 10 methods, whose browse names are in namespace 0
STANDARD_METHODS = frozenset({"Start", "Suspend", "Resume", "Halt", "Reset"})


@dataclass(frozen=True, slots=True)
class StateView:
    """What the state machine's nodes show."""

    state: RunState
    transition: Transition | None
    transition_time: datetime | None
    recycle_count: int


class ProgramState:
    """Tracks one session's state machine from its events (pure, no I/O)."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.transition: Transition | None = None
        self.transition_time: datetime | None = None
        self.recycle_count = 0

    def view(self) -> StateView:
        return StateView(self.state, self.transition, self.transition_time, self.recycle_count)

    def follow(self, kind: str, state: RunState) -> bool:
        """Take the session's event ``kind`` with the state it left the session in;
        True if the nodes need rewriting."""
        before = self.state
        if kind == "reset":
            self.recycle_count += 1
        if kind == "step_started" and before is RunState.READY:
            self._record(TRANSITIONS[(RunState.RUNNING, RunState.SUSPENDED)])
        elif state is not before:
            transition = TRANSITIONS.get((before, state))
            if transition is not None:
                self._record(transition)
        changed = state is not before or kind == "reset"
        self.state = state
        return changed or kind == "step_started"

    def _record(self, transition: Transition) -> None:
        self.transition = transition
        self.transition_time = datetime.now(UTC)
