"""Sign-in for teams (bottom layer): a users file with hashed passwords and hashed API tokens, the
user a piece of work is done for, and the rule that nothing listens beyond localhost unguarded.

The users file is TOML, owner-only, one table per user::

    [users.alice]
    password = "scrypt$16384$8$1$<salt>$<hash>"   # never the password itself
    tokens = ["sha256$<hex>"]                        # API bearer tokens, hashed

`vlscope users add NAME` and `vlscope users token NAME` write it. The dashboard can instead use
Streamlit's own OIDC sign-in (`auth_oidc`); the API always takes bearer tokens from this file.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from core.errors import UserError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
TOKEN_PREFIX = "vls_"


class AuthError(UserError):
    """The users file or a sign-in setting cannot be used; the message names the fix."""


@dataclass
class User:
    """One user of the users file: the password hash and the API token hashes (never secrets)."""

    name: str
    password: str = ""
    tokens: list[str] = field(default_factory=list)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """A salted scrypt hash of `password`, as stored in the users file."""
    if not password:
        raise AuthError("An empty password cannot be used.", "Choose a password of at least 8 characters.")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches the stored hash (constant-time compare; a malformed hash is False)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want), maxmem=64 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def hash_token(token: str) -> str:
    """How an API token is stored: its SHA-256 (tokens are long random strings, so no salt is needed)."""
    return "sha256$" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A new random API bearer token (shown once; only its hash is kept)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def load_users(path: Path) -> dict[str, User]:
    """The users of the users file; a missing or malformed file is an AuthError naming the fix."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AuthError(f"The users file {path} does not exist.",
                        "Create it with `vlscope users add NAME`, or unset VLSCOPE_AUTH_FILE.") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AuthError(f"The users file {path} is not valid TOML ({exc}).",
                        "Fix it by hand or recreate it with `vlscope users add NAME`.") from exc
    users: dict[str, User] = {}
    table = data.get("users", {})
    if not isinstance(table, dict):
        raise AuthError(f"The users file {path} has no [users.NAME] tables.", "Recreate it with `vlscope users add NAME`.")
    for name, entry in table.items():
        if not isinstance(entry, dict) or not NAME_RE.match(str(name)):
            continue
        password = entry.get("password", "")
        tokens = entry.get("tokens", [])
        users[name] = User(name, password if isinstance(password, str) else "",
                           [t for t in tokens if isinstance(t, str)] if isinstance(tokens, list) else [])
    return users


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def save_users(path: Path, users: dict[str, User]) -> None:
    """Write the users file owner-only (0600), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# VLScope users: hashed passwords and hashed API tokens. Edit with `vlscope users ...`.", ""]
    for name in sorted(users):
        user = users[name]
        lines.append(f"[users.{_quote(name)}]")
        lines.append(f"password = {_quote(user.password)}")
        lines.append("tokens = [" + ", ".join(_quote(t) for t in user.tokens) + "]")
        lines.append("")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise AuthError(f"{name!r} cannot be a user name.",
                        "Use letters, digits and . _ @ + - (up to 64 characters, starting with a letter or digit).")
    return name


def password_ok(users: dict[str, User], name: str, password: str) -> bool:
    """True when `name` is a user whose password is `password`."""
    user = users.get(name)
    if user is None or not user.password:
        # spend the same time as a real check so user names cannot be probed by timing
        verify_password(password, "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        return False
    return verify_password(password, user.password)


def user_for_token(users: dict[str, User], token: str) -> str | None:
    """The user an API bearer token belongs to, or None."""
    if not token:
        return None
    hashed = hash_token(token)
    for user in users.values():
        for stored in user.tokens:
            if hmac.compare_digest(stored, hashed):
                return user.name
    return None


# --- who the current work is for -------------------------------------------------------------

_current_user: contextvars.ContextVar[str | None] = contextvars.ContextVar("vlscope_user", default=None)


def current_user() -> str | None:
    """The signed-in user the running work is done for (None: no sign-in, or a local command)."""
    return _current_user.get()


@contextmanager
def acting_as(name: str | None) -> Iterator[None]:
    """Run the block as work done for `name` (results stored in it record that user)."""
    token = _current_user.set(name)
    try:
        yield
    finally:
        _current_user.reset(token)


def set_current_user(name: str | None) -> None:
    """Set the user for the rest of this context (a Streamlit script run, a request handler)."""
    _current_user.set(name)


# --- where a server may listen ---------------------------------------------------------------

def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    host = host.strip().strip("[]")
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sign_in_configured(settings: Any, for_api: bool = False) -> bool:
    """True when the dashboard (or, with for_api, the API) asks who is there."""
    if for_api:
        return getattr(settings, "auth_file", None) is not None
    return getattr(settings, "auth_file", None) is not None or bool(getattr(settings, "auth_oidc", False))


def check_listen(settings: Any, host: str, what: str, for_api: bool = False) -> None:
    """Refuse to listen beyond localhost with nobody signing in, unless `allow_open_network` says so."""
    if is_loopback(host) or sign_in_configured(settings, for_api) or getattr(settings, "allow_open_network", False):
        return
    raise AuthError(
        f"The {what} would listen on {host} with no sign-in: anyone on the network could upload files, run the "
        "model and read or delete every result.",
        "Set up sign-in (VLSCOPE_AUTH_FILE with `vlscope users add NAME`" + ("" if for_api else ", or VLSCOPE_AUTH_OIDC")
        + "), listen on 127.0.0.1, or set VLSCOPE_ALLOW_OPEN_NETWORK=true on a trusted network.",
    )
