#!/usr/bin/env python3
"""Checks a Veetance PSD with psd-tools, an independent reader: it opens, lists its layers, and
its layers composite to its merged image (and, if given, to a reference picture).

Usage:
    python3 check_psd.py FILE.psd [--layers N] [--reference PICTURE.png] [--tolerance LEVELS]

Needs `pip install psd-tools` (which brings numpy and Pillow). Exits 1 on any failed check.
A sample to check comes from
`cargo run -p veetance-imaging --example layer_split_sample -- OUT_PREFIX N_LAYERS`.
"""

import argparse
import sys

import numpy as np
from PIL import Image
from psd_tools import PSDImage


def max_difference(a, b):
    """Largest per-channel difference of two images, in levels.

    Colour differences are weighted by how visible the pixel is (the smaller of the two
    alphas): a fully transparent pixel has no colour to get right (readers fill it differently;
    psd-tools puts white there), and a PSD's merged image stores translucent colours matted
    over white, which loses colour precision exactly where alpha is small.
    """
    a = np.asarray(a.convert("RGBA"), dtype=np.float64)
    b = np.asarray(b.convert("RGBA"), dtype=np.float64)
    if a.shape != b.shape:
        raise SystemExit(f"size mismatch: {a.shape} vs {b.shape}")
    alpha_diff = np.abs(a[..., 3] - b[..., 3]).max()
    visibility = np.minimum(a[..., 3:], b[..., 3:]) / 255.0
    colour_diff = (np.abs(a[..., :3] - b[..., :3]) * visibility).max()
    return int(np.ceil(max(alpha_diff, colour_diff) - 1e-6))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("psd")
    parser.add_argument("--layers", type=int, help="expected number of layers")
    parser.add_argument("--reference", help="picture the composite must reproduce")
    parser.add_argument("--tolerance", type=int, default=1, help="max difference in levels")
    args = parser.parse_args()

    failures = []

    def check(ok, what):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    psd = PSDImage.open(args.psd)
    print(f"{args.psd}: {psd.width}x{psd.height}, mode {psd.color_mode}, depth {psd.depth}")
    layers = list(psd)  # Bottom first, the order of the file's layer records.
    for idx, layer in enumerate(layers):
        pixels = layer.topil()
        alpha = np.asarray(pixels.convert("RGBA"))[..., 3] if pixels is not None else None
        covered = f"{(alpha > 0).mean():.1%}" if alpha is not None else "no pixels"
        print(
            f"  layer {idx}: {layer.name!r} kind={layer.kind} visible={layer.visible} "
            f"bbox={layer.bbox} opacity={layer.opacity} blend={layer.blend_mode} "
            f"covers={covered}"
        )
    if args.layers is not None:
        check(len(layers) == args.layers, f"{args.layers} layers (found {len(layers)})")
    check(all(layer.kind == "pixel" for layer in layers), "every layer is a pixel layer")
    check(all(layer.visible for layer in layers), "every layer is visible")
    check(
        all(layer.size == (psd.width, psd.height) for layer in layers),
        "every layer spans the canvas",
    )

    merged = psd.topil()  # The file's merged image section.
    check(merged is not None, "merged image section present")
    recomposed = psd.composite(force=True)  # psd-tools' own compositing of the layers.
    if merged is not None:
        diff = max_difference(recomposed, merged)
        check(diff <= args.tolerance, f"layers composite to the merged image (max diff {diff})")
    if args.reference:
        reference = Image.open(args.reference)
        diff = max_difference(recomposed, reference)
        check(diff <= args.tolerance, f"layers composite to the reference (max diff {diff})")

    if failures:
        print(f"check_psd: {len(failures)} check(s) failed")
        return 1
    print("check_psd: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
