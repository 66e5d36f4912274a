#!/usr/bin/env python3
"""Seconds per image and peak memory under VRAM budgets: Veetance's memory planner against
diffusers' offloading, both on the same GPU in the same session.

Subcommands (all on a CUDA machine; the checkpoints have RANDOM weights, which time the same
as real ones):

  write DIR --model klein-4b|klein-9b
      Random full-size checkpoint files as users have them, one file per part:
      DIR/flux-2-<model>.safetensors (the transformer, diffusers names), DIR/qwen3.safetensors
      (the Qwen3 text encoder, transformers names), DIR/flux2-vae.safetensors. Made on the GPU
      with bench/torch_gpu.py's builders, N(0, 0.02) weights, bf16.

  ours --veetance BIN --dir DIR --model M [--budgets unlimited,16GiB,12GiB,8GiB] [--images 3]
      `veetance run workflows/txt2img.ron` on those files at 1024x1024, 4 steps, `--images`
      pictures in one process per budget (the first includes loading and is not timed).
      Records, per budget: seconds per image (Encode + Sample + Decode node times from the
      `--json` events, median of the timed pictures), the whole run's wall time, the memory
      plan, peak VRAM used by the device (nvidia-smi every 50 ms: the whole process, CUDA
      context included) and peak RSS (VmHWM).

  peers --model M [--caps 16,12,8] [--modes resident,model,group,sequential]
      diffusers' Flux2KleinPipeline (random weights, 1024x1024, 4 steps, guidance 1, the
      offline tokenizer stand-in of torch_gpu.py) under `torch.cuda.set_per_process_memory_fraction`
      = cap / total. Modes: resident (all on the GPU, uncapped), model (`enable_model_cpu_offload`),
      group (`apply_group_offloading`, block level, one block per group, `use_stream=True`, on
      the transformer, text encoder and VAE), sequential (`enable_sequential_cpu_offload`). One
      warm-up picture, then the median of --images - 1 timed ones; an OOM is recorded as "does
      not fit".

  report FILE...
      Markdown tables (docs/benchmarks.md) from the JSON lines the others wrote.

Every record is one JSON line on stdout (and appended to --out). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

GIB = 1 << 30
MIB = 1 << 20


def log(msg: str) -> None:
    print(f"[memory_plan {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(rec: dict, out) -> None:
    line = json.dumps(rec)
    print(line, flush=True)
    if out:
        out.write(line + "\n")
        out.flush()


class VramSampler:
    """Peak of nvidia-smi's memory.used (MiB) while running."""

    def __init__(self):
        self.peak_mib = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        cmd = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "50"]
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        except OSError:
            return  # no GPU here (a CPU smoke test): no VRAM figure
        with proc:
            for line in proc.stdout:
                try:
                    self.peak_mib = max(self.peak_mib, int(line.strip()))
                except ValueError:
                    pass
                if self.stop.is_set():
                    proc.kill()
                    break

    def __enter__(self):
        self.thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        time.sleep(0.2)
        self.stop.set()
        self.thread.join(timeout=5)


def bench_args(model: str, tiny: bool = False):
    import torch_gpu

    extra = ["--tiny", "--device", "cpu"] if tiny else []
    return torch_gpu.parse_args(["--models", model, "--e2e-models", model, "--e2e-repeats", "1"] + extra)


def write(args) -> None:
    from safetensors.torch import save_file

    import torch_gpu

    os.makedirs(args.dir, exist_ok=True)
    if args.tiny:
        # Veetance tokenizes single files with the real Qwen3 vocabulary.
        torch_gpu.TINY_TEXT_ENCODER["vocab_size"] = 151936
    b = torch_gpu.Bench(bench_args(args.model, args.tiny))
    t0 = time.perf_counter()
    tr, _, _ = b.build_transformer(args.model)
    save_file({k: v.contiguous().cpu() for k, v in tr.state_dict().items()},
              os.path.join(args.dir, f"flux-2-{args.model}.safetensors"))
    del tr
    b.free()
    te = b.build_text_encoder(args.model)
    b.random_init_(te)
    # The tied output head is not used by FLUX.2 and cannot be saved twice.
    state = {k: v.contiguous().cpu() for k, v in te.state_dict().items() if not k.startswith("lm_head")}
    save_file(state, os.path.join(args.dir, "qwen3.safetensors"))
    del te, state
    b.free()
    vae = b.build_vae()
    b.random_init_(vae)
    save_file({k: v.contiguous().cpu() for k, v in vae.state_dict().items()},
              os.path.join(args.dir, "flux2-vae.safetensors"))
    if args.tiny:
        # The tiny encoder has 3 layers; klein reads 9, 18 and 27 of 36.
        with open(os.path.join(args.dir, f"flux-2-{args.model}.model_index.json"), "w") as f:
            json.dump({"text_encoder_out_layers": list(torch_gpu.TINY_OUT_LAYERS)}, f)
    sizes = {f: os.path.getsize(os.path.join(args.dir, f)) for f in os.listdir(args.dir)}
    log(f"wrote {args.model} in {time.perf_counter() - t0:.0f} s: {sizes}")


def peak_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def shown_command(cmd, args) -> str:
    """The command as recorded: the scratch folders of the machine it ran on become CKPT and
    OUT, the binary `veetance`, so results name no machine's paths."""
    text = " ".join(["veetance"] + cmd[1:])
    return text.replace(args.dir.rstrip("/"), "CKPT").replace(args.out_dir.rstrip("/"), "OUT")


def ours(args) -> None:
    out = open(args.out, "a") if args.out else None
    model_file = os.path.join(args.dir, f"flux-2-{args.model}.safetensors")
    for budget in args.budgets.split(","):
        cmd = [args.veetance, "run"] + [args.workflow] * args.images + [
            "--json", "--no-cache", "--device", args.device, "--out", args.out_dir,
            "--set", f"load.model={model_file}",
            "--set", f"load.text_encoder={os.path.join(args.dir, 'qwen3.safetensors')}",
            "--set", f"load.vae={os.path.join(args.dir, 'flux2-vae.safetensors')}",
            "--set", f"sample.width={args.res}", "--set", f"sample.height={args.res}",
            "--set", "sample.steps=4",
        ] + args.extra
        if budget != "unlimited":
            cmd += ["--vram-budget", budget]
        rec = {"bench": "memory_plan", "impl": "veetance", "model": args.model, "budget": budget,
               "res": args.res, "steps": 4, "images": args.images, "command": shown_command(cmd, args)}
        log(f"veetance {args.model} budget {budget}")
        t0 = time.perf_counter()
        rss = 0
        with VramSampler() as vram:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            lines = []

            def read_stdout():
                for line in proc.stdout:
                    lines.append(line)

            reader = threading.Thread(target=read_stdout, daemon=True)
            reader.start()
            while proc.poll() is None:
                rss = max(rss, peak_rss_kib(proc.pid))
                time.sleep(0.05)
            reader.join(timeout=10)
            stderr = proc.stderr.read()
        rec["wall_s"] = round(time.perf_counter() - t0, 2)
        rec["rc"] = proc.returncode
        rec["peak_vram_mib"] = vram.peak_mib
        rec["peak_rss_mib"] = round(rss / 1024)
        images, current = [], {}
        for line in lines:
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            if e.get("event") == "memory_plan":
                rec["plan"] = e["plan"]
            if e.get("event") == "node_finished":
                current[e["node"]] = e["duration_ms"] / 1000
            if e.get("event") == "run_finished":
                current["run_s"] = e["duration_ms"] / 1000
                images.append(current)
                current = {}
        rec["images_s"] = images
        timed = images[1:] or images
        per_image = [sum(i.get(n, 0) for n in ("encode", "sample", "decode")) for i in timed]
        if per_image and proc.returncode == 0:
            rec["s_per_image"] = round(statistics.median(per_image), 3)
            for n in ("encode", "sample", "decode"):
                rec[f"{n}_s"] = round(statistics.median(i.get(n, 0) for i in timed), 3)
        if proc.returncode != 0:
            rec["stderr_tail"] = stderr[-1500:]
        emit(rec, out)


def peers(args) -> None:
    import torch

    import torch_gpu

    out = open(args.out, "a") if args.out else None
    b = torch_gpu.Bench(bench_args(args.model))
    total = torch.cuda.get_device_properties(0).total_memory
    res, layers, steps = 1024, torch_gpu.OUT_LAYERS, 4
    for mode in args.modes.split(","):
        # One pipeline per mode; the caps change in place (the allocator checks the fraction at
        # each allocation).
        caps = ["unlimited"] if mode == "resident" else args.caps.split(",")
        base = {"bench": "memory_plan", "impl": "diffusers", "model": args.model, "mode": mode,
                "res": res, "steps": steps, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
        if time.perf_counter() - b.t_start > args.budget_s:
            emit(dict(base, skipped="time budget"), out)
            continue
        pipe = None
        try:
            torch.cuda.set_per_process_memory_fraction(1.0)
            tr, _, _ = b.build_transformer(args.model)
            pipe = b.build_pipeline(args.model, tr)
            del tr
            if mode != "resident":
                pipe.to("cpu")
                b.free()
            if mode == "model":
                pipe.enable_model_cpu_offload()
            elif mode == "sequential":
                pipe.enable_sequential_cpu_offload()
            elif mode == "group":
                # The VAE stays on the GPU (160 MiB): the pipeline calls `vae.decode`, not
                # `forward`, so block-level hooks never move its top-level convolutions in
                # (device run 2: "weight type CPUBFloat16Type" errors).
                pipe.enable_group_offload(onload_device=torch.device("cuda"),
                                          offload_device=torch.device("cpu"), offload_type="block_level",
                                          num_blocks_per_group=1, use_stream=True, exclude_modules=["vae"])
        except Exception as exc:  # noqa: BLE001
            emit(dict(base, error=f"{type(exc).__name__}: {exc}"[:600]), out)
            del pipe
            b.free()
            continue
        for cap in caps:
            rec = dict(base, budget=cap)
            if time.perf_counter() - b.t_start > args.budget_s:
                emit(dict(rec, skipped="time budget"), out)
                continue
            try:
                b.free()
                fraction = 1.0 if cap == "unlimited" else float(cap) * GIB / total
                torch.cuda.set_per_process_memory_fraction(fraction)
                b.reset_peak()
                times = []
                with torch.no_grad(), VramSampler() as vram:
                    for i in range(args.images):
                        if i > 0 and time.perf_counter() - b.t_start > args.budget_s:
                            break
                        torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        pipe(prompt=torch_gpu.PROMPT, height=res, width=res, num_inference_steps=steps,
                             guidance_scale=1.0, generator=torch.Generator(device="cpu").manual_seed(0),
                             output_type="pil", max_sequence_length=torch_gpu.TEXT_TOKENS,
                             text_encoder_out_layers=layers)
                        torch.cuda.synchronize()
                        times.append(time.perf_counter() - t0)
                        log(f"diffusers {args.model} {mode} cap {cap}: image {i} {times[-1]:.2f} s")
                timed = times[1:] or times
                rec["s_per_image"] = round(statistics.median(timed), 3)
                rec["images_s"] = [round(t, 3) for t in times]
                rec["peak_alloc_mib"] = round(torch.cuda.max_memory_allocated() / MIB)
                rec["peak_reserved_mib"] = round(torch.cuda.max_memory_reserved() / MIB)
                rec["peak_vram_mib"] = vram.peak_mib
            except torch.cuda.OutOfMemoryError as exc:
                rec["does_not_fit"] = str(exc)[:300]
            except Exception as exc:  # noqa: BLE001
                rec["error"] = f"{type(exc).__name__}: {exc}"[:600]
            emit(rec, out)
        del pipe
        b.free()
        torch.cuda.set_per_process_memory_fraction(1.0)


def report(args) -> None:
    """Markdown tables from the JSON lines of `ours` and `peers`."""
    recs = []
    for path in args.files:
        with open(path) as f:
            recs += [json.loads(line) for line in f if line.strip().startswith("{")]
    ours = [r for r in recs if r.get("impl") == "veetance"]
    theirs = [r for r in recs if r.get("impl") == "diffusers"]
    bw = args.link_gib_s
    print("| model | budget | Veetance s/image (encode/sample/decode) | peak VRAM MiB (nvidia-smi) | "
          "peak RSS MiB | streamed per image GiB | at 25 GB/s | fastest diffusers mode that fits: s/image | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = {r["model"]: r.get("s_per_image") for r in ours if r["budget"] == "unlimited"}
    for r in ours:
        cap = r["budget"].replace("GiB", "")
        fits = [t for t in theirs if t["model"] == r["model"] and "s_per_image" in t
                and (t["budget"] == cap or (t["mode"] == "resident" and cap == "unlimited"))]
        best = min(fits, key=lambda t: t["s_per_image"], default=None)
        streamed = (r.get("plan") or {}).get("parts", [])
        per_run = sum(p["placement"].get("streamed_bytes", 0) * p["passes"] for p in streamed) / GIB
        at_link = per_run * GIB / 25e9
        if "s_per_image" not in r:
            print(f"| {r['model']} | {r['budget']} | failed (rc {r.get('rc')}) | | | | | | |")
            continue
        ratio_base = base.get(r["model"])
        rel = f" ({r['s_per_image'] / ratio_base:.2f}x unlimited)" if ratio_base else ""
        print(f"| {r['model']} | {r['budget']} | {r['s_per_image']:.3f}{rel} ({r.get('encode_s')}/"
              f"{r.get('sample_s')}/{r.get('decode_s')}) | {r.get('peak_vram_mib')} | {r.get('peak_rss_mib')} | "
              f"{per_run:.1f} | {at_link:.2f} s | "
              + (f"{best['mode']}: {best['s_per_image']:.3f} | {best['s_per_image'] / r['s_per_image']:.2f}x |"
                 if best else "none fits | |"))
    print()
    print("| model | diffusers mode | cap GiB | s/image | peak allocated MiB | peak VRAM MiB (nvidia-smi) |")
    print("|---|---|---|---|---|---|")
    for t in theirs:
        if "s_per_image" in t:
            print(f"| {t['model']} | {t['mode']} | {t['budget']} | {t['s_per_image']:.3f} | "
                  f"{t.get('peak_alloc_mib')} | {t.get('peak_vram_mib')} |")
        else:
            why = "does not fit" if "does_not_fit" in t else t.get("skipped") or t.get("error", "")[:80]
            print(f"| {t['model']} | {t['mode']} | {t.get('budget', '')} | {why} | | |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("dir")
    w.add_argument("--model", default="klein-4b")
    w.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (a smoke test)")
    o = sub.add_parser("ours")
    o.add_argument("--veetance", required=True)
    o.add_argument("--dir", required=True)
    o.add_argument("--model", default="klein-4b")
    o.add_argument("--budgets", default="unlimited,16GiB,12GiB,8GiB")
    o.add_argument("--images", type=int, default=3)
    o.add_argument("--workflow", default="workflows/txt2img.ron")
    o.add_argument("--out-dir", default="out/memory-plan")
    o.add_argument("--device", default="cuda")
    o.add_argument("--res", type=int, default=1024)
    o.add_argument("--out", default=None)
    o.add_argument("extra", nargs="*", help="more arguments for `veetance run` (after --)")
    q = sub.add_parser("peers")
    q.add_argument("--model", default="klein-4b")
    q.add_argument("--caps", default="16,12,8", help="GiB; the resident mode runs uncapped")
    q.add_argument("--modes", default="resident,model,group,sequential")
    q.add_argument("--images", type=int, default=2)
    q.add_argument("--budget-s", type=float, default=400)
    q.add_argument("--out", default=None)
    r = sub.add_parser("report")
    r.add_argument("files", nargs="+")
    r.add_argument("--link-gib-s", type=float, default=25.0)
    args = p.parse_args(argv)
    {"write": write, "ours": ours, "peers": peers, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
