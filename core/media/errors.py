"""Errors a user can cause with a video file: each message names the cause and the fix."""

from __future__ import annotations

from core.errors import Cancelled, UserError

__all__ = ["Cancelled", "VideoError"]


class VideoError(UserError, ValueError):
    """A video cannot be used (empty, truncated, not a video, no video stream...); the message says why and what to do."""
