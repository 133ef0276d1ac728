#!/usr/bin/env bash
# Installs VLScope into ./.venv (and the Debian packages it uses). Safe to run again.
#   bash scripts/setup.sh          # the app
#   bash scripts/setup.sh test     # the app and what the tests need
# Torch: the tested pins are torch 2.14.1 / torchvision 0.29.1. To keep another build, set
#   VLSCOPE_TORCH_SPEC="torch==X torchvision==Y" (and VLSCOPE_TORCH_INDEX_URL for a CUDA wheel index),
# or VLSCOPE_TORCH_SPEC=skip to keep whatever torch the venv already has.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-app}"
PY="${PYTHON:-python3}"

need_apt=()
lists=(scripts/apt-packages.txt)
[ "$MODE" = test ] && lists+=(scripts/apt-packages-test.txt)
for pkg in $(grep -hv '^#' "${lists[@]}" | grep -v '^$'); do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "Installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
TORCH_SPEC="${VLSCOPE_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
if [ "$TORCH_SPEC" != skip ]; then
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q ${VLSCOPE_TORCH_INDEX_URL:+--index-url "$VLSCOPE_TORCH_INDEX_URL"} $TORCH_SPEC
fi
if [ "$MODE" = test ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
echo "VLScope installed in .venv"
