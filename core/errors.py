"""The one base class of errors a user can cause and fix (bottom layer: imports nothing of VLScope), and the
web wording of messages.

Every such error carries a *cause* (what is wrong, in plain words) and a *fix* (what to do about
it); its message is both. Front ends (pages, CLI, API) catch `UserError` and show the message as
text; anything else is a defect and is logged.

Messages are written once, for every front end. A fix may name a command-line option ("try --enhanced");
the dashboard has a control for each of those instead. `for_web(message)` is the message as a web page
shows it: each command-line option in the words of the dashboard control that does the same (`WEB_WORDS`),
and no exception class names (a "(LocalEntryNotFoundError)" tells a user nothing). An error may also carry
its own `web_fix`, used by `UserError.for_web()` instead of the translated fix.
"""

from __future__ import annotations

import re


class UserError(Exception):
    """An error the user can fix: `cause` says what is wrong, `fix` what to do; str() is both.

    `web_fix`: the fix in the dashboard's words when they differ from `fix` (which may name CLI options);
    empty: `for_web(fix)`.
    """

    def __init__(self, cause: str, fix: str = "", web_fix: str = "") -> None:
        self.cause = cause.strip()
        self.fix = fix.strip()
        self.web_fix = web_fix.strip()
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """Cause and fix as one message."""
        return _join(self.cause, self.fix)

    def for_web(self) -> str:
        """Cause and fix as a web page shows them (the dashboard's controls, not command-line options)."""
        fix = self.web_fix or for_web(self.fix)
        return _join(for_web(self.cause), fix)

    def __str__(self) -> str:
        return self.message


def _join(cause: str, fix: str) -> str:
    if not fix:
        return cause
    sep = "" if cause.endswith((".", "!", "?", ":")) else "."
    return f"{cause}{sep} {fix}"


class Busy(UserError):
    """The server is running as much heavy work as its memory allows; the request can be tried again later."""


class Cancelled(RuntimeError):
    """A long call was stopped through its cancel token (results saved so far are kept)."""


# ------------------------------------------------------------------ the web wording of messages
# (pattern of a command-line hint, what the dashboard calls the same thing); the first that matches wins
WEB_WORDS: list[tuple[re.Pattern[str], str]] = [
    # one download command everywhere: `hf download` (huggingface-cli is its older name)
    (re.compile(r" \(or `huggingface-cli download [^`]+`\)"), ""),
    (re.compile(r"huggingface-cli download\b"), "hf download"),
    (re.compile(r"`?vlscope ocr --engine vlm`?"), "the OCR page's Qwen3-VL engine"),
    (re.compile(r"(?:\b[Uu]se )?--engine[ =]([a-z0-9_]+) or ([a-z0-9_]+)"), r"choose \1 or \2 as the Engine"),
    (re.compile(r"(?:\b[Uu]se )?--engine[ =]([a-z0-9_]+)"), r"choose \1 as the Engine"),
    (re.compile(r"--engine\b"), "another Engine"),
    (re.compile(r"another --lang\b"), "another Language"),
    (re.compile(r"--lang[ =]([A-Za-z_-]+)"), r"Language \1"),
    (re.compile(r"--lang\b"), "the Language choice"),
    (re.compile(r"--enhanced\b"), "Enhanced"),
    (re.compile(r"--vertical[ =](on|off|auto)"), r"Vertical text \1"),
    (re.compile(r"--vertical\b"), "Vertical text"),
    (re.compile(r"\(e\.g\. --pages ([0-9,-]+)\)"), r"(e.g. \1 in Pages to read)"),
    (re.compile(r"--pages[ =]([0-9,-]+)"), r"pages \1 (Pages to read)"),
    (re.compile(r"--pages\b"), "Pages to read"),
    (re.compile(r"--no-refine\b"), "the Refine switch off"),
    (re.compile(r"--fps[ =]([0-9.]+)"), r"\1 frames per second"),
    (re.compile(r"--max-frames[ =]([0-9]+)"), r"at most \1 frames"),
]
# any other option: "--some-option" becomes "“some option”"
_ANY_OPTION = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)\b")
# an exception class name in brackets, "(LocalEntryNotFoundError)", or leading a message, "ValueError: ..."
_CLASS_IN_BRACKETS = re.compile(r"\s*\((?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Warning)\)")
_CLASS_PREFIX = re.compile(r"(?:^|(?<=: ))(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception)(?::\s*|\b)")


def without_class_names(text: str) -> str:
    """`text` without exception class names: "(LocalEntryNotFoundError)" and "ValueError: " left out."""
    out = _CLASS_PREFIX.sub("", _CLASS_IN_BRACKETS.sub("", str(text)))
    return re.sub(r"  +", " ", out).strip()


def for_web(text: object) -> str:
    """`text` (a message or warning written for every front end) as a web page shows it: command-line options
    put in the words of the dashboard's controls (`WEB_WORDS`) and exception class names left out."""
    if isinstance(text, UserError):
        return text.for_web()
    out = str(text)
    for pattern, words in WEB_WORDS:
        out = pattern.sub(words, out)
    out = _ANY_OPTION.sub(lambda m: "“" + m.group(1).replace("-", " ") + "”", out)
    out = without_class_names(out)
    # a sentence that now starts with a lower-case replacement ("choose ...") starts with a capital
    return re.sub(r"(^|[.!?] )choose ", lambda m: m.group(1) + "Choose ", out)
