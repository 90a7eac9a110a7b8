#!/usr/bin/env bash
# Set everything up on a fresh machine, then run one job:
#   scripts/dev.sh demo   train a small RNN and render its annotated unrolled graph
#   scripts/dev.sh test   run the test suite
# Setting up: the Graphviz `dot` program (Debian's graphviz via apt-get where it is missing; on macOS
# `brew install graphviz`), then a virtual environment in .venv with the package and its extras.
set -euo pipefail
cd "$(dirname "$0")/.."

ensure_dot() {
  command -v dot >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "Installing Graphviz (the dot program) with apt-get..."
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq graphviz >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    echo "Installing Graphviz (the dot program) with Homebrew..."
    brew install graphviz
  else
    echo "warning: Graphviz's dot program is missing; install it (Debian: apt-get install graphviz," \
         "macOS: brew install graphviz). Pictures are written as .dot source until then." >&2
  fi
}

ensure_venv() {
  local python="${PYTHON:-python3}"
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[test,plot,dev]"
}

job="${1:-}"
case "$job" in
  demo) ensure_dot; ensure_venv; shift; exec .venv/bin/python examples/char_rnn.py "$@" ;;
  test) ensure_dot; ensure_venv; shift; exec .venv/bin/python -m pytest "$@" ;;
  setup) ensure_dot; ensure_venv ;;
  *) echo "usage: scripts/dev.sh demo|test|setup [args...]" >&2; exit 2 ;;
esac
