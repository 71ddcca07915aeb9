"""The ``[server.security]`` and ``[server.limits]`` tables of a config file.

Secure by default: without a ``[server.security]`` table the server offers only
encrypted endpoints (Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss,
each SignAndEncrypt) and anonymous clients may only read. A config opts in to
the unencrypted endpoint and to anonymous operation, as the demo does::

    [server.security]
    policies = ["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
    modes = ["Sign", "SignAndEncrypt"]
    anonymous = "operator"          # "off", "viewer", "operator" or "admin"
    users_file = "users.json"       # relative to server.state_dir
    pki_dir = "pki"                 # relative to server.state_dir

    [server.limits]
    max_client_sessions = 50
    max_sessions_per_address = 25   # default: half of max_client_sessions
    max_session_timeout = 60.0      # s; longer requested timeouts are revised down
    max_message_size = 4194304
    max_history_values_per_request = 10000
    max_argument_size = 65536       # a method's String argument (JSON parameters, names)
    max_definition_size = 65536     # DefineTwin's TOML
    max_nesting_depth = 32          # arrays and tables within each other in an argument

Everything here is checked when the config loads; ``twin_server.security``
applies it when the OPC UA server starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from twin_server.config.nesting import DEFAULT_MAX_DEPTH, MAX_DEPTH

Policy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
Mode = Literal["Sign", "SignAndEncrypt"]
AnonymousAccess = Literal["off", "viewer", "operator", "admin"]

SECURE_POLICIES: tuple[Policy, ...] = (
    "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
#: other spellings taken for a policy (asyncua's class names), by the canonical one
#: (the name in the policy's URI, http://opcfoundation.org/UA/SecurityPolicy#<name>)
POLICY_ALIASES = {"Aes128Sha256RsaOaep": "Aes128_Sha256_RsaOaep",
                  "Aes256Sha256RsaPss": "Aes256_Sha256_RsaPss"}


def canonical_policy(value: object) -> object:
    """A policy name as written in a config, in its canonical spelling (a pydantic
    before-validator: anything else passes on unchanged, to be refused by the type)."""
    if isinstance(value, str):
        return POLICY_ALIASES.get(value, value)
    if isinstance(value, list | tuple):
        return tuple(POLICY_ALIASES.get(v, v) if isinstance(v, str) else v for v in value)
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class SecurityConfig(_Frozen):
    """Endpoints, the server's certificate, trust, users and anonymous access."""

    policies: tuple[Policy, ...] = Field(
        SECURE_POLICIES, min_length=1,
        description="security policies offered; 'None' is the unencrypted endpoint (opt-in)")
    modes: tuple[Mode, ...] = Field(
        ("SignAndEncrypt",), min_length=1,
        description="message security modes each secure policy is offered with")
    anonymous: AnonymousAccess = Field(
        "viewer", description="what a client without a user name may do: 'off' (log in "
                              "required), 'viewer' (read, browse, subscribe, history), "
                              "'operator' (also write inputs and parameters, run sessions), "
                              "'admin' (everything; only for a demo on loopback)")
    users_file: str = Field(
        "users.json", description="the users file (twin-server user add), relative to state_dir")
    pki_dir: str = Field(
        "pki", description="OPC UA Part 12 certificate store (own, trusted, issuers, rejected), "
                           "relative to state_dir")
    hostnames: tuple[str, ...] = Field(
        (), description="extra DNS names and IP addresses put in the server certificate; the "
                        "endpoint's host and this machine's name are always in it")
    certificate_key_size: Literal[2048, 3072, 4096] = 2048
    certificate_days: int = Field(
        1825, ge=30, le=36500, description="validity of a certificate created on first start")
    max_rejected: int = Field(
        100, ge=0, le=100_000,
        description="most refused client certificates kept in rejected/certs (oldest go first)")

    @field_validator("policies", "modes", "hostnames", mode="before")
    @classmethod
    def _array_as_tuple(cls, value: object) -> object:
        # TOML arrays arrive as lists; strict mode takes only tuples for a tuple field
        return tuple(value) if isinstance(value, list) else value

    @field_validator("policies", mode="before")
    @classmethod
    def _canonical(cls, value: object) -> object:
        return canonical_policy(value)

    @field_validator("policies", "modes")
    @classmethod
    def _no_duplicates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"each entry at most once (got {list(value)})")
        return value

    @property
    def secure_policies(self) -> tuple[Policy, ...]:
        return tuple(p for p in self.policies if p != "None")

    @property
    def allows_none(self) -> bool:
        return "None" in self.policies


class LimitsConfig(_Frozen):
    """Bounds on what clients may hold, so that a hostile or broken one cannot
    exhaust the server."""

    max_connections: int = Field(
        100, ge=1, le=100_000, description="TCP connections at once, before activation too")
    max_client_sessions: int = Field(
        50, ge=1, le=100_000, description="activated OPC UA client sessions at once")
    max_subscriptions: int = Field(500, ge=1, le=1_000_000, description="in the whole server")
    max_subscriptions_per_session: int = Field(20, ge=1, le=100_000)
    max_monitored_items: int = Field(50_000, ge=1, le=10_000_000,
                                     description="in the whole server")
    max_monitored_items_per_subscription: int = Field(5_000, ge=1, le=1_000_000)
    max_monitored_item_queue_size: int = Field(1_000, ge=1, le=100_000)
    max_nodes_per_request: int = Field(
        10_000, ge=1, le=1_000_000,
        description="operations one request may ask for: nodes to read, write, browse, "
                    "register or translate, methods to call, monitored items to create, "
                    "modify or delete (more: BadTooManyOperations for the whole request; "
                    "Server/ServerCapabilities/OperationLimits shows it)")
    max_message_size: int = Field(
        4 * 1024 * 1024, ge=64 * 1024, le=100 * 1024 * 1024,
        description="bytes of one request, all its chunks together")
    max_pending_messages: int = Field(
        100, ge=1, le=100_000, description="requests queued per connection before it is closed")
    activation_timeout: float = Field(
        10.0, gt=0, le=3600,
        description="seconds a connection may stay without an activated session")
    max_session_timeout: float = Field(
        60.0, ge=10, le=86_400,
        description="longest session timeout a client may ask for, s: a session whose client "
                    "is gone holds its place (and subscriptions) this long")
    max_sessions_per_address: int | None = Field(
        None, ge=1, le=100_000,
        description="activated client sessions one client address may hold; default half of "
                    "max_client_sessions (at least 1), so that one host cannot take them all")
    abandoned_session_idle: float = Field(
        30.0, gt=0, le=86_400,
        description="seconds without a request after which a session counts as abandoned: a "
                    "new client of the same address may take its place when the address or "
                    "the server is at its limit (at once when its connection is gone)")
    log_burst: int = Field(
        20, ge=1, le=100_000,
        description="records per minute each asyncua log message, and each of our events "
                    "a client can cause (call_refused, method_refused, login_failed, ...), "
                    "may emit; the rest are counted and summarised")
    max_argument_size: int = Field(
        64 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="bytes (UTF-8) of one String argument of a method: the Parameters of "
                    "CreateSession, SetParameters and Reset, names, snapshot ids (DefineTwin's "
                    "Definition has max_definition_size)")
    max_definition_size: int = Field(
        64 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="bytes (UTF-8) of the twin definition (TOML) given to DefineTwin")
    max_nesting_depth: int = Field(
        DEFAULT_MAX_DEPTH, ge=2, le=MAX_DEPTH,
        description="levels of arrays and objects (JSON) or tables and arrays (TOML) nested "
                    "in a method argument")
    max_history_values_per_request: int = Field(
        10_000, ge=100, le=1_000_000,
        description="values (samples, intervals or events) one HistoryRead answers in total "
                    "over all its nodes; the rest come through continuation points")
    max_history_nodes_per_request: int = Field(
        100, ge=1, le=10_000,
        description="nodes one HistoryRead may name (more: BadTooManyOperations); at most "
                    "max_history_values_per_request")
    max_history_continuation_points: int = Field(
        200, ge=1, le=65_535,
        description="HistoryRead continuation points each client session may hold; a new "
                    "request frees the oldest of earlier requests when it needs them")

    @model_validator(mode="after")
    def _share_within_limit(self) -> LimitsConfig:
        if self.max_sessions_per_address is not None \
                and self.max_sessions_per_address > self.max_client_sessions:
            raise ValueError(
                f"max_sessions_per_address ({self.max_sessions_per_address}) exceeds "
                f"max_client_sessions ({self.max_client_sessions}); lower it or leave it out "
                f"(default: half of max_client_sessions)")
        return self

    @property
    def sessions_per_address(self) -> int:
        """``max_sessions_per_address``, or its default."""
        if self.max_sessions_per_address is not None:
            return self.max_sessions_per_address
        return max(1, self.max_client_sessions // 2)

    @model_validator(mode="after")
    def _history_nodes_within_values(self) -> LimitsConfig:
        if self.max_history_nodes_per_request > self.max_history_values_per_request:
            raise ValueError(
                f"max_history_nodes_per_request ({self.max_history_nodes_per_request}) must "
                f"not exceed max_history_values_per_request "
                f"({self.max_history_values_per_request}): every node of a request gets at "
                "least one value of the request's share; lower the first or raise the second")
        return self
