"""Messages in OpenAI chat format, for OpenAI-compatible servers (`core.vlm.remote`).

How visual inputs travel
------------------------
Images go as `image_url` parts holding a base64 data URI (PNG, lossless, so OCR-like questions
lose nothing). A video goes as its frames, each sent as an image (JPEG data URI) and **preceded by
a text part `<t seconds>` holding that frame's real time in the source file** (frame index /
source fps). This is the portable way that keeps times correct on any server: vLLM accepts a
video as a list of frames plus metadata only in some versions and with its own field names, other
servers ignore such metadata and then assume a default frame rate, which shifts every time the
model names. Written-out times are read by Qwen3-VL exactly like the `<t seconds>` texts its own
video processor inserts, so answers such as "at 12.5 seconds" refer to the source file's clock.
(`RemoteEngine.build_request` returns the body that is sent, so callers and tests can see it.)
"""

from __future__ import annotations

import base64
import io
from typing import Any

from core.vlm.base import InvalidRequest
from core.vlm.types import ImagePart, Message, TextPart, VideoPart, to_rgb_array


def time_text(seconds: float) -> str:
    """The `<t seconds>` text Qwen3-VL reads before a frame (one decimal, like its video processor)."""
    return f"<{seconds:.1f} seconds>"


def data_uri(image: Any, fmt: str = "PNG", max_pixels: int | None = None) -> str:
    """An image as a data URI (PNG, or JPEG for video frames), scaled down to `max_pixels` when given."""
    from PIL import Image

    try:
        arr = to_rgb_array(image)
    except ValueError as exc:
        raise InvalidRequest(f"cannot send this image: {exc}") from exc
    im = Image.fromarray(arr)
    if max_pixels and im.width * im.height > max_pixels:
        scale = (max_pixels / (im.width * im.height)) ** 0.5
        im = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=90)
        mime = "image/jpeg"
    else:
        im.save(buf, "PNG")
        mime = "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def video_parts(video: VideoPart) -> list[dict[str, Any]]:
    """A video as OpenAI content parts: `<t seconds>` text, then the frame as an image, for every frame.

    The time is the frame's real time in the source (frame index / source fps), so the model's
    answers use the source file's clock whatever frame rate the frames were sampled at.
    """
    per_frame = None
    if video.max_pixels_total:
        per_frame = max(1, video.max_pixels_total // len(video.frames))
    out: list[dict[str, Any]] = []
    for frame, t in zip(video.frames, video.timestamps):
        out.append({"type": "text", "text": time_text(t)})
        out.append({"type": "image_url", "image_url": {"url": data_uri(frame, "JPEG", per_frame)}})
    return out


def chat_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages in OpenAI chat format: text parts, images as data URIs, videos as timed frames."""
    if not messages:
        raise InvalidRequest("no messages to answer")
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
            continue
        parts: list[dict[str, Any]] = []
        for part in message.parts():
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                parts.append({"type": "image_url", "image_url": {"url": data_uri(part.image)}})
            elif isinstance(part, VideoPart):
                parts.extend(video_parts(part))
            else:
                raise InvalidRequest(f"unsupported message part {type(part).__name__}")
        out.append({"role": message.role, "content": parts})
    return out
