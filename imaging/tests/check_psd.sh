#!/usr/bin/env bash
# Writes a LayerSplit sample (PNG + layered PSD) and checks the PSD with psd-tools.
# Needs python3 with psd-tools (`python3 -m pip install psd-tools`). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
n_layers="${1:-4}"
mapfile -t paths < <(cargo run -q -p veetance-imaging --example layer_split_sample -- "$out/sample" "$n_layers")
python3 imaging/tests/check_psd.py "${paths[1]}" --layers "$n_layers" --reference "${paths[0]}"
