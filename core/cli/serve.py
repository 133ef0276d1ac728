"""`vlscope serve`: the HTTP API (FastAPI + uvicorn) over the same cache as the dashboard."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    from core.api.app import serve

    print(f"VLScope API on http://{args.host}:{args.port} (OpenAPI spec: /openapi.json, docs: /docs)", flush=True)
    serve(host=args.host, port=args.port)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP API: OCR, video analysis, questions and cached results (FastAPI)",
                       description="Serve VLScope's HTTP API. The OpenAPI spec is at /openapi.json.")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.set_defaults(func=cmd_serve)
