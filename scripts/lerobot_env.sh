#!/usr/bin/env bash
# Creates (or reuses) the separate Python 3.12 environment with LeRobot 0.6 that the ATE LeRobot plugin
# runs in. LeRobot 0.6 needs Python >= 3.12 and torch < 2.12, so it cannot share the main .venv.
#
#   bash scripts/lerobot_env.sh            # prints the environment's python on the last stdout line
#   ATE_LEROBOT_ENV=/path bash scripts/lerobot_env.sh   # choose the location
#
# The environment lives outside the repository, by default ~/.cache/ate/lerobot-py312-<hash>, where
# <hash> covers the requirement and constraint files: editing them builds a new one, reruns reuse it
# (a `.ate-ready` marker is written last, so an interrupted build is redone). Only PyPI is used; torch comes
# from PyPI as its CUDA build, which also runs on CPU. Use it with PYTHONPATH=<repo>/src (or
# `pip install --no-deps -e <repo>` into it).
#
# Two finishing steps, each redone only when its marker is missing (also on an existing environment):
# - the `lerobot_policy_ate` plugin (plugins/lerobot_policy_ate) is installed, offline, so LeRobot registers
#   the ate_* policy types by itself: no --policy.discover_packages_path. It is a non-editable shim that
#   imports `ate` from PYTHONPATH, so one environment serves every checkout; its marker covers its files.
# - torchcodec is removed when it cannot load (no FFmpeg shared libraries on the machine): LeRobot then
#   already decodes with pyav, and each command would print a ~40-line loading traceback. With FFmpeg
#   installed it stays. Set ATE_LEROBOT_KEEP_TORCHCODEC=1 to keep it regardless.
#
# Exit codes: 0 ready, 3 no Python 3.12 interpreter found, other: pip failed (log in <env>.log).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REQ="$ROOT/src/ate/integrations/lerobot/requirements.txt"
CON="$ROOT/src/ate/integrations/lerobot/constraints.txt"
HASH="$(cat "$REQ" "$CON" | sha256sum | cut -c1-12)"
ENV_DIR="${ATE_LEROBOT_ENV:-$HOME/.cache/ate/lerobot-py312-$HASH}"
PLUGIN="$ROOT/plugins/lerobot_policy_ate"
PLUGIN_HASH="$(cat "$PLUGIN/pyproject.toml" "$PLUGIN/lerobot_policy_ate/__init__.py" | sha256sum | cut -c1-12)"
PLUGIN_MARK="$ENV_DIR/.ate-plugin-$PLUGIN_HASH"
CODEC_MARK="$ENV_DIR/.ate-torchcodec-checked"

log() { echo "[lerobot_env] $*" >&2; }

find_python312() {
  local c
  for c in "${ATE_PYTHON312:-}" "$(command -v python3.12 || true)" "$HOME"/.pyenv/versions/3.12*/bin/python \
           /root/.pyenv/versions/3.12*/bin/python /usr/local/bin/python3.12 /usr/bin/python3.12; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    c="$(pyenv prefix 3.12 2>/dev/null || true)/bin/python"
    [ -x "$c" ] && { echo "$c"; return 0; }
  fi
  return 1
}

finish() {  # the two finishing steps (see the header); called with the lock held
  local py="$ENV_DIR/bin/python"
  if [ ! -f "$PLUGIN_MARK" ]; then
    # --no-build-isolation + --no-index: builds with the environment's own setuptools, no network
    if ! "$py" -m pip install --progress-bar off --disable-pip-version-check --no-deps --no-index \
          --no-build-isolation "$PLUGIN" >>"$ENV_DIR.log" 2>&1; then
      log "installing $PLUGIN failed; last lines of $ENV_DIR.log:"
      tail -n 20 "$ENV_DIR.log" >&2
      exit 1
    fi
    rm -f "$ENV_DIR"/.ate-plugin-*
    touch "$PLUGIN_MARK"
    log "installed the lerobot_policy_ate plugin"
  fi
  if [ ! -f "$CODEC_MARK" ]; then
    if [ -z "${ATE_LEROBOT_KEEP_TORCHCODEC:-}" ] && "$py" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torchcodec") is None)' \
        && ! "$py" -c 'import torchcodec' >/dev/null 2>&1; then
      "$py" -m pip uninstall -y --disable-pip-version-check torchcodec >>"$ENV_DIR.log" 2>&1
      log "removed torchcodec: it cannot load here (no FFmpeg libraries); LeRobot decodes videos with pyav"
    fi
    touch "$CODEC_MARK"
  fi
}

if [ -f "$ENV_DIR/.ate-ready" ] && [ -f "$PLUGIN_MARK" ] && [ -f "$CODEC_MARK" ]; then
  log "reusing $ENV_DIR"
  echo "$ENV_DIR/bin/python"
  exit 0
fi

mkdir -p "$(dirname "$ENV_DIR")"
exec 9>"$ENV_DIR.lock"
flock 9  # one builder at a time; a waiting one finds the environment ready
if [ -f "$ENV_DIR/.ate-ready" ]; then
  finish
  log "reusing $ENV_DIR"
  echo "$ENV_DIR/bin/python"
  exit 0
fi
PY="$(find_python312)" || { log "no Python 3.12 interpreter found (set ATE_PYTHON312=/path/to/python3.12)"; exit 3; }
rm -rf "$ENV_DIR"
log "creating $ENV_DIR with $PY (log: $ENV_DIR.log)"
start=$(date +%s)
"$PY" -m venv "$ENV_DIR"
# The main environment's pip config may add local wheel folders; they hold no cp312 wheels and are harmless.
if ! "$ENV_DIR/bin/python" -m pip install --progress-bar off --disable-pip-version-check \
      -r "$REQ" -c "$CON" >"$ENV_DIR.log" 2>&1; then
  log "pip install failed; last lines of $ENV_DIR.log:"
  tail -n 20 "$ENV_DIR.log" >&2
  exit 1
fi
"$ENV_DIR/bin/python" -c 'import lerobot, torch; print("lerobot", lerobot.__version__, "torch", torch.__version__)' >&2
touch "$ENV_DIR/.ate-ready"
finish
log "ready in $(( $(date +%s) - start )) s"
echo "$ENV_DIR/bin/python"
