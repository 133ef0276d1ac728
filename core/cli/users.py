"""`vlscope users add|token|remove|list`: the users file of the team's sign-in (VLSCOPE_AUTH_FILE)."""

from __future__ import annotations

import argparse
import getpass
import sys

from core.auth import User, check_name, hash_password, hash_token, load_users, new_token, save_users
from core.cli.errors import CliError
from core.settings import load_settings


def _path(args: argparse.Namespace):
    from pathlib import Path

    if args.file:
        return Path(args.file)
    settings = load_settings()
    if settings.auth_file is None:
        raise CliError("No users file is set: set VLSCOPE_AUTH_FILE (e.g. /srv/vlscope/users.toml) or pass --file.")
    return settings.auth_file


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CliError("The two passwords differ; nothing was changed.")
    if len(password) < 8:
        raise CliError("The password is shorter than 8 characters; nothing was changed.")
    return password


def cmd_users(args: argparse.Namespace) -> int:
    path = _path(args)
    users = load_users(path) if path.exists() else {}
    if args.action == "list":
        for user in users.values():
            print(f"{user.name}  password: {'set' if user.password else 'none'}  API tokens: {len(user.tokens)}")
        print(f"{len(users)} users in {path}")
        return 0
    if not args.name:
        raise CliError(f"`vlscope users {args.action}` needs a user NAME.")
    name = check_name(args.name)
    if args.action == "add":
        user = users.get(name, User(name))
        user.password = hash_password(_read_password(args))
        users[name] = user
        save_users(path, users)
        print(f"user {name} saved in {path}")
    elif args.action == "token":
        if name not in users:
            users[name] = User(name)
        token = new_token()
        users[name].tokens.append(hash_token(token))
        save_users(path, users)
        print(token)
        print(f"(API token of {name}: shown once, only its hash is kept in {path}; send it as "
              "'Authorization: Bearer TOKEN')", file=sys.stderr)
    elif args.action == "remove":
        if users.pop(name, None) is None:
            raise CliError(f"There is no user {name} in {path}.")
        save_users(path, users)
        print(f"user {name} removed")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="sign-in users: passwords for the dashboard, bearer tokens for the API",
                       description="Manage the users file named by VLSCOPE_AUTH_FILE (hashed passwords and tokens).")
    p.add_argument("action", choices=["add", "token", "remove", "list"])
    p.add_argument("name", nargs="?", help="user name")
    p.add_argument("--file", help="users file (default: the VLSCOPE_AUTH_FILE setting)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.set_defaults(func=cmd_users)
