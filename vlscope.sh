#!/usr/bin/env bash
# The two commands of the README:
#   bash vlscope.sh start   install (if needed) and start the dashboard on port 8501
#   bash vlscope.sh test    install (if needed) and run every test
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-start}" in
  start)
    bash scripts/setup.sh app
    exec .venv/bin/vlscope dashboard --port "${PORT:-8501}"
    ;;
  test)
    bash scripts/setup.sh test
    .venv/bin/ruff check .
    exec .venv/bin/python -m pytest "${@:2}"
    ;;
  *)
    echo "usage: bash vlscope.sh start|test [pytest args]" >&2; exit 2 ;;
esac
