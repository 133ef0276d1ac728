"""`vlscope info` and `vlscope cache stats|list|clear|delete`."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from core.app import Runtime
from core.settings import load_settings


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, as everywhere in the CLI)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def cmd_info(args: argparse.Namespace) -> int:
    from core.status import cache_location, environment

    settings = load_settings()
    env = environment(settings)
    with Runtime.build(settings) as runtime:
        cache = runtime.cache
        stats = cache.stats()
    if args.json:
        print(json.dumps({"environment": env.to_dict(), "cache": stats.to_dict(), "cache_dir": str(settings.cache_dir),
                          "settings": json.loads(settings.model_dump_json())}, indent=2))
        return 0
    print(f"Python {env.python}; " + ", ".join(f"{k} {v}" for k, v in env.packages.items()))
    gpus = ", ".join(f"{g.name} ({human_bytes(g.memory_total_bytes)})" for g in env.gpus) or "none (CPU only)"
    print(f"Device: {env.device}; GPUs: {gpus}")
    print(f"Model: {settings.model}: {'available' if env.model.available else 'NOT available'}")
    if not env.model.available:
        print(f"  {env.model.message}")
    for eng in env.ocr_engines:
        state = "available" if eng.available else "not available"
        langs = f" ({', '.join(eng.languages)})" if eng.languages else ""
        print(f"OCR {eng.name}: {state}{langs}; {eng.message}")
    print(f"Cache: {cache_location(settings)}")
    print(
        f"  {stats.entries} entries for {stats.inputs} inputs, "
        f"{human_bytes(stats.volume_bytes)} of {human_bytes(stats.size_limit_bytes)}; hits {stats.hits}, misses {stats.misses}"
    )
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    settings = load_settings()
    with Runtime.build(settings) as runtime:
        cache = runtime.cache
        if args.action == "stats":
            stats = cache.stats()
            if args.json:
                print(json.dumps(stats.to_dict(), indent=2))
            else:
                where = "server:" if getattr(stats, "backend", "disk") == "redis" else "folder:"
                print(f"{where:<9} {stats.directory}")
                print(f"entries:  {stats.entries} ({stats.inputs} inputs)")
                print(f"size:     {human_bytes(stats.volume_bytes)} of {human_bytes(stats.size_limit_bytes)}")
                print(f"hits:     {stats.hits}")
                print(f"misses:   {stats.misses}")
                print(f"corrupt:  {stats.corrupt}")
                for warning in getattr(stats, "warnings", []) or []:
                    print(f"warning:  {warning}")
        elif args.action == "list":
            entries = cache.entries(args.input)
            if args.json:
                print(json.dumps([e.__dict__ for e in entries], indent=2))
            else:
                for e in entries:
                    when = dt.datetime.fromtimestamp(e.stored_at).strftime("%Y-%m-%d %H:%M:%S")
                    # who made it is stored text: shown printable only, so it cannot drive the terminal
                    who = "".join(ch if ch.isprintable() else "?" for ch in (e.made_by or "-"))[:24]
                    print(f"{when}  {e.input_hash[:16]}  {e.stage:<20} {human_bytes(e.size_bytes):>10}  "
                          f"{who:<12}  {e.key}")
                print(f"{len(entries)} entries")
        elif args.action == "delete":
            if not args.input:
                print("error: cache delete needs --input HASH (see `vlscope cache list`)")
                return 2
            print(f"deleted {cache.delete_input(args.input)} entries of {args.input}")
        elif args.action == "clear":
            print(f"deleted {cache.clear()} entries")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="environment, model availability and cache statistics")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)
    c = sub.add_parser("cache", help="result cache: stats, list, delete one input's entries, clear")
    c.add_argument("action", choices=["stats", "list", "delete", "clear"])
    c.add_argument("--input", help="content hash of one input (list/delete)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_cache)
    register_dashboard(sub)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Start the Streamlit dashboard with the upload limit from settings."""
    import os
    import sys
    from pathlib import Path

    from core.auth import check_listen

    settings = load_settings()
    check_listen(settings, args.address, "dashboard")
    home = Path(__file__).resolve().parents[2] / "Home.py"
    os.environ.update(dashboard_environment(settings))
    argv = [sys.executable, "-m", "streamlit", "run", str(home), "--server.headless", "true",
            "--server.port", str(args.port), "--server.address", args.address,
            "--server.maxUploadSize", str(settings.max_upload_mb)]
    os.chdir(home.parent)
    os.execv(sys.executable, argv)
    return 0  # not reached


def dashboard_environment(settings, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables `vlscope dashboard` gives the dashboard it starts: the settings file found here and the cache
    folder, as absolute paths. The dashboard runs from the repository's folder, so it reads and writes the same
    results as the commands run here, whatever folder they were run from."""
    from core.settings import config_file_path

    out = {"VLSCOPE_CACHE_DIR": str(settings.cache_dir)}
    config = config_file_path(environ)
    if config is not None:
        out["VLSCOPE_CONFIG"] = str(config.resolve())
    return out


def register_dashboard(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("dashboard", help="start the Streamlit dashboard (headless)")
    d.add_argument("--port", type=int, default=8501)
    d.add_argument("--address", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1, this machine only; 0.0.0.0: every interface, "
                        "which needs sign-in (VLSCOPE_AUTH_FILE or VLSCOPE_AUTH_OIDC) or VLSCOPE_ALLOW_OPEN_NETWORK)")
    d.set_defaults(func=cmd_dashboard)
