"""Vision-language engines behind one interface (`Engine`): local transformers (`core.vlm.local`) and an
OpenAI-compatible server such as vLLM or SGLang (`core.vlm.remote`)."""

from core.settings import Settings
from core.vlm.base import (
    Engine,
    EngineError,
    EngineInfo,
    InvalidRequest,
    ModelUnavailable,
    OutOfMemory,
    RequestRecord,
    TextStream,
)
from core.vlm.types import (
    GenerationParams,
    GenerationResult,
    ImagePart,
    Message,
    Metrics,
    TextPart,
    VideoPart,
    user,
)

__all__ = [
    "Engine",
    "EngineError",
    "EngineInfo",
    "GenerationParams",
    "GenerationResult",
    "ImagePart",
    "InvalidRequest",
    "Message",
    "Metrics",
    "ModelUnavailable",
    "OutOfMemory",
    "RequestRecord",
    "TextPart",
    "TextStream",
    "VideoPart",
    "create_engine",
    "user",
]


def create_engine(settings: Settings) -> Engine:
    """The engine the settings describe: `RemoteEngine` when `engine` is `remote`, else the local
    transformers engine (not yet loaded). The process's one engine is `core.app.Runtime.engine`."""
    if settings.engine == "remote":
        from core.vlm.remote import RemoteEngine

        return RemoteEngine(settings)
    from core.vlm.local import LocalEngine

    return LocalEngine(settings)
