#!/usr/bin/env bash
# Starts the real editor window under Xvfb on workflows/golden.ron and saves a screenshot
# (default docs/editor.png); with SCREENSHOT_RUN=1 it runs the workflow first (the Run button) and
# captures the editor after the run, previews and status included; SCREENSHOT_BUDGET=1 first
# turns the VRAM budget on, so the nodes show the memory plan. Needs the Debian packages xvfb xauth libgl1-mesa-dri libegl1
# libegl-mesa0 libxkbcommon-x11-0 libx11-xcb1 libxcursor1 libxrandr2 libxi6 imagemagick
# xdotool. Set VEETANCE_BIN to use an already built binary.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-docs/editor.png}
display=${SCREENSHOT_DISPLAY:-:99}
bin=${VEETANCE_BIN:-}
if [ -z "$bin" ]; then
    cargo build --quiet --bin veetance
    bin=${CARGO_TARGET_DIR:-target}/debug/veetance
fi

# A private state and cache directory: no recovery prompt or recent files from the user.
scratch=$(mktemp -d)
app=""
xvfb=""
cleanup() {
    if [ -n "$app" ]; then kill "$app" 2>/dev/null || true; fi
    if [ -n "$xvfb" ]; then kill "$xvfb" 2>/dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT

Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >"$scratch/xvfb.log" 2>&1 &
xvfb=$!
for _ in $(seq 50); do
    if xdpyinfo -display "$display" >/dev/null 2>&1 || [ -e "/tmp/.X11-unix/X${display#:}" ]; then break; fi
    sleep 0.1
done

DISPLAY=$display XDG_DATA_HOME=$scratch/data XDG_CACHE_HOME=$scratch/cache \
    XDG_RUNTIME_DIR=$scratch LIBGL_ALWAYS_SOFTWARE=1 \
    "$bin" edit "${SCREENSHOT_WORKFLOW:-workflows/golden.ron}" >"$scratch/app.log" 2>&1 &
app=$!

# Wait for the window, put it in the corner, and give egui a few frames to lay out.
window=""
for _ in $(seq 100); do
    window=$(DISPLAY=$display xdotool search --name "Veetance" 2>/dev/null | head -n1 || true)
    if [ -n "$window" ]; then break; fi
    if ! kill -0 "$app" 2>/dev/null; then
        echo "the editor exited early:" >&2
        cat "$scratch/app.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$window" ]; then
    echo "no editor window appeared; log:" >&2
    cat "$scratch/app.log" >&2
    exit 1
fi
DISPLAY=$display xdotool windowmove "$window" 0 0 windowsize "$window" 1280 800 || true
sleep "${SCREENSHOT_WAIT_S:-4}"
# Click the Sample node's title so the inspector shows its inputs, then park the pointer
# off the canvas so no hover highlight lands in the picture.
DISPLAY=$display xdotool mousemove "${SCREENSHOT_CLICK_X:-862}" "${SCREENSHOT_CLICK_Y:-143}" \
    sleep 0.3 mousedown 1 sleep 0.2 mouseup 1 sleep 0.3 mousemove 1270 790 || true
sleep 1
if [ "${SCREENSHOT_BUDGET:-0}" = 1 ]; then
    # The telemetry panel's "VRAM budget" checkbox (the slider's default, 8 GiB): the run is
    # planned and each node shows its part of the plan.
    DISPLAY=$display xdotool mousemove "${SCREENSHOT_BUDGET_X:-1025}" "${SCREENSHOT_BUDGET_Y:-200}" \
        sleep 0.2 click 1 sleep 0.3 || true
fi
if [ "${SCREENSHOT_RUN:-0}" = 1 ]; then
    # The Run button at the top left (clicking works where synthetic key events may not).
    DISPLAY=$display xdotool mousemove "${SCREENSHOT_RUN_X:-370}" "${SCREENSHOT_RUN_Y:-11}" \
        sleep 0.2 click 1 sleep 0.3 mousemove 1270 790 || true
    sleep "${SCREENSHOT_RUN_WAIT_S:-20}"
fi

mkdir -p "$(dirname "$out")"
DISPLAY=$display import -window root -strip "PNG8:$out"
size=$(stat -c %s "$out")
echo "wrote $out ($size bytes)"
if [ "$size" -gt 300000 ]; then
    echo "screenshot is larger than 300 KB" >&2
    exit 1
fi
