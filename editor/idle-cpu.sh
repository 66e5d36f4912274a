#!/usr/bin/env bash
# The editor's idle cost: starts it on workflows/golden.ron under Xvfb with software GL, waits
# 8 s for start-up, and prints the CPU time it used over the next 20 s as a percentage of one
# core. Needs the same Debian packages as screenshot.sh. Usage: editor/idle-cpu.sh [BINARY]
# (default target/release/veetance).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/veetance}
display=${IDLE_DISPLAY:-:97}
scratch=$(mktemp -d)
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
app=""
trap 'kill $app $xvfb 2>/dev/null || true; rm -rf "$scratch"' EXIT
sleep 1
DISPLAY=$display XDG_DATA_HOME=$scratch/data XDG_CACHE_HOME=$scratch/cache \
    XDG_RUNTIME_DIR=$scratch LIBGL_ALWAYS_SOFTWARE=1 \
    "$bin" edit workflows/golden.ron >"$scratch/app.log" 2>&1 &
app=$!
sleep 8
ticks() { awk '{print $14 + $15}' "/proc/$app/stat"; }
t0=$(ticks); s0=$(date +%s.%N)
sleep 20
t1=$(ticks); s1=$(date +%s.%N)
python3 -c "print(f'idle CPU: {100 * ($t1 - $t0) / $(getconf CLK_TCK) / ($s1 - $s0):.1f} % of one core over {$s1 - $s0:.0f} s')"
