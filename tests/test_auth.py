"""Sign-in for teams: the users file, password and token checks, and the rule that nothing listens
beyond localhost unguarded (issue 12, defect 2). The CLI runs as a user runs it (a real subprocess)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.auth import (
    AuthError,
    User,
    acting_as,
    check_listen,
    current_user,
    hash_password,
    hash_token,
    is_loopback,
    load_users,
    new_token,
    password_ok,
    save_users,
    user_for_token,
    verify_password,
)
from core.settings import Settings

ROOT = Path(__file__).parents[1]
VLSCOPE = str(Path(sys.executable).parent / "vlscope")


def _vlscope(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([VLSCOPE, *args], cwd=ROOT, env={**os.environ, **env}, input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_password_hash_is_salted_and_verifies() -> None:
    a, b = hash_password("correct horse"), hash_password("correct horse")
    assert a != b and "correct horse" not in a  # salted, never the password itself
    assert verify_password("correct horse", a) and verify_password("correct horse", b)
    assert not verify_password("wrong horse", a)
    assert not verify_password("correct horse", "garbage$1$2") and not verify_password("x", "")


def test_users_file_round_trip_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    token = new_token()
    save_users(path, {"alice": User("alice", hash_password("s3cret-pw"), [hash_token(token)]),
                      "bob.smith@team": User("bob.smith@team", hash_password("other-pw"))})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in path.read_text() and "s3cret-pw" not in path.read_text()
    users = load_users(path)
    assert sorted(users) == ["alice", "bob.smith@team"]
    assert password_ok(users, "alice", "s3cret-pw")
    assert not password_ok(users, "alice", "other-pw") and not password_ok(users, "nobody", "s3cret-pw")
    assert user_for_token(users, token) == "alice"
    assert user_for_token(users, token + "x") is None and user_for_token(users, "") is None


def test_missing_or_broken_users_file_says_the_fix(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="vlscope users add NAME"):
        load_users(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[users.alice\npassword=")
    with pytest.raises(AuthError, match="not valid TOML"):
        load_users(bad)


def test_current_user_follows_the_context_into_threads_only_when_copied() -> None:
    import contextvars

    seen: list[str | None] = []
    with acting_as("alice"):
        assert current_user() == "alice"
        ctx = contextvars.copy_context()
        t = threading.Thread(target=lambda: seen.append(ctx.run(current_user)))
        t.start()
        t.join()
    assert seen == ["alice"] and current_user() is None


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True),
                                       ("localhost", True), ("0.0.0.0", False), ("192.168.1.5", False),
                                       ("example.org", False)])
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_break2_no_open_listening_without_sign_in(tmp_path: Path) -> None:
    open_settings = Settings(cache_dir=tmp_path)
    check_listen(open_settings, "127.0.0.1", "dashboard")  # this machine only: fine
    with pytest.raises(AuthError) as exc:
        check_listen(open_settings, "0.0.0.0", "dashboard")
    assert "anyone on the network" in str(exc.value) and "VLSCOPE_AUTH_FILE" in str(exc.value)
    check_listen(Settings(cache_dir=tmp_path, auth_file=tmp_path / "u.toml"), "0.0.0.0", "dashboard")
    check_listen(Settings(cache_dir=tmp_path, auth_oidc=True), "0.0.0.0", "dashboard")
    with pytest.raises(AuthError):  # OIDC signs in to the dashboard only: the API needs tokens
        check_listen(Settings(cache_dir=tmp_path, auth_oidc=True), "0.0.0.0", "API", for_api=True)
    check_listen(Settings(cache_dir=tmp_path, allow_open_network=True), "0.0.0.0", "API", for_api=True)


def test_break2_dashboard_default_is_localhost_and_open_bind_is_refused(tmp_path: Path) -> None:
    from core.cli import build_parser

    args = build_parser().parse_args(["dashboard"])
    assert args.address == "127.0.0.1"
    out = _vlscope(["dashboard", "--address", "0.0.0.0", "--port", "1"], {"VLSCOPE_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 1
    assert "error: The dashboard would listen on 0.0.0.0 with no sign-in" in out.stderr
    assert "Traceback" not in out.stderr
    assert 'address = "127.0.0.1"' in (ROOT / ".streamlit" / "config.toml").read_text()


def test_users_cli_add_token_list_remove(tmp_path: Path) -> None:
    path = tmp_path / "team" / "users.toml"
    env = {"VLSCOPE_AUTH_FILE": str(path), "VLSCOPE_CACHE_DIR": str(tmp_path / "c")}
    out = _vlscope(["users", "add", "alice", "--password-stdin"], env, stdin="a long password\n")
    assert out.returncode == 0, out.stderr
    assert password_ok(load_users(path), "alice", "a long password")
    out = _vlscope(["users", "token", "alice"], env)
    token = out.stdout.strip()
    assert out.returncode == 0 and token.startswith("vls_") and "shown once" in out.stderr
    assert user_for_token(load_users(path), token) == "alice"
    assert "alice  password: set  API tokens: 1" in _vlscope(["users", "list"], env).stdout
    short = _vlscope(["users", "add", "bob", "--password-stdin"], env, stdin="short\n")
    assert short.returncode == 1 and "shorter than 8 characters" in short.stderr
    bad = _vlscope(["users", "add", "../etc", "--password-stdin"], env, stdin="a long password\n")
    assert bad.returncode == 1 and "cannot be a user name" in bad.stderr
    assert _vlscope(["users", "remove", "alice"], env).returncode == 0
    assert load_users(path) == {}
    unset = _vlscope(["users", "list"], {"VLSCOPE_CACHE_DIR": str(tmp_path / "c")})
    assert unset.returncode == 1 and "VLSCOPE_AUTH_FILE" in unset.stderr
