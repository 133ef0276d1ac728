"""VLScope's HTTP API (FastAPI): OCR, video analysis, questions and cached results, for other systems.

    from core.api import create_app      # or: vlscope serve --port 8000
"""

from core.api.app import create_app

__all__ = ["create_app"]
