"""The one base class of errors a user can cause and fix (bottom layer: imports nothing of VLScope).

Every such error carries a *cause* (what is wrong, in plain words) and a *fix* (what to do about
it); its message is both. Front ends (pages, CLI, API) catch `UserError` and show the message as
text; anything else is a defect and is logged.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix: `cause` says what is wrong, `fix` what to do; str() is both."""

    def __init__(self, cause: str, fix: str = "") -> None:
        self.cause = cause.strip()
        self.fix = fix.strip()
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """Cause and fix as one message."""
        if not self.fix:
            return self.cause
        sep = "" if self.cause.endswith((".", "!", "?", ":")) else "."
        return f"{self.cause}{sep} {self.fix}"

    def __str__(self) -> str:
        return self.message


class Busy(UserError):
    """The server is running as much heavy work as its memory allows; the request can be tried again later."""


class Cancelled(RuntimeError):
    """A long call was stopped through its cancel token (results saved so far are kept)."""
