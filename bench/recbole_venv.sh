#!/usr/bin/env bash
# Create (or refresh) bench/.recbole-venv: an isolated environment holding RecBole 1.2.1 for the
# SASRec baseline in bench/recbole_sasrec.py. RecBole 1.2.1 needs numpy<2 and pandas<2.3, which
# conflict with the project's own environment. No setuptools<70 pin: torch 2.13 requires
# setuptools>=77, and the old pin only mattered for recbole.quick_start's ray import, which the
# baseline does not use.
# Idempotent: when the venv already imports the pinned versions, it does nothing.
# Usage: bash bench/recbole_venv.sh [PYTHON]   (PYTHON defaults to python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.recbole-venv"
python="${1:-python3}"
log="$(mktemp -t recbole-venv.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

packages=(
    "recbole==1.2.1"
    "numpy<2"
    "pandas<2.3"
    "torch==2.13.0"
)

check() {
    # True when the venv imports everything bench/recbole_sasrec.py needs, at the pinned versions.
    "$venv/bin/python" - <<'EOF' >/dev/null 2>&1
import numpy, pandas, recbole, torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.trainer import Trainer
from recbole.model.sequential_recommender import SASRec
assert recbole.__version__ == "1.2.1", recbole.__version__
assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__
assert torch.__version__.startswith("2.13.0"), torch.__version__
EOF
}

if [[ -x "$venv/bin/python" ]] && check; then
    echo "recbole venv ready: $venv"
    exit 0
fi

fail() {
    echo "error: $1 (log below)" >&2
    tail -n 40 "$log" >&2
    exit 1
}

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv" >"$log" 2>&1 || fail "could not create venv $venv with $python"
fi
"$venv/bin/pip" install --quiet --upgrade pip >>"$log" 2>&1 || fail "could not upgrade pip"
"$venv/bin/pip" install --quiet "${packages[@]}" >>"$log" 2>&1 \
    || fail "pip install ${packages[*]} failed"
if ! check; then
    "$venv/bin/python" -c "import recbole.config, recbole.data, recbole.trainer" >>"$log" 2>&1 || true
    fail "RecBole installed but does not import in $venv"
fi
echo "recbole venv ready: $venv"
