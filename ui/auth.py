"""Sign-in for teams: before any page, the user signs in (a users file's password, or Streamlit's own OIDC
`st.login`); the sidebar shows who it is and a sign-out button; every script run records the user with
core.auth.set_current_user so stored results say who made them. No sign-in configured: nothing changes."""

from __future__ import annotations

import importlib.metadata
import threading
import time
from pathlib import Path

import streamlit as st

from core.auth import AuthError, User, load_users, password_ok, set_current_user
from core.settings import Settings
from ui.safe import plain, shown

SESSION_KEY = "auth_user"
OIDC_KEYS = ("redirect_uri", "cookie_secret", "client_id", "client_secret", "server_metadata_url")
OIDC_EXAMPLE = """[auth]
redirect_uri = "http://HOST:8501/oauth2callback"  # this dashboard's address + /oauth2callback
cookie_secret = "..."  # a long random string: python -c "import secrets; print(secrets.token_urlsafe(32))"
client_id = "..."      # from your provider
client_secret = "..."
server_metadata_url = "https://YOUR-PROVIDER/.well-known/openid-configuration"
"""
FAIL_DELAY_S = 0.5  # the first failed attempt on a name waits this long, each further one twice as long
FAIL_DELAY_MAX_S = 8.0
FAIL_WINDOW_S = 600.0

_failures: dict[str, list[float]] = {}
_name_locks: dict[str, threading.Lock] = {}
_registry_lock = threading.Lock()


def sign_in(settings: Settings) -> str | None:
    """The signed-in user's name (recorded with set_current_user), or None when no sign-in is configured.

    With sign-in configured and nobody signed in, draws the sign-in form and stops the script run. Every page
    reaches this through ui.state.settings_or_stop, so no page runs for someone who has not signed in.
    `auth_oidc` (Streamlit's st.login) wins over `auth_file` here; the API keeps using the file's tokens.
    """
    if settings.auth_oidc:
        name = _oidc_user()
    elif settings.auth_file is not None:
        name = _password_user(Path(settings.auth_file))
    else:
        name = None
    set_current_user(name)
    return name


def signed_in(settings: Settings) -> bool:
    """True when no sign-in is configured or this browser session has signed in (draws nothing)."""
    if settings.auth_oidc:
        return not oidc_missing() and bool(st.user.is_logged_in)
    if settings.auth_file is not None:
        return bool(st.session_state.get(SESSION_KEY))
    return True


def account_sidebar(settings: Settings, name: str | None) -> None:
    """Sidebar: who is signed in and a sign-out button (nothing without sign-in)."""
    if name is None:
        return
    with st.sidebar:
        st.caption(f"Signed in as **{plain(name)}**")
        if st.button("Sign out", key="sign_out", icon=":material/logout:"):
            set_current_user(None)
            if settings.auth_oidc:
                st.logout()
            else:
                st.session_state.pop(SESSION_KEY, None)
                st.rerun()


# --------------------------------------------------------------------------- users file


def _users(path: Path) -> dict[str, User]:
    try:
        return load_users(path)
    except AuthError as exc:
        st.error(shown(exc))
        st.stop()
        raise


def _password_user(path: Path) -> str:
    name = st.session_state.get(SESSION_KEY)
    if name:
        if name in _users(path):  # a user removed from the file is signed out at the next click
            return name
        st.session_state.pop(SESSION_KEY, None)
    st.title("Sign in to VLScope")
    with st.form("sign_in_form"):
        user = st.text_input("User name", key="sign_in_user", autocomplete="username")
        password = st.text_input("Password", type="password", key="sign_in_password",
                                 autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        user = user.strip()
        if _check(_users(path), user, password):
            st.session_state[SESSION_KEY] = user
            st.rerun()
        st.error("Wrong user name or password. Try again, or ask whoever runs this dashboard to add you "
                 "(`vlscope users add NAME`).")
    st.stop()
    raise AssertionError("unreachable")


def _lock_for(name: str) -> threading.Lock:
    with _registry_lock:
        return _name_locks.setdefault(name, threading.Lock())


def _check(users: dict[str, User], name: str, password: str) -> bool:
    """password_ok, with failed attempts slowed down: attempts on one name take turns, and each recent
    failure on it makes the next failure wait twice as long (up to FAIL_DELAY_MAX_S). Names that are not
    users share one turn, so guessing names costs the same and keeps no state per guess."""
    key = name if name in users else "\0unknown"
    with _lock_for(key):
        if password_ok(users, name, password):
            _failures.pop(key, None)
            return True
        now = time.monotonic()
        recent = [t for t in _failures.get(key, []) if now - t < FAIL_WINDOW_S] + [now]
        _failures[key] = recent[-16:]
        time.sleep(min(FAIL_DELAY_MAX_S, FAIL_DELAY_S * 2 ** (len(recent) - 1)))
        return False


# --------------------------------------------------------------------------- OIDC (st.login)


def _authlib_ok() -> bool:
    try:
        version = importlib.metadata.version("Authlib")
    except importlib.metadata.PackageNotFoundError:
        return False
    parts = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    return parts >= (1, 3, 2)


def _oidc_section() -> dict:
    try:
        section = st.secrets.get("auth")
    except FileNotFoundError:  # no secrets file at all
        return {}
    return dict(section) if section is not None and hasattr(section, "keys") else {}


def oidc_missing() -> list[str]:
    """What OIDC sign-in still needs: missing [auth] keys of secrets.toml, and Authlib (empty: ready)."""
    section = _oidc_section()
    missing = [f"[auth] {key}" for key in OIDC_KEYS if not section.get(key)]
    if not _authlib_ok():
        missing.append("the Authlib package (>= 1.3.2)")
    return missing


def _oidc_user() -> str:
    missing = oidc_missing()
    if missing:
        files = ", ".join(str(f) for f in st.get_option("secrets.files"))
        st.title("Sign-in is not set up")
        st.error(f"`VLSCOPE_AUTH_OIDC` is on, but sign-in through your OpenID Connect provider is missing: "
                 f"{plain(', '.join(missing))}. Add the [auth] section to the dashboard's secrets.toml "
                 f"({plain(files)}) as below, install Authlib if it is named "
                 "(`pip install 'Authlib>=1.3.2'`), and restart the dashboard. Or unset "
                 "VLSCOPE_AUTH_OIDC to use the users file instead.")
        st.code(OIDC_EXAMPLE, language="toml")
        st.stop()
    if st.user.is_logged_in:
        for claim in ("email", "preferred_username", "name", "sub"):
            value = st.user.get(claim)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return "unknown user"
    st.title("Sign in to VLScope")
    st.write("This dashboard is for the team: sign in with your organisation's account.")
    if st.button("Sign in", type="primary", key="sign_in_oidc", icon=":material/login:"):
        st.login()
    st.stop()
    raise AssertionError("unreachable")
