#!/usr/bin/env bash
# Set everything up on a fresh machine, then run one job:
#   scripts/dev.sh demo [flags]   train a small char-RNN for about a minute (tinygrad-rnn train [flags])
#   scripts/dev.sh test [args]    run the test suite (pytest [args])
#   scripts/dev.sh run ARGS...    run the tinygrad-rnn command from .venv, e.g. scripts/dev.sh run render --help
#   scripts/dev.sh setup          only set up
# Setting up: the Graphviz `dot` program (Debian's graphviz via apt-get where it is missing; on macOS
# Homebrew's), Chromium for the interactive page's tests (Debian's chromium via apt-get where it is
# missing), then a virtual environment in .venv holding the package (editable) with its test, plot
# and dev extras. The install runs only when pyproject.toml changed since the last one (a hash of it
# is kept in .venv/.installed), and quietly: its output goes to .venv/install.log, shown on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="test,plot,dev"
PYTHON="${PYTHON:-python3}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_dot() {
  command -v dot >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1; then
    echo "Installing Graphviz (the dot program) with apt-get..."
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    echo "Installing Graphviz (the dot program) with Homebrew..."
    brew install graphviz
  elif [ "$(uname -s)" = "Darwin" ]; then
    echo "warning: Graphviz's dot program is missing. On macOS install Homebrew (https://brew.sh), then run" \
         "'brew install graphviz' (or 'sudo port install graphviz' with MacPorts). Until then pictures are" \
         "written as .dot source." >&2
  else
    echo "warning: Graphviz's dot program is missing; install your system's graphviz package." \
         "Until then pictures are written as .dot source." >&2
  fi
}

ensure_chromium() {
  # The interactive page's tests drive a real browser: Debian's chromium through playwright (whose own
  # browser download does not work everywhere). Only for the tests; a missing browser skips them.
  command -v chromium >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1; then
    echo "Installing Chromium (for the interactive page's tests) with apt-get..."
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
      || echo "warning: apt-get could not install chromium; the interactive page's tests will be skipped" >&2
  elif [ "$(uname -s)" = "Darwin" ]; then
    echo "warning: Chromium is missing, so the interactive page's tests will be skipped. On macOS run" \
         "'brew install --cask chromium' and set TINYGRAD_RNN_CHROMIUM to its binary" \
         "(/Applications/Chromium.app/Contents/MacOS/Chromium)." >&2
  else
    echo "warning: Chromium is missing, so the interactive page's tests will be skipped; install your" \
         "system's chromium package." >&2
  fi
}

wanted_stamp() {
  # What the installed environment must match: pyproject.toml (dependencies, extras, scripts) and the extras.
  "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read() + sys.argv[1].encode()).hexdigest())' "$EXTRAS"
}

make_venv() {
  "$PYTHON" -m venv .venv >/dev/null 2>&1 && return 0
  rm -rf .venv  # a half-made environment (Debian without python3-venv makes one without pip)
  if command -v apt-get >/dev/null 2>&1; then
    local version
    version="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    echo "Installing Python's venv module with apt-get (python$version-venv)..."
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$version-venv" >/dev/null \
      || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$PYTHON" -m venv .venv && return 0
  fi
  echo "error: '$PYTHON -m venv' failed; install Python >= 3.10 with its venv module" \
       "(Debian/Ubuntu: apt-get install python3-venv; macOS: brew install python)" >&2
  exit 1
}

ensure_venv() {
  [ -x .venv/bin/python ] || make_venv
  local wanted
  wanted="$(wanted_stamp)"
  [ -f .venv/.installed ] && [ "$(cat .venv/.installed)" = "$wanted" ] && return 0
  echo "Installing the package and its $EXTRAS extras into .venv (only when pyproject.toml changed)..."
  if ! { .venv/bin/python -m pip install --upgrade pip \
         && .venv/bin/python -m pip install -e ".[$EXTRAS]"; } >.venv/install.log 2>&1; then
    tail -n 30 .venv/install.log >&2
    echo "error: installing into .venv failed; the whole log is in .venv/install.log" >&2
    exit 1
  fi
  echo "$wanted" >.venv/.installed
}

job="${1:-}"
[ $# -gt 0 ] && shift
case "$job" in
  # The command prints how to go on (train --resume): through this script, as it was launched.
  demo) ensure_dot; ensure_venv; exec env TINYGRAD_RNN_LAUNCHER="$0 run {command}" .venv/bin/tinygrad-rnn train "$@" ;;
  test) ensure_dot; ensure_chromium; ensure_venv; exec .venv/bin/python -m pytest "$@" ;;
  run) ensure_dot; ensure_venv; exec env TINYGRAD_RNN_LAUNCHER="$0 run {command}" .venv/bin/tinygrad-rnn "$@" ;;
  setup) ensure_dot; ensure_chromium; ensure_venv; echo "Ready: run 'source .venv/bin/activate' to have tinygrad-rnn on your PATH." ;;
  *) echo "usage: scripts/dev.sh demo|test|run|setup [args...]" >&2; exit 2 ;;
esac
