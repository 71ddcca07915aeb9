"""Every exception twin-server raises on purpose, and the OPC UA status each maps to.

    TwinServerError                  base; ``status`` names the OPC UA status code
    ├── ConfigError                  one problem in a config: file, key path, message
    ├── ConfigErrors                 (an ExceptionGroup) every ConfigError of one load
    ├── ValueRejected                a write or argument refused; nothing was changed
    │   ├── OutOfRange               BadOutOfRange: outside the variable's range
    │   ├── TypeMismatch             BadTypeMismatch: a value of the wrong type
    │   ├── NotWritable              BadNotWritable: an output, or a fixed parameter while running
    │   ├── InvalidArgument          BadInvalidArgument: a malformed method argument
    │   ├── NotFound                 BadNotFound: no such session, component or variable
    │   ├── AlreadyExists            BadBrowseNameDuplicated: a session or twin name is taken
    │   ├── ResourceExhausted        BadResourceUnavailable: server.max_sessions reached
    │   └── NotSupported             BadNotSupported: an FMU without get/set state, ...
    ├── InvalidState                 BadInvalidState: a method called in the wrong run state
    │   └── AlarmRefused             an alarm method its condition's state refuses (Part 9
    │                                codes: BadConditionBranchAlreadyAcked, BadEventIdUnknown, ...)
    ├── FMIError                     an FMI call returned Error/Fatal: FMI function and status
    └── SessionFault                 a model raised or produced NaN/inf: session, component, tick
        └── WorkerCrashed            the worker process stepping the session died: its signal

The engine and models raise these; the OPC UA adapter translates ``status`` into
a ``ua.StatusCode`` for the one node or call concerned. Keeping the status as a
name here keeps this module (and everything that imports it) free of asyncua.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TwinServerError(Exception):
    """Base of twin-server's own exceptions."""

    status: str = "BadInternalError"


class ConfigError(TwinServerError):
    """One problem in a config file, located by file and dotted key path.

    ``str()`` reads ``configs/demo.toml: twins.tank.components.tank.parameters.area:
    must be > 0 (got -1.0)``.
    """

    status = "BadConfigurationError"

    def __init__(self, message: str, *, path: str = "", file: str | None = None) -> None:
        self.message = message
        self.path = path
        self.file = file
        super().__init__(self.__str__())

    def with_context(self, *, file: str | None = None, prefix: str = "") -> ConfigError:
        """Return a copy located in ``file`` with ``prefix`` put before the key path."""
        path = ".".join(p for p in (prefix, self.path) if p)
        return ConfigError(self.message, path=path, file=file if file is not None else self.file)

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.path) if p)
        return f"{where}: {self.message}" if where else self.message


class ConfigErrors(ExceptionGroup[ConfigError]):
    """Every problem found in one load, reported together (never only the first)."""

    status = "BadConfigurationError"

    def __new__(cls, errors: Sequence[ConfigError]) -> ConfigErrors:
        count = len(errors)
        noun = "error" if count == 1 else "errors"
        return super().__new__(cls, f"{count} config {noun}", list(errors))

    def derive(self, excs: Sequence[ConfigError]) -> ConfigErrors:  # type: ignore[override]
        return ConfigErrors(excs)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.exceptions)


class ValueRejected(TwinServerError):
    """A write, argument or call refused before anything changed."""

    status = "BadInvalidArgument"


class OutOfRange(ValueRejected):
    """A value outside the variable's declared range."""

    status = "BadOutOfRange"


class TypeMismatch(ValueRejected):
    """A value whose type the variable cannot take."""

    status = "BadTypeMismatch"


class NotWritable(ValueRejected):
    """A write to an output, or to a fixed parameter while the session runs."""

    status = "BadNotWritable"


class InvalidArgument(ValueRejected):
    """A malformed method argument (bad JSON, an unknown name, a bad count)."""

    status = "BadInvalidArgument"


class NotFound(ValueRejected):
    """No session, component or variable of that name."""

    status = "BadNotFound"


class NotSupported(ValueRejected):
    """A call the model cannot serve (Snapshot of an FMU that cannot get and set its state)."""

    status = "BadNotSupported"


class AlreadyExists(ValueRejected):
    """A session or twin of that name exists already."""

    status = "BadBrowseNameDuplicated"


class ResourceExhausted(ValueRejected):
    """A configured limit reached (``server.max_sessions``)."""

    status = "BadResourceUnavailable"


class InvalidState(TwinServerError):
    """A run-state transition that the session's current state does not allow."""

    status = "BadInvalidState"

    def __init__(self, message: str, *, session: str = "", state: str = "") -> None:
        self.session = session
        self.state = state
        super().__init__(message)


class AlarmRefused(InvalidState):
    """An alarm method (Acknowledge, Confirm, AddComment, Enable, Disable) that the
    condition's state refuses; ``status`` is the Part 9 code for it."""

    def __init__(self, message: str, *, status: str = "BadInvalidState") -> None:
        super().__init__(message)
        self.status = status


class FMIError(TwinServerError):
    """An FMI function returned Error or Fatal; raised from a model's step, so the
    session turns it into a SessionFault of that session alone."""

    status = "BadInternalError"

    def __init__(self, message: str, *, function: str = "", fmi_status: str = "") -> None:
        self.function = function
        self.fmi_status = fmi_status
        super().__init__(message)


class SessionFault(TwinServerError):
    """A model raised or produced a non-finite value; its session halts, the rest run on."""

    status = "BadInternalError"

    def __init__(
        self, message: str, *, session: str = "", component: str = "", tick: int = -1,
        cause: Any = None,
    ) -> None:
        self.session = session
        self.component = component
        self.tick = tick
        self.cause = cause
        super().__init__(message)


class WorkerCrashed(SessionFault):
    """The worker process that stepped a session died (a signal, an exit) or was
    killed because it hung; the session halts. ``signal`` names the signal
    (``SIGSEGV``), empty for a plain exit (``exit_code``); ``component`` is the one
    being stepped at that moment, empty between ticks."""

    def __init__(
        self, message: str, *, session: str = "", component: str = "", tick: int = -1,
        signal: str = "", exit_code: int | None = None, pid: int = 0, hung: bool = False,
    ) -> None:
        self.signal = signal
        self.exit_code = exit_code
        self.pid = pid
        self.hung = hung
        super().__init__(message, session=session, component=component, tick=tick)
