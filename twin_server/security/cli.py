"""The ``user`` and ``pki`` subcommands of ``twin-server``.

    twin-server user add NAME --role ROLE      password from a prompt, or stdin if piped
    twin-server user passwd NAME [--role ROLE]
    twin-server user role NAME ROLE
    twin-server user remove NAME
    twin-server user list
    twin-server pki trust FILE-OR-THUMBPRINT    a file, or a certificate in rejected/certs
    twin-server pki untrust THUMBPRINT
    twin-server pki list
    twin-server pki hil-client [--out DIR] [--application-uri URI] [--days N]
                                                the HIL mirror's certificate for PLCs

Each takes ``--config CONFIG`` (the daemon's config: its state_dir, users_file
and pki_dir) or ``--state-dir DIR``; without either, the default state_dir
($STATE_DIRECTORY, else ``var``). A running daemon picks the change up at the
next login or connection.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO

from twin_server.config.schema import ServerConfig
from twin_server.errors import ConfigErrors
from twin_server.security.pki import (
    HIL_CLIENT_URI,
    PkiLayout,
    list_certificates,
    make_hil_client,
    trust,
    untrust,
)
from twin_server.security.roles import Role
from twin_server.security.users import (
    UsersFileError,
    add_user,
    read_password,
    read_users,
    remove_user,
    set_password,
    set_role,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

ROLES = [str(r) for r in Role]


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``user`` and ``pki`` to the ``twin-server`` subcommands."""
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_mutually_exclusive_group()
    group.add_argument("--config", help="the daemon's config file (for its state_dir)")
    group.add_argument("--state-dir", help="the daemon's state_dir")

    user = commands.add_parser("user", help="manage the users who may log in")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    add = user_commands.add_parser("add", parents=[where], help="add a user (asks the password)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    passwd = user_commands.add_parser("passwd", parents=[where], help="change a password")
    passwd.add_argument("name")
    passwd.add_argument("--role", choices=ROLES, help="also change the role")
    role = user_commands.add_parser("role", parents=[where], help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    remove = user_commands.add_parser("remove", parents=[where], help="remove a user")
    remove.add_argument("name")
    user_commands.add_parser("list", parents=[where], help="list users and roles")

    pki = commands.add_parser("pki", help="manage trusted client certificates")
    pki_commands = pki.add_subparsers(dest="pki_command", required=True, metavar="COMMAND")
    trust_cmd = pki_commands.add_parser(
        "trust", parents=[where],
        help="trust a client certificate: a file, or the thumbprint of one in rejected/certs")
    trust_cmd.add_argument("certificate", metavar="FILE-OR-THUMBPRINT")
    untrust_cmd = pki_commands.add_parser(
        "untrust", parents=[where], help="stop trusting a certificate (moved to rejected/)")
    untrust_cmd.add_argument("thumbprint")
    pki_commands.add_parser("list", parents=[where],
                            help="list our, trusted, issuer and rejected certificates")
    hil = pki_commands.add_parser(
        "hil-client", parents=[where],
        help="make the certificate and key the HIL mirror presents to PLCs "
             "(<pki>/hil/client.der and client.key)")
    hil.add_argument("--out", help="the folder to write them to (default <pki>/hil)")
    hil.add_argument("--application-uri", default=HIL_CLIENT_URI,
                     help="its ApplicationUri: [hil.<peer>.security] application_uri "
                          f"(default {HIL_CLIENT_URI})")
    hil.add_argument("--days", type=int, default=730, help="validity (default 730)")


def run(args: argparse.Namespace, stdin: IO[str] | None = None,
        stdout: IO[str] | None = None) -> int:
    """Run a ``user`` or ``pki`` command; the exit status."""
    out = stdout or sys.stdout
    try:
        config = _server_config(args)
    except ConfigErrors as errors:
        print(str(errors), file=sys.stderr)
        return EXIT_CONFIG
    root = Path(args.state_dir) if args.state_dir else Path(config.state_dir)
    try:
        if args.command == "user":
            return _user(args, root / config.security.users_file, stdin, out)
        return _pki(args, PkiLayout(root / config.security.pki_dir), out)
    except (UsersFileError, ValueError, OSError) as exc:
        print(f"twin-server {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _server_config(args: argparse.Namespace) -> ServerConfig:
    if getattr(args, "config", None):
        from twin_server.runtime.compile import load_config

        return load_config(args.config).config.server
    return ServerConfig()


def _user(args: argparse.Namespace, path: Path, stdin: IO[str] | None, out: IO[str]) -> int:
    command = args.user_command
    if command == "list":
        users = read_users(path)
        for user in sorted(users.values(), key=lambda u: u.name):
            print(f"{user.name}\t{user.role}\t{user.changed}", file=out)
        if not users:
            print(f"no users in {path}", file=out)
        return EXIT_OK
    if command == "remove":
        remove_user(path, args.name)
        print(f"removed user {args.name!r} from {path}", file=out)
        return EXIT_OK
    if command == "role":
        set_role(path, args.name, Role.parse(args.role))
        print(f"user {args.name!r} is now {args.role}", file=out)
        return EXIT_OK
    if command == "add":
        if args.name in read_users(path):
            raise UsersFileError(f"user {args.name!r} exists already; change the password "
                                 f"with 'twin-server user passwd {args.name}'")
        record = add_user(path, args.name, Role.parse(args.role), read_password(stdin))
        print(f"added user {record.name!r} ({record.role}) to {path}", file=out)
        return EXIT_OK
    role = Role.parse(args.role) if args.role else None
    if args.name not in read_users(path):
        raise UsersFileError(f"no user {args.name!r} in {path}")
    set_password(path, args.name, read_password(stdin), role)
    print(f"changed the password of {args.name!r}", file=out)
    return EXIT_OK


def _pki(args: argparse.Namespace, layout: PkiLayout, out: IO[str]) -> int:
    command = args.pki_command
    if command == "trust":
        path = trust(layout, args.certificate)
        print(f"trusted: {path}", file=out)
    elif command == "hil-client":
        folder = Path(args.out) if args.out else layout.root / "hil"
        cert, key = make_hil_client(folder, application_uri=args.application_uri,
                                    days=args.days)
        print(f"wrote {cert} and {key}. Give each PLC peer:\n\n"
              f"    [hil.<peer>.security]\n"
              f"    policy = \"Basic256Sha256\"\n"
              f"    mode = \"SignAndEncrypt\"\n"
              f"    certificate = \"{cert.resolve()}\"\n"
              f"    private_key = \"{key.resolve()}\"\n"
              f"    application_uri = \"{args.application_uri}\"\n\n"
              f"and trust {cert.name} on the PLC (its trusted client certificates).",
              file=out)
    elif command == "untrust":
        path = untrust(layout, args.thumbprint)
        print(f"no longer trusted (moved to): {path}", file=out)
    else:
        entries = list_certificates(layout)
        for e in entries:
            print(f"{e.folder:8} {e.thumbprint}  {e.subject}  "
                  f"{' '.join(e.application_uris)}  until {e.not_after.date()}", file=out)
        if not entries:
            print(f"no certificates in {layout.root}", file=out)
    return EXIT_OK
