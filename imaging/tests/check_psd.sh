#!/usr/bin/env bash
# Writes Veetance PSD samples and checks them with psd-tools, an independent reader:
# a LayerSplit result (opaque background, N layers) and a translucent two-layer stack.
# Needs python3 with psd-tools (`python3 -m pip install psd-tools`). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
n_layers="${1:-4}"

mapfile -t paths < <(cargo run -q -p veetance-imaging --example layer_split_sample -- "$out/split" "$n_layers")
python3 imaging/tests/check_psd.py "${paths[1]}" --layers "$n_layers" --reference "${paths[0]}"

mapfile -t paths < <(cargo run -q -p veetance-imaging --example translucent_psd_sample -- "$out/translucent")
python3 imaging/tests/check_psd.py "${paths[1]}" --layers 2 --reference "${paths[0]}"
