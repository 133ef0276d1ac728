#!/usr/bin/env bash
# Installs VLScope into ./.venv (and the Debian packages it uses). Safe to run again.
#   bash scripts/setup.sh          # the app
#   bash scripts/setup.sh test     # the app and what the tests need
# Torch: the tested pins are torch 2.14.1 / torchvision 0.29.1.
#   VLSCOPE_TORCH_BUILD=auto (default): the CUDA build from PyPI on a machine with an NVIDIA driver; without one,
#     the CPU-only build from the PyTorch CPU index when that index can be reached (else it says so and installs
#     PyPI's build, which also runs on the CPU).
#   VLSCOPE_TORCH_BUILD=cpu: the CPU-only build (about 0.2 GB instead of about 6.9 GB with its CUDA libraries),
#     from https://download.pytorch.org/whl/cpu.   VLSCOPE_TORCH_BUILD=cuda: PyPI's CUDA build whatever the machine.
#   VLSCOPE_TORCH_SPEC="torch==X torchvision==Y" (and VLSCOPE_TORCH_INDEX_URL for another wheel index) for another
#     build, or VLSCOPE_TORCH_SPEC=skip to keep whatever torch the venv already has.
#   VLSCOPE_SETUP_DRY_RUN=1: only say which torch would be installed and from where (nothing is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-app}"
PY="${PYTHON:-python3}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
TORCH_SPEC="${VLSCOPE_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
TORCH_BUILD="${VLSCOPE_TORCH_BUILD:-auto}"
DRY_RUN="${VLSCOPE_SETUP_DRY_RUN:-0}"

has_nvidia_driver() {
  [ -e /proc/driver/nvidia/version ] && return 0
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

reachable() {  # can pip reach this index? (5 s at most)
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -o /dev/null --max-time 5 "$1/" 2>/dev/null
  else
    "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/', timeout=5)" "$1" 2>/dev/null
  fi
}

# ---------------------------------------------------------------- which torch, from where
TORCH_INDEX="${VLSCOPE_TORCH_INDEX_URL:-}"
case "$TORCH_BUILD" in
  auto|cpu|cuda) ;;
  *) echo "VLSCOPE_TORCH_BUILD must be auto, cpu or cuda, not '$TORCH_BUILD'" >&2; exit 2 ;;
esac
if [ "$TORCH_SPEC" != skip ] && [ -z "$TORCH_INDEX" ]; then
  if [ "$TORCH_BUILD" = cpu ]; then
    TORCH_INDEX="$CPU_INDEX"
    echo "Torch: the CPU-only build, from $CPU_INDEX (VLSCOPE_TORCH_BUILD=cpu)."
    reachable "$CPU_INDEX" || echo "Warning: $CPU_INDEX cannot be reached from this machine; pip will fail to" \
      "download from it. Unset VLSCOPE_TORCH_BUILD to install PyPI's build instead (it runs on the CPU too)." >&2
  elif [ "$TORCH_BUILD" = auto ] && ! has_nvidia_driver; then
    echo "No NVIDIA driver found: the model will run on the CPU."
    if reachable "$CPU_INDEX"; then
      TORCH_INDEX="$CPU_INDEX"
      echo "Torch: the CPU-only build (about 0.2 GB), from $CPU_INDEX."
      echo "  (VLSCOPE_TORCH_BUILD=cuda installs PyPI's CUDA build instead, for a GPU added later.)"
    else
      echo "Torch: PyPI's build, which brings the CUDA libraries (about 6.9 GB on disk) although no GPU can use them:"
      echo "  the PyTorch CPU index ($CPU_INDEX, about 0.2 GB) cannot be reached from this machine."
      echo "  Where it can be reached, VLSCOPE_TORCH_BUILD=cpu installs the CPU-only build."
    fi
  fi
fi
TORCH_ARGS="${TORCH_INDEX:+--index-url $TORCH_INDEX }$TORCH_SPEC"
if [ "$DRY_RUN" = 1 ]; then
  if [ "$TORCH_SPEC" = skip ]; then
    echo "Dry run: would keep the torch already in .venv (VLSCOPE_TORCH_SPEC=skip)."
  else
    echo "Dry run: would install torch with: pip install $TORCH_ARGS"
  fi
  exit 0
fi

# ---------------------------------------------------------------- Debian packages, venv, packages
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
if [ "$TORCH_SPEC" != skip ]; then
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q $TORCH_ARGS
fi
if [ "$MODE" = test ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
echo "VLScope installed in .venv"
