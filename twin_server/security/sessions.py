"""Client sessions that stay their client's, across channels and network blips.

* **Authentication tokens.** asyncua numbers them (``i=1001``, ``i=1002``, ...):
  anyone could name another client's session. Each client session gets 32 random
  bytes instead (a ByteString NodeId, as the OPC Foundation's .NET stack does;
  Part 4 asks for at least 128 bits); the SessionId (public, shown in diagnostics
  and audit logs) stays asyncua's number.
* **Reactivation on a new channel** (Part 4, 5.7.3). A connection that did not create
  a session may activate it only if the session was activated before, the new
  channel is secure (Sign or SignAndEncrypt) and opened with the certificate the
  session was created with (asyncua then checks the ClientSignature made with its
  key), and the client logs in as the session's user. Anything else is answered
  BadSessionIdInvalid, as for a token that does not exist, before asyncua binds the
  session to the connection: the session, its user and its subscriptions stay its
  owner's. A None channel never takes over a session: its token travels in clear text.
* **Publishing across a blip.** A subscription whose connection died no longer
  hands notifications to that connection's Publish requests (they are dropped):
  they wait in the subscription until a Publish request arrives on the session's
  new channel, and those already sent can be had again with Republish. A failure to
  publish (uvloop raises on a write to a closed transport) no longer ends the
  subscription's loop for good.
* **Subscriptions are their session's.** asyncua serves all sessions from one table
  of subscriptions numbered in sequence; a client's Publish acknowledgements,
  Republish, DeleteSubscriptions, SetPublishingMode and the monitored-item services
  now reach only its own session's (another's is BadSubscriptionIdInvalid, as one
  that does not exist), and Publish without any of its own is BadNoSubscription.
* **TransferSubscriptions** (Part 4, 5.14.7) passes a subscription to the calling
  session only for the same named user, or, for an anonymous one, the same
  application (the ApplicationUri of a verified certificate) on secure channels on
  both sides; otherwise BadUserAccessDenied for that subscription. A transferred
  subscription publishes on the new session's connection, with the current values
  first if the client asks for them (SendInitialValues).

asyncua 2.1 internals relied on (each also named where it is used):

* ``InternalServer.create_session`` and ``lookup_external_session`` (wrapped on the
  instance), ``register_external_session`` / ``unregister_external_session`` and
  ``_external_sessions`` (sessions by token), ``InternalSession.auth_token``,
  ``session_id``, ``user``, ``is_activated``.
* ``UaProcessor`` (ActivateSession from a connection without a session): looks the
  token up, binds the session to the connection and points the session's
  subscriptions at the connection *before* it verifies the ClientSignature and the
  identity; so the channel is checked in the lookup, and the subscriptions are put
  back if the identity is then refused.
* ``SubscriptionService.create_subscription``, ``transfer_subscriptions``,
  ``publish``, ``republish``, ``delete_subscriptions``, ``set_publishing_mode``,
  ``create_monitored_items``, ``modify_monitored_items``, ``set_monitoring_mode``,
  ``delete_monitored_items``, ``modify_subscription`` (wrapped on the instance; the
  session's own methods call them) and ``subscriptions``.
* ``InternalSubscription.publish_results`` (wrapped on each instance),
  ``pub_request_callback`` / ``pub_result_callback`` (bound methods of the
  connection's ``UaProcessor``: ``__self__`` is the connection), ``session_id``,
  ``data.SubscriptionId``.
* ``MonitoredItemService._monitored_items`` (``read_value_id``, ``callback_handle``,
  ``client_handle``, ``mode``, ``queue_size``) and ``aspace``, and
  ``InternalSubscription.enqueue_datachange_event`` (SendInitialValues).
* ``UaProcessor._transport``, ``_publish_requests``, ``_publish_results_subs`` and
  ``get_publish_request``.
"""

from __future__ import annotations

import asyncio
import contextvars
import secrets
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from asyncua import ua
from asyncua.common.utils import ServiceError

from twin_server.opcua.patches import internals
from twin_server.security.guard import CHANNEL, CONNECTION, Channel, Guard
from twin_server.security.pki import application_uris
from twin_server.security.roles import TwinUser

log = structlog.get_logger(__name__)

#: random bytes in an authentication token (Part 4: at least 128 bits)
TOKEN_BYTES = 32


def new_authentication_token() -> ua.NodeId:
    """An unguessable AuthenticationToken: a ByteString NodeId of TOKEN_BYTES random bytes."""
    return ua.NodeId(secrets.token_bytes(TOKEN_BYTES), 0, ua.NodeIdType.ByteString)


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """An immutable snapshot of sessions moved between channels and subscriptions."""

    reactivations: int
    reactivations_refused: int
    transfers: int
    transfers_refused: int
    publish_requests_dropped: int
    publish_failures: int


@dataclass(slots=True)
class _Counters:
    reactivations: int = 0
    reactivations_refused: int = 0
    transfers: int = 0
    transfers_refused: int = 0
    publish_requests_dropped: int = 0
    publish_failures: int = 0


@dataclass(slots=True)
class _Reactivation:
    """A session looked up by a new connection, until its ActivateSession is answered:
    where its subscriptions published before (asyncua has already pointed them at
    the new connection, and they go back if the activation fails)."""

    session: Any
    callbacks: list[tuple[Any, Any, Any]]  # (subscription, result callback, request callback)

    def restore(self) -> None:
        for sub, result_callback, request_callback in self.callbacks:
            sub.pub_result_callback = result_callback
            sub.pub_request_callback = request_callback


#: the reactivation under way on this connection (each connection's messages are
#: processed in one asyncio task of their own, as for guard.CHANNEL)
_REACTIVATION: contextvars.ContextVar[_Reactivation | None] = contextvars.ContextVar(
    "twin_server_reactivation", default=None)


def _identity_name(token: Any) -> object:
    """The user an ActivateSession's identity token names: None for anonymous."""
    if token is None or isinstance(token, ua.AnonymousIdentityToken):
        return None
    if isinstance(token, ua.ExtensionObject) and token.TypeId == ua.NodeId(ua.ObjectIds.Null):
        return None  # asyncua takes an empty token for anonymous (Part 4, 5.7.3)
    if isinstance(token, ua.UserNameIdentityToken):
        return token.UserName
    return token  # another kind of identity: never the session's user


@dataclass(slots=True)
class Sessions:
    """The session hooks of one server (``install``), and what they did."""

    iserver: Any
    guard: Guard
    counters: _Counters = field(default_factory=_Counters)
    #: the channel each client session was created on
    _origins: weakref.WeakKeyDictionary[Any, Channel | None] = field(
        default_factory=weakref.WeakKeyDictionary)

    def install(self) -> None:
        """Wrap the asyncua server's session and subscription entry points (once)."""
        iserver = self.iserver
        create_session = iserver.create_session
        lookup = iserver.lookup_external_session

        def create(name: Any, *args: Any, **kwargs: Any) -> Any:
            session = create_session(name, *args, **kwargs)
            if kwargs.get("external"):
                self.created(session)
                self.guard.session_created(session, name)
            return session

        def lookup_external_session(token: Any) -> Any:
            session = self.reactivating(lookup(token))
            self.guard.session_looked_up(session)
            return session

        iserver.create_session = create
        iserver.lookup_external_session = lookup_external_session
        service = iserver.subscription_service
        create_subscription = service.create_subscription
        transfer = service.transfer_subscriptions

        async def create_with_guard(*args: Any, **kwargs: Any) -> Any:
            result = await create_subscription(*args, **kwargs)
            sub = service.subscriptions.get(result.SubscriptionId)
            if sub is not None:
                self._keep_publishing(sub)
            return result

        async def transfer_subscriptions(params: ua.TransferSubscriptionsParameters,
                                         session_id: ua.NodeId, callback: Any,
                                         ) -> list[ua.TransferResult]:
            return await self.transfer(transfer, params, session_id, callback)

        service.create_subscription = create_with_guard
        service.transfer_subscriptions = transfer_subscriptions
        self._own_subscriptions_only(service)

    def statistics(self) -> SessionStatistics:
        c = self.counters
        return SessionStatistics(c.reactivations, c.reactivations_refused, c.transfers,
                                 c.transfers_refused, c.publish_requests_dropped,
                                 c.publish_failures)

    # -- tokens and channels --------------------------------------------------------
    def created(self, session: Any) -> None:
        """A client session was just created (CreateSession has not answered yet): give
        it a random token and remember the channel it was created on."""
        # asyncua registers the session under its numbered token in __init__
        self.iserver.unregister_external_session(session)
        session.auth_token = new_authentication_token()
        self.iserver.register_external_session(session)
        self._origins[session] = CHANNEL.get()
        activate = session.activate_session

        def activate_session(params: ua.ActivateSessionParameters, peer_certificate: Any) -> Any:
            pending = _REACTIVATION.get()
            if pending is None or pending.session is not session:
                return activate(params, peer_certificate)  # on the connection that has it
            _REACTIVATION.set(None)
            try:
                self._check_identity(session, params.UserIdentityToken)
                result = activate(params, peer_certificate)
            except BaseException:
                pending.restore()
                raise
            self.counters.reactivations += 1
            log.info("session_reactivated", session=_session_name(session),
                     user=str(session.user), subscriptions=len(pending.callbacks))
            return result

        # InternalSession.activate_session, called by UaProcessor after the signature check
        session.activate_session = activate_session

    def reactivating(self, session: Any) -> Any:
        """ActivateSession from a connection that did not create ``session`` (found by
        its token): the session, or None (asyncua answers BadSessionIdInvalid)."""
        if session is None:
            return None
        channel = CHANNEL.get()
        refusal = self._reactivation_refusal(session, channel)
        if refusal is not None:
            self.counters.reactivations_refused += 1
            log.info("session_reactivation_refused", session=_session_name(session),
                     policy=_policy_name(channel), reason=refusal,
                     status="BadSessionIdInvalid")
            return None
        callbacks = [(sub, sub.pub_result_callback, sub.pub_request_callback)
                     for sub in self._subscriptions_of(session)]
        _REACTIVATION.set(_Reactivation(session, callbacks))
        return session

    def _check_identity(self, session: Any, token: Any) -> None:
        """Part 4, 5.7.3: on a new channel the client logs in as the session's user."""
        user = getattr(session, "user", None)
        name = _identity_name(token)
        if isinstance(user, TwinUser) and user.name == name:
            return
        self.counters.reactivations_refused += 1
        log.info("session_reactivation_refused", session=_session_name(session),
                 user=name[:64] if isinstance(name, str) else "<anonymous>" if name is None
                 else "<other identity>",
                 reason="a session moves to a new channel only with the user it has",
                 fix="log in as the session's user, or create a new session",
                 status="BadIdentityChangeNotSupported")
        raise ServiceError(ua.StatusCodes.BadIdentityChangeNotSupported)

    def _reactivation_refusal(self, session: Any, channel: Channel | None) -> str | None:
        if session not in self._origins:
            return "not a client session"
        if channel is None or not channel.secure:
            return "a session moves only to a secure channel (a None channel proves nothing)"
        if not session.is_activated():
            return "a session is first activated on the channel that created it"
        origin = self._origins[session]
        if channel.refusal is not None or origin is None or \
                origin.thumbprint != channel.thumbprint:
            return "the channel's certificate is not the one the session was created with"
        return None

    # -- subscriptions ----------------------------------------------------------------
    def _subscriptions_of(self, session: Any) -> list[Any]:
        subs = self.iserver.subscription_service.subscriptions.values()
        return [sub for sub in list(subs) if sub.session_id == session.session_id]

    def _foreign(self, sub_id: int) -> bool:
        """Does subscription ``sub_id`` exist and belong to another session than the one
        of the client request being served? (Not for the server's own calls.)"""
        conn = CONNECTION.get()
        sub = self.iserver.subscription_service.subscriptions.get(sub_id)
        return conn is not None and sub is not None and \
            sub.session_id != conn.session.session_id

    def _own_subscriptions_only(self, service: Any) -> None:
        """asyncua's SubscriptionService serves every session from one table of
        subscriptions, numbered in sequence: any client could acknowledge, republish,
        modify or delete another's. A client's request now sees only its own session's
        subscriptions; another's is BadSubscriptionIdInvalid, as one that does not exist."""
        publish = service.publish
        republish = service.republish
        delete_subscriptions = service.delete_subscriptions
        set_publishing_mode = service.set_publishing_mode

        def publish_own(acks: list[ua.SubscriptionAcknowledgement]
                        ) -> tuple[int, list[ua.StatusCode]]:
            conn = CONNECTION.get()
            if conn is None:
                return publish(acks)  # type: ignore[no-any-return]
            own = self._subscriptions_of(conn.session)
            if not own:  # (asyncua counts every session's subscriptions)
                raise ServiceError(ua.StatusCodes.BadNoSubscription)
            results = []
            for ack in acks:
                if self._foreign(ack.SubscriptionId):
                    results.append(ua.StatusCode(ua.StatusCodes.BadSubscriptionIdInvalid))
                else:
                    results.extend(publish([ack])[1])
            return len(own), results

        def republish_own(params: ua.RepublishParameters) -> ua.NotificationMessage:
            self._refuse_foreign(params.SubscriptionId)
            return republish(params)

        async def delete_own(ids: list[int]) -> list[ua.StatusCode]:
            return await self._per_subscription(ids, delete_subscriptions)

        async def set_publishing_mode_own(params: ua.SetPublishingModeParameters
                                          ) -> list[ua.StatusCode]:
            async def inner(ids: list[int]) -> Any:
                return await set_publishing_mode(replace(params, SubscriptionIds=ids))
            return await self._per_subscription(params.SubscriptionIds, inner)

        service.publish = publish_own
        service.republish = republish_own
        service.delete_subscriptions = delete_own
        service.set_publishing_mode = set_publishing_mode_own
        # the services naming one subscription in params.SubscriptionId
        for name in ("create_monitored_items", "modify_monitored_items", "set_monitoring_mode",
                     "delete_monitored_items", "modify_subscription"):
            setattr(service, name, self._checked(getattr(service, name)))

    def _refuse_foreign(self, sub_id: int) -> None:
        if self._foreign(sub_id):
            log.info("subscription_refused", subscription=sub_id,
                     reason="another session's subscription", status="BadSubscriptionIdInvalid")
            raise ServiceError(ua.StatusCodes.BadSubscriptionIdInvalid)

    def _checked(self, method: Callable[..., Any]) -> Callable[..., Any]:
        if asyncio.iscoroutinefunction(method):
            async def checked_async(params: Any) -> Any:
                self._refuse_foreign(params.SubscriptionId)
                return await method(params)
            return checked_async

        def checked(params: Any) -> Any:
            self._refuse_foreign(params.SubscriptionId)
            return method(params)
        return checked

    async def _per_subscription(self, ids: list[int], inner: Callable[[list[int]], Any]
                                ) -> list[ua.StatusCode]:
        """``inner`` for the request's own subscriptions; BadSubscriptionIdInvalid for
        another session's, each in its place."""
        results: list[ua.StatusCode | None] = []
        mine: list[int] = []
        for sub_id in ids:
            if self._foreign(sub_id):
                results.append(ua.StatusCode(ua.StatusCodes.BadSubscriptionIdInvalid))
            else:
                mine.append(sub_id)
                results.append(None)
        done = iter(await inner(mine) if mine else [])
        return [r if r is not None else next(done) for r in results]

    def _keep_publishing(self, sub: Any) -> None:
        """Wrap ``sub.publish_results``: a dead connection's Publish requests are dropped
        before the subscription publishes; a failure does not end its loop."""
        publish = sub.publish_results
        warned = False

        async def publish_results(requestdata: Any = None) -> bool:
            nonlocal warned
            if requestdata is not None:  # a Publish request of a live connection
                return bool(await publish(requestdata))
            self._drop_dead_requests(sub)
            try:
                return bool(await publish())
            except Exception as exc:  # InternalSubscription's loop would end for good
                self.counters.publish_failures += 1
                if not warned:
                    warned = True
                    log.warning("subscription_publish_failed",
                                subscription=sub.data.SubscriptionId, error=repr(exc)[:200],
                                reason="the notification stays available to Republish")
                return False

        sub.publish_results = publish_results

    def _drop_dead_requests(self, sub: Any) -> None:
        processor = getattr(sub.pub_request_callback, "__self__", None)
        transport = internals.processor_transport(processor)
        if processor is None or transport is None or not transport.is_closing():
            return
        requests = internals.publish_requests(processor)
        if requests:
            self.counters.publish_requests_dropped += len(requests)
            log.info("publish_requests_dropped", subscription=sub.data.SubscriptionId,
                     count=len(requests), reason="their connection is gone")
            requests.clear()

    async def transfer(self, transfer: Callable[..., Any],
                       params: ua.TransferSubscriptionsParameters, session_id: ua.NodeId,
                       callback: Any) -> list[ua.TransferResult]:
        """TransferSubscriptions to the session ``session_id`` (asyncua's ``transfer``
        for the subscriptions it may take)."""
        sessions = list(internals.external_sessions(self.iserver).values())
        caller = next((s for s in sessions if s.session_id == session_id), None)
        results: list[ua.TransferResult | None] = []
        allowed: list[tuple[int, Any]] = []
        subs = self.iserver.subscription_service.subscriptions
        for sub_id in params.SubscriptionIds:
            sub = subs.get(int(sub_id))
            refusal = None if sub is None else self._transfer_refusal(sub, caller, sessions)
            if refusal is None:
                allowed.append((len(results), sub))
                results.append(None)
                continue
            self.counters.transfers_refused += 1
            log.info("subscription_transfer_refused", subscription=int(sub_id),
                     session=_session_name(caller), reason=refusal,
                     status="BadUserAccessDenied")
            results.append(ua.TransferResult(
                StatusCode=ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)))
        if allowed:
            ids = [int(params.SubscriptionIds[index]) for index, _ in allowed]
            previous = {id(sub): sub.pub_request_callback for _, sub in allowed if sub}
            done = await transfer(replace(params, SubscriptionIds=ids), session_id, callback)
            for (index, sub), result in zip(allowed, done, strict=True):
                results[index] = result
                if sub is not None and result.StatusCode.is_good():
                    self._moved(sub, previous[id(sub)], callback)
                    if params.SendInitialValues:
                        await self._send_initial_values(sub)
        return [r if r is not None else ua.TransferResult() for r in results]

    def _transfer_refusal(self, sub: Any, caller: Any, sessions: list[Any]) -> str | None:
        if caller is None:
            return "not a client session"
        if sub.session_id == caller.session_id:
            return None  # its own (asyncua's client transfers to itself after a reconnect)
        owner = next((s for s in sessions if s.session_id == sub.session_id), None)
        if owner is None:
            return "the subscription belongs to no client session"
        mine, theirs = caller.user, owner.user
        if not isinstance(mine, TwinUser) or not isinstance(theirs, TwinUser):
            return "unknown user"
        if not theirs.anonymous:
            return None if mine.name == theirs.name else "another user's subscription"
        if not mine.anonymous:
            return "an anonymous client's subscription"
        # Part 4, 5.14.7: anonymous means the same ApplicationUri, both on secure channels
        if not self._same_application(self._origins.get(owner), self._origins.get(caller)):
            return "an anonymous subscription passes only to the same application " \
                   "on a secure channel"
        return None

    @staticmethod
    def _same_application(a: Channel | None, b: Channel | None) -> bool:
        def uris(channel: Channel | None) -> set[str]:
            if channel is None or not channel.secure or not channel.uri_checked \
                    or channel.certificate is None:
                return set()
            return set(application_uris(channel.certificate))
        return bool(uris(a) & uris(b))

    @staticmethod
    async def _send_initial_values(sub: Any) -> None:
        """TransferSubscriptions with SendInitialValues (asyncua ignores it): each
        monitored value's current value goes out in the next notification."""
        items = sub.monitored_item_srv  # MonitoredItemService: its items, aspace
        for mid, item in list(internals.monitored_items(sub).items()):
            target = item.read_value_id
            if item.callback_handle is None or target is None or \
                    item.mode == ua.MonitoringMode.Disabled:
                continue  # an event item, or a disabled one
            value = items.aspace.read_attribute_value(target.NodeId, target.AttributeId)
            await sub.enqueue_datachange_event(mid, ua.MonitoredItemNotification(
                ClientHandle=item.client_handle, Value=value), item.queue_size)

    def _moved(self, sub: Any, previous_request: Any, callback: Any) -> None:
        """asyncua's transfer points only the results at the new connection: its Publish
        requests must be used too, and the old connection must not publish it again."""
        self.counters.transfers += 1
        processor = getattr(callback, "__self__", None)
        if processor is not None:
            sub.pub_request_callback = processor.get_publish_request
        old = getattr(previous_request, "__self__", None)
        if old is not None and old is not processor:
            internals.published_subscriptions(old).pop(sub.data.SubscriptionId, None)
        log.info("subscription_transferred", subscription=sub.data.SubscriptionId)


def _session_name(session: Any) -> str | None:
    if session is None:
        return None
    return str(session.session_id.to_string())


def _policy_name(channel: Channel | None) -> str:
    if channel is None:
        return "not offered"
    return channel.policy_uri.rpartition("#")[2]
