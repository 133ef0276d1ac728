"""Errors a user can cause with a video file: each message names the cause and the fix."""

from __future__ import annotations


class VideoError(ValueError):
    """A video cannot be used (empty, truncated, not a video, no video stream...); the message says why and what to do."""


class Cancelled(RuntimeError):
    """Raised when a long video operation is cancelled through its cancel flag."""
