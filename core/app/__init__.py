"""The application layer: one `Runtime` per process and the services that pages, CLI and API call.

    runtime = Runtime.build()            # settings, result cache, the one engine, OCR engines, jobs
    video = runtime.video                # probe, plan, analyse, ask, summarise
    documents = runtime.documents        # read (OCR), ask

Front ends keep their own concerns only (widgets, arguments, HTTP); every workflow lives here.
"""

from core.app.runtime import Runtime

__all__ = ["Runtime"]
