"""`vlscope serve`: the HTTP API (FastAPI + uvicorn) over the same cache as the dashboard."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    from core.api.app import serve
    from core.auth import check_listen
    from core.settings import load_settings

    settings = load_settings()
    check_listen(settings, args.host, "API", for_api=True)  # before anything listens
    guard = (f"bearer tokens of {settings.auth_file}" if settings.auth_file is not None
             else "no sign-in (this machine only)" if not settings.allow_open_network else "no sign-in (open network)")
    print(f"VLScope API on http://{args.host}:{args.port} (OpenAPI spec: /openapi.json, docs: /docs; {guard})",
          flush=True)
    serve(host=args.host, port=args.port, settings=settings)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP API: OCR, video analysis, questions and cached results (FastAPI)",
                       description="Serve VLScope's HTTP API. The OpenAPI spec is at /openapi.json. Beyond localhost "
                                   "it needs sign-in: VLSCOPE_AUTH_FILE with tokens from `vlscope users token NAME`.")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1, this machine only; 0.0.0.0: every interface, "
                        "which needs VLSCOPE_AUTH_FILE or VLSCOPE_ALLOW_OPEN_NETWORK)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.set_defaults(func=cmd_serve)
