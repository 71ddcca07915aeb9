"""The run-control methods of a session node: Start, Suspend, Resume, Halt, Reset, Step.

asyncua's MethodService turns any exception from a callback into
BadUnexpectedError, so callbacks here never raise: they return a
``ua.CallMethodResult`` that MethodService passes through unchanged. Its
StatusCode says what went wrong (BadInvalidState for the wrong run state,
BadInvalidArgument for a bad argument value or type, BadArgumentsMissing /
BadTooManyArguments for a wrong count); for an argument, InputArgumentResults
names the offending one and InputArgumentDiagnosticInfos carries the message
as AdditionalInfo. Every refusal is also logged with its message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from asyncua import ua

from twin_server.engine.session import Session
from twin_server.errors import InvalidArgument, OutOfRange, TwinServerError, TypeMismatch
from twin_server.opcua.status import GOOD, diagnostic, status_code, status_of
from twin_server.opcua.tree import MAX_STEP_COUNT, METHODS, MethodSpec

log = structlog.get_logger(__name__)

#: ticks taken between two yields to the event loop during a long Step
STEP_CHUNK = 1000

_INTEGER_TYPES = frozenset({
    ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
    ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64,
})


class ArgumentError(Exception):
    """One input argument refused: its index, status and message."""

    def __init__(self, index: int, error: TwinServerError) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


MethodCallback = Callable[..., Awaitable[ua.CallMethodResult]]


@dataclass(frozen=True, slots=True)
class MethodStatistics:
    calls: int
    refused: int


class SessionMethods:
    """The method callbacks of one session; ``changed`` runs after every call so
    that State, StepCount and SimTime show the outcome at once."""

    def __init__(self, session: Session, changed: Callable[[], Awaitable[None]]) -> None:
        self.session = session
        self._changed = changed
        self.calls = 0
        self.refused = 0

    def callbacks(self) -> dict[str, MethodCallback]:
        actions: dict[str, Callable[..., Awaitable[None]]] = {
            "Start": self._run(self.session.start),
            "Suspend": self._run(self.session.suspend),
            "Resume": self._run(self.session.resume),
            "Halt": self._run(self.session.halt),
            "Reset": self._run(self.session.reset),
            "Step": self._step,
        }
        return {spec.name: self._callback(spec, actions[spec.name]) for spec in METHODS}

    @staticmethod
    def _run(action: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            action()
        return run

    async def _step(self, count: int) -> None:
        if not 1 <= count <= MAX_STEP_COUNT:
            raise ArgumentError(0, OutOfRange(
                f"Step Count must be within [1, {MAX_STEP_COUNT}] (got {count})"))
        # the first chunk checks the run state; later ones yield to the loop so a
        # million ticks do not stall the server (a Reset in between ends the Step)
        done = 0
        while done < count:
            chunk = min(STEP_CHUNK, count - done)
            self.session.step(chunk)
            done += chunk
            if done < count:
                await asyncio.sleep(0)

    def _callback(self, spec: MethodSpec,
                  action: Callable[..., Awaitable[None]]) -> MethodCallback:
        async def call(parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
            self.calls += 1
            result = ua.CallMethodResult()
            try:
                values = _check_arguments(spec, args)
                await action(*values)
            except ArgumentError as exc:
                result = self._refuse_argument(spec, args, exc)
            except TwinServerError as exc:
                result.StatusCode = status_of(exc)
                self._log_refused(spec.name, result.StatusCode, str(exc))
            except Exception:
                self.refused += 1
                log.exception("method_failed", session=self.session.name, method=spec.name)
                result.StatusCode = ua.StatusCode(ua.StatusCodes.BadInternalError)
            else:
                log.info("method_called", session=self.session.name, method=spec.name,
                         arguments=[a.Value for a in args] or None,
                         state=str(self.session.state))
            if not result.InputArgumentResults:
                result.InputArgumentResults = [GOOD for _ in args]
            await self._changed()
            return result
        return call

    def _refuse_argument(self, spec: MethodSpec, args: Sequence[ua.Variant],
                         exc: ArgumentError) -> ua.CallMethodResult:
        message = str(exc)
        arg_status = status_of(exc.error)
        results = [GOOD for _ in args]
        diagnostics = [ua.DiagnosticInfo() for _ in args]
        if exc.index < len(args):
            results[exc.index] = arg_status
            diagnostics[exc.index] = diagnostic(message)
        # a wrong count has its own codes; a wrong value or type is a bad argument
        if isinstance(exc.error, InvalidArgument) and exc.index >= len(args):
            call_status = status_code("BadArgumentsMissing")
        elif isinstance(exc.error, InvalidArgument) and len(args) > len(spec.inputs):
            call_status = status_code("BadTooManyArguments")
        else:
            call_status = status_code("BadInvalidArgument")
        self._log_refused(spec.name, call_status, message)
        return ua.CallMethodResult(StatusCode=call_status, InputArgumentResults=results,
                                   InputArgumentDiagnosticInfos=diagnostics)

    def _log_refused(self, method: str, status: ua.StatusCode, message: str) -> None:
        self.refused += 1
        log.info("method_refused", session=self.session.name, method=method,
                 status=status.name, reason=message)


def _check_arguments(spec: MethodSpec, args: Sequence[ua.Variant]) -> list[Any]:
    """The Python values of ``args``, or ArgumentError naming the first bad one."""
    if len(args) < len(spec.inputs):
        missing = ", ".join(a.name for a in spec.inputs[len(args):])
        raise ArgumentError(len(args), InvalidArgument(
            f"{spec.name} takes {len(spec.inputs)} argument(s); missing {missing}"))
    if len(args) > len(spec.inputs):
        raise ArgumentError(len(spec.inputs), InvalidArgument(
            f"{spec.name} takes {len(spec.inputs)} argument(s) (got {len(args)})"))
    values: list[Any] = []
    for index, (arg, variant) in enumerate(zip(spec.inputs, args, strict=True)):
        if arg.vtype in _INTEGER_TYPES:
            # clients often send a plain integer as Int64; any integer type will do
            if variant.VariantType not in _INTEGER_TYPES or variant.is_array:
                raise ArgumentError(index, TypeMismatch(
                    f"{spec.name} argument {arg.name} takes an integer "
                    f"({arg.vtype.name}) (got {variant.VariantType.name} {variant.Value!r})"))
        elif variant.VariantType != arg.vtype:
            raise ArgumentError(index, TypeMismatch(
                f"{spec.name} argument {arg.name} takes a {arg.vtype.name} "
                f"(got {variant.VariantType.name})"))
        values.append(variant.Value)
    return values


def method_statistics(methods: Sequence[SessionMethods]) -> MethodStatistics:
    return MethodStatistics(sum(m.calls for m in methods), sum(m.refused for m in methods))
