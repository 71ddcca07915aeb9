"""The users file, password hashing and the throttling of failed logins.

The users file (``<state_dir>/users.json``, mode 0600) maps each user name to a
role and a salted scrypt hash::

    {"version": 1,
     "users": {"alice": {"role": "operator",
                         "password": "scrypt$16384$8$1$<salt, base64>$<key, base64>",
                         "changed": "2025-01-31T12:00:00+00:00"}}}

It is written by ``twin-server user add|remove|passwd`` (functions here; the
password comes from a prompt, or from stdin when that is not a terminal, never
from an argument) and read by the daemon, which notices a change at the next
login without a restart.

A hash is scrypt with a per-user 16-byte random salt and the cost (N, r, p)
stored beside it, so that a stronger default later still verifies old hashes.
Comparison is constant-time (``hmac.compare_digest``), and an unknown user name
costs as much as a wrong password, so timing does not tell which names exist.

Failed logins back off per client address and user name together (``LoginThrottle``):
the ``LOCK_AFTER``-th failure (the third) locks that pair for 1 s, each further one
for twice as long as the last, up to ``MAX_LOCKOUT``. While
locked, attempts are refused without checking the password (even a right one),
so a guesser gets a handful of tries per hour instead of thousands per second,
while the user, logging in from another address, is not held up. An address
guessing at many names is locked as a whole, and a name guessed at from many
addresses is locked for addresses it never logged in from.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import getpass
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

from twin_server.security.roles import Role

log = structlog.get_logger(__name__)

#: scrypt cost: N=2^14, r=8, p=1 takes ~16 MiB and a few tens of ms per check
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
USERNAME_MAX = 64

#: the failure of one user name from one address that starts the lockout (the third:
#: two typos are free, as the README says)
LOCK_AFTER = 3
#: the failure from one address, whatever the user names, that locks the address
ADDRESS_LOCK_AFTER = 10
#: addresses failing for one user name after which new addresses are held back for it
SPREAD_ADDRESSES = 10
MAX_LOCKOUT = 300.0
#: quiet seconds after which failures are forgotten
FORGET_AFTER = 3600.0
#: most keys each throttle table remembers (the longest quiet are forgotten first)
THROTTLE_ENTRIES = 10_000

FILE_VERSION = 1


class UsersFileError(Exception):
    """The users file cannot be read or a user command cannot be done."""


# -- hashing -------------------------------------------------------------------------

def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P) -> str:
    """``scrypt$N$r$p$salt$key`` with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, n, r, p)
    return "$".join(("scrypt", str(n), str(r), str(p), _b64(salt), _b64(key)))


def verify_password(password: str, encoded: str) -> bool:
    """Does ``password`` match ``encoded`` (a ``hash_password`` result)? Constant-time;
    a malformed hash matches nothing."""
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=128 * r * (n + p + 2) + 1024 * 1024, dklen=KEY_BYTES)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@functools.cache
def _dummy_hash() -> str:
    """Compared against for an unknown user name, so that it costs as much as a known one."""
    return hash_password(secrets.token_urlsafe(16))


# -- the file ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    role: Role
    password: str  # the encoded hash
    changed: str = ""


def check_username(name: str) -> str:
    if not name or len(name) > USERNAME_MAX or not name.isprintable() or name != name.strip():
        raise UsersFileError(f"a user name is 1..{USERNAME_MAX} printable characters without "
                             f"leading or trailing spaces (got {name!r})")
    return name


def read_users(path: Path) -> dict[str, UserRecord]:
    """The users in ``path``; an absent file is no users."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsersFileError(f"{path}: cannot read the users file: {exc}") from exc
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != FILE_VERSION:
            raise ValueError(f"expected version {FILE_VERSION}")
        users = {}
        for name, entry in data["users"].items():
            users[name] = UserRecord(name, Role.parse(entry["role"]), str(entry["password"]),
                                     str(entry.get("changed", "")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsersFileError(f"{path}: not a twin-server users file: {exc}") from exc
    return users


def write_users(path: Path, users: dict[str, UserRecord]) -> None:
    """Replace ``path`` atomically with ``users``, mode 0600."""
    data = {"version": FILE_VERSION,
            "users": {u.name: {"role": str(u.role), "password": u.password,
                               "changed": u.changed} for u in sorted(users.values(),
                                                                     key=lambda u: u.name)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def add_user(path: Path, name: str, role: Role, password: str) -> UserRecord:
    """Add ``name``; refused if it exists (use ``set_password`` / ``set_role``)."""
    users = read_users(path)
    check_username(name)
    if name in users:
        raise UsersFileError(f"user {name!r} exists already; change the password with "
                             f"'twin-server user passwd {name}'")
    record = UserRecord(name, role, hash_password(_check_password(password)), _now())
    users[name] = record
    write_users(path, users)
    return record


def set_password(path: Path, name: str, password: str, role: Role | None = None) -> UserRecord:
    """New password (and role, if given) for an existing user."""
    users = read_users(path)
    old = users.get(name)
    if old is None:
        raise UsersFileError(f"no user {name!r} in {path}")
    record = UserRecord(name, role or old.role, hash_password(_check_password(password)), _now())
    users[name] = record
    write_users(path, users)
    return record


def set_role(path: Path, name: str, role: Role) -> UserRecord:
    users = read_users(path)
    old = users.get(name)
    if old is None:
        raise UsersFileError(f"no user {name!r} in {path}")
    users[name] = record = UserRecord(name, role, old.password, _now())
    write_users(path, users)
    return record


def remove_user(path: Path, name: str) -> None:
    users = read_users(path)
    if users.pop(name, None) is None:
        raise UsersFileError(f"no user {name!r} in {path}")
    write_users(path, users)


def _check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UsersFileError(f"a password has {MIN_PASSWORD}..{MAX_PASSWORD} characters "
                             f"(got {len(password)})")
    return password


def read_password(stdin: IO[str] | None = None, *, confirm: bool = True,
                  prompt: Callable[[str], str] = getpass.getpass) -> str:
    """A password from a prompt (typed twice) when stdin is a terminal, else the first
    line of stdin (for scripts: ``printf '%s\\n' "$PW" | twin-server user add ...``)."""
    stream = stdin if stdin is not None else sys.stdin
    if stream.isatty():
        first = prompt("Password: ")
        if confirm and prompt("Password again: ") != first:
            raise UsersFileError("the two passwords differ; nothing changed")
        return first
    line = stream.readline()
    if not line:
        raise UsersFileError("no password on stdin")
    return line.rstrip("\r\n")


# -- logins --------------------------------------------------------------------------

@dataclass(slots=True)
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    last: float = 0.0  # the clock at the last failure


@dataclass(frozen=True, slots=True)
class LoginStatistics:
    accepted: int
    failed: int
    throttled: int
    locked: int  # address-and-user pairs, addresses and users locked out now


@dataclass(frozen=True, slots=True)
class Lockout:
    """How long a login attempt must wait, and which lock holds it."""

    seconds: float
    scope: str  # "address and user", "address", "user from a new address", or ""


def client_address(peer: str | None) -> str:
    """The address a client's failures are counted under: an IPv4 address, an IPv6
    /64 network (one host usually holds a whole /64), or "unknown"."""
    if not peer:
        return "unknown"
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Table:
    """Failures by key, at most ``entries`` of them (the longest quiet go first)."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.items: OrderedDict[Any, _Failures] = OrderedDict()

    def get(self, key: Any) -> _Failures | None:
        return self.items.get(key)

    def touch(self, key: Any, now: float, forget: float) -> tuple[_Failures, bool]:
        """The entry of ``key``, made most recent; True if it is new (or forgotten)."""
        entry = self.items.pop(key, None)
        fresh = entry is None or now - entry.last > forget
        if entry is None or fresh:
            entry = _Failures()
        entry.last = now
        self.items[key] = entry
        while len(self.items) > self.entries:
            self.items.popitem(last=False)
        return entry, fresh

    def locked(self, now: float) -> int:
        return sum(1 for e in self.items.values() if e.locked_until > now)


class LoginThrottle:
    """Backoff after failed logins, so that a guesser is slowed down without being
    able to lock anyone else out.

    * **address and user**: the ``lock_after``-th failure for one user name from one
      client address locks that pair for 1 s, each further failure for twice as
      long as the last, up to ``max_lockout``. The same user from another address is not
      held up: a guesser cannot lock the real user out.
    * **address**: from the ``address_lock_after``-th failure from one address,
      whatever the user names (a guesser trying many names), that address is locked
      likewise.
    * **user from a new address** (a guess spread over many addresses): once failures
      for one user name came from ``spread`` addresses, the name is locked likewise
      (each further address's failure doubling it), but only for addresses it has
      never logged in from: the real user's own address keeps working.

    A lock refuses attempts without checking the password (and without counting
    them). Failures are forgotten after ``forget`` quiet seconds or a successful
    login of the pair; each table keeps at most ``entries`` keys (the longest
    quiet go first), so that memory stays bounded whatever the clients send.
    """

    def __init__(self, *, lock_after: int = LOCK_AFTER,
                 address_lock_after: int = ADDRESS_LOCK_AFTER,
                 spread: int = SPREAD_ADDRESSES, max_lockout: float = MAX_LOCKOUT,
                 forget: float = FORGET_AFTER, clock: Callable[[], float] = time.monotonic,
                 entries: int = THROTTLE_ENTRIES) -> None:
        self.lock_after = lock_after
        self.address_lock_after = address_lock_after
        self.spread = spread
        self.max_lockout = max_lockout
        self.forget = forget
        self.clock = clock
        self._pairs = _Table(entries)      # (address, user)
        self._addresses = _Table(entries)  # address
        self._users = _Table(entries)      # user: count is of addresses that failed
        #: (address, user) pairs that logged in: spared by the user's spread lock
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._entries = entries

    def locked_for(self, address: str, user: str) -> Lockout:
        """How long ``user`` stays locked out from ``address`` (0 when it may try)."""
        now = self.clock()
        waits = [(self._wait(self._pairs.get((address, user)), now), "address and user"),
                 (self._wait(self._addresses.get(address), now), "address")]
        if (address, user) not in self._known:
            waits.append((self._wait(self._users.get(user), now), "user from a new address"))
        seconds, scope = max(waits)
        return Lockout(seconds, scope if seconds > 0 else "")

    @staticmethod
    def _wait(entry: _Failures | None, now: float) -> float:
        return max(0.0, entry.locked_until - now) if entry is not None else 0.0

    def failed(self, address: str, user: str) -> float:
        """Count a failure; returns the longest lockout it starts (0 before a
        threshold is reached)."""
        now = self.clock()
        pair, new_pair = self._pairs.touch((address, user), now, self.forget)
        lockouts = [self._count(pair, self.lock_after, now)]
        entry, _ = self._addresses.touch(address, now, self.forget)
        lockouts.append(self._count(entry, self.address_lock_after, now))
        if new_pair:  # the first failure of this address for this user
            entry, _ = self._users.touch(user, now, self.forget)
            lockouts.append(self._count(entry, self.spread, now))
        return max(lockouts)

    def _count(self, entry: _Failures, threshold: int, now: float) -> float:
        """Count one more failure of ``entry``; from the ``threshold``-th on, lock it
        for 1 s, then twice as long each time."""
        entry.count += 1
        over = entry.count - threshold
        if over < 0:
            return 0.0
        lockout = min(self.max_lockout, 2.0 ** over)
        entry.locked_until = now + lockout
        return lockout

    def succeeded(self, address: str, user: str) -> None:
        """``user`` logged in from ``address``: the pair's failures are forgotten and
        the address is known for the user from now on."""
        self._pairs.items.pop((address, user), None)
        self._known.pop((address, user), None)
        self._known[(address, user)] = None
        while len(self._known) > self._entries:
            self._known.popitem(last=False)

    def locked(self) -> int:
        now = self.clock()
        return sum(t.locked(now) for t in (self._pairs, self._addresses, self._users))


class UserStore:
    """The daemon's view of the users file: re-read when it changes, checks logins."""

    def __init__(self, path: Path, throttle: LoginThrottle | None = None) -> None:
        self.path = path
        self.throttle = throttle or LoginThrottle()
        self._users: dict[str, UserRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._accepted = 0
        self._failed = 0
        self._throttled = 0
        #: per user, a keyed digest of the password last verified and the hash it
        #: matched (the key lives in this process only; never the password itself)
        self._verified: dict[str, tuple[bytes, str]] = {}
        self._digest_key = secrets.token_bytes(32)
        self._check_mode()

    def _check_mode(self) -> None:
        try:
            mode = self.path.stat().st_mode & 0o777
        except FileNotFoundError:
            return
        if mode & 0o077:
            log.warning("users_file_readable_by_others", path=str(self.path), mode=oct(mode),
                        fix=f"chmod 600 {self.path}")

    def users(self) -> dict[str, UserRecord]:
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            try:
                self._users = read_users(self.path) if stamp else {}
            except UsersFileError as exc:
                # keep the last good list: a half-edited file must not lock everyone out
                log.error("users_file_invalid", error=str(exc))
            else:
                self._stamp = stamp
                log.info("users_file_loaded", path=str(self.path), users=len(self._users))
        return self._users

    def _verify(self, name: str, password: str, encoded: str) -> bool:
        """``verify_password``, remembering a success: a client that logs in again
        with the same password (a reconnect) is checked by a keyed SHA-256 digest
        instead of scrypt, which costs tens of ms on the event loop, where every
        session's clock waits for it. A changed hash (new password) forgets it; a
        wrong password always takes the full check."""
        digest = hmac.digest(self._digest_key, password.encode("utf-8"), "sha256")
        known = self._verified.get(name)
        if known is not None and known[1] == encoded and hmac.compare_digest(known[0], digest):
            return True
        ok = verify_password(password, encoded)
        if ok:
            self._verified[name] = (digest, encoded)
        return ok

    def authenticate(self, name: str, password: str, peer: str | None = None) -> Role | None:
        """The role of ``name`` if ``password`` is right and the throttle lets ``name``
        try from ``peer``; None otherwise. Logs every refusal (never the password)."""
        address = client_address(peer)
        shown = name[:USERNAME_MAX]  # a client's value: a bounded excerpt in the log
        lock = self.throttle.locked_for(address, name)
        if lock.seconds > 0:
            self._throttled += 1
            log.warning("login_throttled", user=shown, peer=peer, locked=lock.scope,
                        retry_after=round(lock.seconds, 1))
            return None
        record = self.users().get(name)
        ok = self._verify(name, password, record.password if record else _dummy_hash())
        if ok and record is not None:
            self.throttle.succeeded(address, name)
            self._accepted += 1
            log.info("login_accepted", user=name, role=str(record.role), peer=peer)
            return record.role
        self._failed += 1
        lockout = self.throttle.failed(address, name)
        log.info("login_failed", user=shown, peer=peer,
                 reason="unknown user" if record is None else "wrong password",
                 lockout=lockout or None)
        return None

    def statistics(self) -> LoginStatistics:
        return LoginStatistics(self._accepted, self._failed, self._throttled,
                               self.throttle.locked())


def describe(users: dict[str, UserRecord]) -> list[dict[str, Any]]:
    return [{"name": u.name, "role": str(u.role), "changed": u.changed}
            for u in sorted(users.values(), key=lambda u: u.name)]
