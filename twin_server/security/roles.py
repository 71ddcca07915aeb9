"""Roles and what each may do: the one table every enforcement point reads.

    viewer     read, browse, subscribe, read history (anonymous clients by default)
    operator   also write inputs, states and parameters, RealtimeFactor, and call the
               run-control methods (Start, Suspend, Resume, Halt, Reset, Step,
               ReleaseInput, ReleaseInputs,
               SetParameters, Snapshot, Restore), RunScenario and RunCampaign
    admin      also create, fork and delete sessions, define and remove twins, reload
               the config, and write or call anything else

Decisions are made on the dotted string NodeIds of our namespace (DESIGN.md, "The
address space"): a variable's kind is the folder it sits in
(``Sessions.<s>.Components.<c>.Inputs.<v>``), a method is known by its last
path element. A method or writable node this table does not know is admin-only,
so that a method added later is never open by accident. In namespace 0 only the
read-like standard methods are open to viewers; writes to namespace 0 (server
configuration nodes) are admin-only.

Pure functions of (role, NodeId): no I/O, no state, cheap enough for every item
of every request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole


class Role(enum.IntEnum):
    """Ordered: each role may do everything the ones below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            names = ", ".join(r.name.lower() for r in cls)
            raise ValueError(f"unknown role {text!r} (one of {names})") from None

    def __str__(self) -> str:
        return self.name.lower()


#: asyncua's own coarse role, which its services check (node management: Admin only)
_ASYNCUA_ROLES = {Role.VIEWER: UserRole.User, Role.OPERATOR: UserRole.User,
                  Role.ADMIN: UserRole.Admin}


@dataclass
class TwinUser(User):  # type: ignore[misc]  # asyncua: untyped to mypy
    """An authenticated client: asyncua's User with our role.

    ``name`` is None for an anonymous client; ``access`` is what it may do.
    """

    access: Role = Role.VIEWER

    @classmethod
    def of(cls, name: str | None, access: Role) -> TwinUser:
        anonymous = name is None
        role = UserRole.Anonymous if anonymous and access < Role.ADMIN else _ASYNCUA_ROLES[access]
        return cls(role=role, name=name, access=access)

    @property
    def anonymous(self) -> bool:
        return self.name is None

    def __str__(self) -> str:
        return f"{self.name or '<anonymous>'} ({self.access})"


def role_of(user: object) -> Role:
    """Our role of any asyncua user: a TwinUser's own; asyncua's internal Admin
    (the server itself) is admin; anything else (asyncua's default user) viewer."""
    if isinstance(user, TwinUser):
        return user.access
    if isinstance(user, User) and user.role == UserRole.Admin:
        return Role.ADMIN
    return Role.VIEWER


#: last path element of a method NodeId in our namespace -> lowest role that may call it
METHOD_ROLES: dict[str, Role] = {
    **{name: Role.OPERATOR for name in (
        "Start", "Suspend", "Resume", "Halt", "Reset", "Step", "SetParameters",
        "Snapshot", "Restore", "ReleaseInput", "ReleaseInputs",
        "InjectFault", "ClearFault", "ClearFaults", "InjectLinkFault", "ClearLinkFault",
        "RunScenario", "RunCampaign")},
    **{name: Role.ADMIN for name in (
        "CreateSession", "DeleteSession", "Fork", "DefineTwin", "RemoveTwin", "ReloadConfig")},
}

#: namespace-0 methods that only read: Server.GetMonitoredItems, ConditionRefresh(2)
_READ_METHODS_NS0 = frozenset({
    ua.ObjectIds.Server_GetMonitoredItems,
    ua.ObjectIds.ConditionType_ConditionRefresh,
    ua.ObjectIds.ConditionType_ConditionRefresh2,
})

#: folders below a component whose variables an operator may write
_WRITABLE_KINDS = frozenset({"Inputs", "States", "Parameters"})
#: session-level scalars an operator may write
_WRITABLE_SCALARS = frozenset({"RealtimeFactor"})


#: namespace-0 methods of Part 9 conditions an operator calls on our alarms
_OPERATOR_METHODS_NS0 = frozenset({
    ua.ObjectIds.AcknowledgeableConditionType_Acknowledge,
    ua.ObjectIds.AcknowledgeableConditionType_Confirm,
    ua.ObjectIds.ConditionType_AddComment,
    ua.ObjectIds.ConditionType_Enable,
    ua.ObjectIds.ConditionType_Disable,
    # ShelvingState's TimedShelve, OneShotShelve, Unshelve: the type's, the instance
    # declaration's of AlarmConditionType
    ua.ObjectIds.ShelvedStateMachineType_TimedShelve,
    ua.ObjectIds.ShelvedStateMachineType_OneShotShelve,
    ua.ObjectIds.ShelvedStateMachineType_Unshelve,
    ua.ObjectIds.AlarmConditionType_ShelvingState_TimedShelve,
    ua.ObjectIds.AlarmConditionType_ShelvingState_OneShotShelve,
    ua.ObjectIds.AlarmConditionType_ShelvingState_Unshelve,
})


def method_role(method: ua.NodeId, namespace: int) -> Role:
    """The lowest role that may call ``method``."""
    if method.NamespaceIndex == 0:
        if method.Identifier in _OPERATOR_METHODS_NS0:
            return Role.OPERATOR
        return Role.VIEWER if method.Identifier in _READ_METHODS_NS0 else Role.ADMIN
    if method.NamespaceIndex != namespace or not isinstance(method.Identifier, str):
        return Role.ADMIN
    return METHOD_ROLES.get(method.Identifier.rpartition(".")[2], Role.ADMIN)


def write_role(node: ua.NodeId, namespace: int,
               attribute: int = ua.AttributeIds.Value) -> Role:
    """The lowest role that may write ``attribute`` of ``node``."""
    if (attribute != ua.AttributeIds.Value or node.NamespaceIndex != namespace
            or not isinstance(node.Identifier, str)):
        return Role.ADMIN
    parts = node.Identifier.split(".")
    # Sessions.<s>.Components.<c>.<Kind>.<var>
    if (len(parts) == 6 and parts[0] == "Sessions" and parts[2] == "Components"
            and parts[4] in _WRITABLE_KINDS):
        return Role.OPERATOR
    # Sessions.<s>.RealtimeFactor
    if len(parts) == 3 and parts[0] == "Sessions" and parts[2] in _WRITABLE_SCALARS:
        return Role.OPERATOR
    return Role.ADMIN


def may_call(user: object, method: ua.NodeId, namespace: int) -> bool:
    """May ``user`` call ``method``? (``namespace``: our namespace index)"""
    return role_of(user) >= method_role(method, namespace)


def may_write(user: object, node: ua.NodeId, namespace: int,
              attribute: int = ua.AttributeIds.Value) -> bool:
    """May ``user`` write ``attribute`` (default Value) of ``node``?"""
    return role_of(user) >= write_role(node, namespace, attribute)


# -- services ------------------------------------------------------------------------

def _ids(*names: str) -> frozenset[ua.NodeId]:
    return frozenset(ua.NodeId(getattr(ua.ObjectIds, f"{n}Request_Encoding_DefaultBinary"))
                     for n in names)


#: services any activated client may use (Write and Call are then checked per item)
VIEWER_SERVICES = _ids(
    "CloseSession", "Read", "Write", "Call", "Browse", "BrowseNext",
    "TranslateBrowsePathsToNodeIds", "RegisterNodes", "UnregisterNodes",
    "CreateSubscription", "ModifySubscription", "DeleteSubscriptions",
    "TransferSubscriptions", "SetPublishingMode", "Publish", "Republish",
    "CreateMonitoredItems", "ModifyMonitoredItems", "DeleteMonitoredItems",
    "SetMonitoringMode", "SetTriggering", "HistoryRead", "GetEndpoints", "FindServers",
    "CloseSecureChannel",
)
#: services only an admin may use (changes to the address space itself)
ADMIN_SERVICES = _ids("AddNodes", "DeleteNodes", "AddReferences", "DeleteReferences",
                      "HistoryUpdate")


def may_use_service(user: object, service: ua.NodeId) -> bool:
    """May ``user`` send a request of type ``service`` (its binary encoding NodeId)?
    Services not listed (Query, RegisterServer, ...) are refused to everyone."""
    role = role_of(user)
    # (a viewer's Write gets through to ``GuardedAttributeService``, which answers each
    # of its writes: BadUserAccessDenied, or BadNotWritable for a read-only node; a
    # ServiceFault for the whole request told a client less, and node-opcua reports it
    # as a failed request rather than per node)
    if service in VIEWER_SERVICES:
        return True
    return service in ADMIN_SERVICES and role >= Role.ADMIN
