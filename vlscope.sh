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
    status=0
    .venv/bin/python -m pytest "${@:2}" || status=$?
    # the CPU pass above hides any GPU (tests/conftest.py); where one is usable, the CUDA pass runs the `cuda` tests
    if command -v nvidia-smi >/dev/null 2>&1 && .venv/bin/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
      echo "A CUDA GPU is usable here: the CUDA pass (VLSCOPE_TEST_CUDA=1) runs the tests marked cuda"
      cuda=0
      VLSCOPE_TEST_CUDA=1 .venv/bin/python -m pytest "${@:2}" || cuda=$?
      [ "$cuda" = 5 ] || [ "$cuda" = 0 ] || status=$cuda  # 5: the tests asked for hold no CUDA test
    fi
    exit $status
    ;;
  *)
    echo "usage: bash vlscope.sh start|test [pytest args]" >&2; exit 2 ;;
esac
