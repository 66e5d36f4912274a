#!/usr/bin/env python3
"""PyTorch/diffusers peer benchmark for `veetance bench gpu` (FLUX.2 [klein]).

What it measures
----------------
Full-size FLUX.2 [klein] architectures with RANDOM weights, in bf16 on CUDA,
the same configurations the Rust `veetance bench gpu` measures. Compute does
not depend on the weight values, so random weights give the same timings as
the real checkpoints (weights are drawn from N(0, 0.02) so that nothing turns
into NaN/inf; each record says whether the output was finite).

* Transformer (diffusers `Flux2Transformer2DModel`), klein-4B and klein-9B,
  at 512x512 and 1024x1024 (1024 and 4096 image tokens) with 512 text tokens,
  batch 1. One "step" is one forward call, made exactly as
  `Flux2KleinPipeline.__call__` makes it (packed latents, 4-D position ids,
  timestep/1000, guidance=None). Modes:
    - eager    : PyTorch SDPA, default backend choice (flash on H100).
    - cudnn    : eager, SDPA restricted to the cuDNN attention backend.
    - compile  : `torch.compile` of the whole transformer (default mode,
                 dynamic=False); compile time is reported as compile_s.
    - regional : optional, not in the default set: diffusers
                 `compile_repeated_blocks` (per-block torch.compile).
  Reported per (model, res, mode): ms_per_step (median of --steps timed calls
  after warm-up, torch.cuda.synchronize around each call), gpu_ms (CUDA
  events), effective TFLOP/s (FLOP formula of flux2-spec.md section 5),
  peak_alloc_mib / peak_reserved_mib (torch.cuda.max_memory_{allocated,
  reserved} after reset_peak_memory_stats; weights included).
* End to end (klein-4B by default, see --e2e-models): a real
  `Flux2KleinPipeline` built offline from configs: random Qwen3 text encoder
  of Qwen3-4B size (Qwen3-8B for klein-9B), hidden states of layers 9, 18, 27
  stacked, 512 tokens padded; 4 Euler steps of the transformer at 1024x1024;
  `AutoencoderKLFlux2` (default config) decode with the pipeline's BatchNorm
  denormalisation and unpatchify; postprocess to a PIL image. The Qwen
  tokenizer cannot be downloaded, so a stand-in byte-level tokenizer with the
  exact Qwen3 chat template (`<|im_start|>user ... <think>\\n\\n</think>\\n\\n`)
  is built offline; it pads to 512 tokens like the real one, so the text
  encoder does the same work. Timed: encode_s (pipe.encode_prompt),
  sample_s (pipe(..., output_type="latent"): 4 transformer steps, scheduler,
  unpack, BN denorm, unpatchify), decode_s (vae.decode + postprocess to PIL),
  total_s (their sum, synchronised between parts) and pipe_call_s (one
  uninterrupted pipe(prompt=...) call to PIL). Median of --e2e-repeats runs
  after one warm-up run. In compile mode only the transformer is compiled.

Output: one JSON object per line on stdout (and appended to --out FILE),
progress on stderr, and a human summary table on stdout at the end.

Running it on the device (diffusers is not installed there; the wheels in
.whl/ are carried, see the device README's Notes):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target .site .whl/*.whl && export PYTHONPATH=$PWD/.site || exit; \
    set -o pipefail; PYTHONUNBUFFERED=1 python3 bench/torch_gpu.py \
        --out $OUT/torch.jsonl --budget-s 480 2>&1 | tee $OUT/torch.log

(run with carry [".whl"]; .whl/ holds diffusers 0.42.1 and huggingface_hub
1.33.0, which diffusers 0.42 needs: older hubs lack `resolve_revision`).
--budget-s skips configurations not started within that many seconds, so
the summary still prints inside a 10-minute command. CPU smoke test with
tiny configs (float32; a few minutes on 2 cores, most of it compiling):

    python3 bench/torch_gpu.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time
import traceback

# --------------------------------------------------------------------------------------
# Configurations (diffusers Flux2Transformer2DModel kwargs; checked against
# scripts/convert_flux2_to_diffusers.py)
# --------------------------------------------------------------------------------------

_COMMON = dict(
    patch_size=1,
    in_channels=128,
    out_channels=None,
    attention_head_dim=128,
    timestep_guidance_channels=256,
    mlp_ratio=3.0,
    axes_dims_rope=(32, 32, 32, 32),
    rope_theta=2000,
    eps=1e-6,
    guidance_embeds=False,
)

TRANSFORMER_CONFIGS = {
    "klein-4b": dict(_COMMON, num_attention_heads=24, num_layers=5, num_single_layers=20,
                     joint_attention_dim=7680),
    "klein-9b": dict(_COMMON, num_attention_heads=32, num_layers=8, num_single_layers=24,
                     joint_attention_dim=12288),
}

# Qwen3 text encoders (klein-4B: Qwen3-4B, klein-9B: Qwen3-8B).
TEXT_ENCODER_CONFIGS = {
    "klein-4b": dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728,
                     num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=128, tie_word_embeddings=True),
    "klein-9b": dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                     num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=128, tie_word_embeddings=False),
}
TEXT_ENCODER_COMMON = dict(max_position_embeddings=40960, rope_theta=1_000_000.0,
                           rms_norm_eps=1e-6, attention_bias=False, hidden_act="silu",
                           use_cache=False)
TEXT_ENCODER_NAMES = {"klein-4b": "Qwen3-4B", "klein-9b": "Qwen3-8B"}
OUT_LAYERS = (9, 18, 27)

# Tiny stand-ins for a CPU smoke test (same code path, small shapes).
TINY_TRANSFORMER = dict(_COMMON, num_attention_heads=2, attention_head_dim=16, num_layers=1,
                        num_single_layers=1, joint_attention_dim=48, axes_dims_rope=(4, 4, 4, 4))
TINY_TEXT_ENCODER = dict(vocab_size=1024, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2,
                         head_dim=8, tie_word_embeddings=True)
TINY_OUT_LAYERS = (1, 2, 3)
TINY_VAE = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)

TEXT_TOKENS = 512
PROMPT = "A photograph of a red fox sitting in fresh snow, soft winter light, detailed fur."
MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[torch_gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="klein-4b,klein-9b")
    p.add_argument("--res", default=None, help="image sides, comma separated (default 512,1024; tiny 64,128)")
    p.add_argument("--modes", default=None,
                   help="eager,cudnn,compile,regional (default eager,cudnn,compile on CUDA; eager,compile on CPU)")
    p.add_argument("--steps", type=int, default=10, help="timed forward calls per configuration")
    p.add_argument("--warmup", type=int, default=3, help="untimed forward calls before timing")
    p.add_argument("--e2e", dest="e2e", action="store_true", default=True)
    p.add_argument("--no-e2e", dest="e2e", action="store_false")
    p.add_argument("--e2e-models", default="klein-4b", help="models that get the end-to-end run")
    p.add_argument("--e2e-res", type=int, default=None, help="end-to-end image side (default 1024; tiny 128)")
    p.add_argument("--e2e-steps", type=int, default=4, help="Euler steps of the end-to-end run")
    p.add_argument("--e2e-repeats", type=int, default=3, help="timed end-to-end runs (after one warm-up)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default=None, help="bfloat16 (default on CUDA) / float32 (default on CPU)")
    p.add_argument("--tiny", action="store_true", help="tiny configs for a CPU smoke test")
    p.add_argument("--out", default=None, help="append JSON lines to this file")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="skip configurations not started within this many seconds (0: no limit)")
    return p.parse_args(argv)


class Bench:
    def __init__(self, args):
        import torch

        self.torch = torch
        self.args = args
        self.t_start = time.perf_counter()
        dev = args.device
        if dev.startswith("cuda") and not torch.cuda.is_available():
            if args.tiny:
                log("CUDA not available: tiny run falls back to CPU")
                dev = "cpu"
            else:
                raise SystemExit("CUDA is not available (use --device cpu, probably with --tiny)")
        self.device = torch.device(dev)
        self.cuda = self.device.type == "cuda"
        if args.dtype:
            self.dtype = getattr(torch, args.dtype)
        else:
            self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.records = []
        self.out = open(args.out, "a", encoding="utf-8") if args.out else None

        import diffusers
        import transformers

        self.common = {
            "impl": "torch",
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(self.device) if self.cuda else "cpu",
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "tiny": bool(args.tiny),
        }
        if self.cuda:
            self.common["cudnn"] = torch.backends.cudnn.version()
        # several resolutions and the end-to-end run each add guarded graphs
        try:
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
        except Exception:  # noqa: BLE001
            pass

    # ---------------------------------------------------------------- helpers
    def emit(self, rec: dict) -> None:
        full = dict(self.common)
        full.update(rec)
        self.records.append(full)
        line = json.dumps(full, sort_keys=False)
        print(line, flush=True)
        if self.out:
            self.out.write(line + "\n")
            self.out.flush()

    def emit_error(self, base: dict, exc: BaseException) -> None:
        tb = traceback.format_exc().strip().splitlines()
        rec = dict(base)
        rec["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        rec["traceback_tail"] = tb[-6:]
        log(f"ERROR {base}: {rec['error'][:300]}")
        self.emit(rec)

    def over_budget(self) -> bool:
        b = self.args.budget_s
        return b > 0 and time.perf_counter() - self.t_start > b

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def free(self):
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def reset_peak(self):
        if self.cuda:
            self.sync()
            gc.collect()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def mem(self) -> dict:
        if not self.cuda:
            return {"peak_alloc_mib": None, "peak_reserved_mib": None}
        self.sync()
        tc = self.torch.cuda
        return {
            "peak_alloc_mib": round(tc.max_memory_allocated(self.device) / MIB, 1),
            "peak_reserved_mib": round(tc.max_memory_reserved(self.device) / MIB, 1),
        }

    @contextlib.contextmanager
    def build_ctx(self):
        """Create modules directly on the device in the target dtype (no slow CPU init)."""
        torch = self.torch
        old = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            with torch.device(self.device):
                yield
        finally:
            torch.set_default_dtype(old)

    def random_init_(self, module, std=0.02):
        """N(0, std) for every matrix/conv weight; 1-D params (norm weights) keep their init."""
        with self.torch.no_grad():
            for p in module.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, std)
        module.requires_grad_(False)
        module.eval()
        return module

    # ------------------------------------------------------------- builders
    def transformer_config(self, model: str) -> dict:
        if self.args.tiny:
            return dict(TINY_TRANSFORMER)
        return dict(TRANSFORMER_CONFIGS[model])

    def build_transformer(self, model: str):
        from diffusers import Flux2Transformer2DModel

        cfg = self.transformer_config(model)
        t0 = time.perf_counter()
        with self.build_ctx():
            tr = Flux2Transformer2DModel(**cfg)
        self.random_init_(tr)
        self.sync()
        n = sum(p.numel() for p in tr.parameters())
        log(f"{model}: transformer built on {self.device} ({n / 1e9:.3f} B params, "
            f"{time.perf_counter() - t0:.1f} s)")
        return tr, cfg, n

    def build_text_encoder(self, model: str):
        from transformers import Qwen3Config, Qwen3ForCausalLM

        kw = dict(TINY_TEXT_ENCODER if self.args.tiny else TEXT_ENCODER_CONFIGS[model])
        kw.update(TEXT_ENCODER_COMMON)
        cfg = Qwen3Config(**kw)
        with self.build_ctx():
            try:
                te = Qwen3ForCausalLM._from_config(cfg, dtype=self.dtype)
            except TypeError:
                te = Qwen3ForCausalLM._from_config(cfg, torch_dtype=self.dtype)
        te = te.to(self.device, self.dtype)
        te.requires_grad_(False)
        te.eval()
        return te

    def build_vae(self):
        from diffusers import AutoencoderKLFlux2

        kw = dict(TINY_VAE) if self.args.tiny else {}  # default config = the FLUX.2 VAE
        with self.build_ctx():
            vae = AutoencoderKLFlux2(**kw)
        vae.requires_grad_(False)
        vae.eval()
        return vae

    @staticmethod
    def build_tokenizer():
        """Offline stand-in for the Qwen3 tokenizer: byte-level, Qwen3 chat template, right padding."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import Qwen2TokenizerFast

        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"])
        template = (
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n"
            "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
            "{% endif %}"
        )
        t = Qwen2TokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                               chat_template=template)
        t.padding_side = "right"
        return t

    # ---------------------------------------------------------- transformer
    def make_inputs(self, cfg: dict, res: int):
        """Inputs shaped and laid out exactly as Flux2KleinPipeline.__call__ passes them."""
        from diffusers import Flux2KleinPipeline as P

        torch = self.torch
        g = torch.Generator(device=self.device).manual_seed(0)
        side = res // 16
        lat = torch.randn(1, cfg["in_channels"], side, side, generator=g, device=self.device, dtype=self.dtype)
        latent_ids = P._prepare_latent_ids(lat).to(self.device)
        hidden = P._pack_latents(lat)  # (1, side*side, 128), permuted view as in the pipeline
        ctx = 0.5 * torch.randn(1, TEXT_TOKENS, cfg["joint_attention_dim"], generator=g, device=self.device,
                                dtype=self.dtype)
        text_ids = P._prepare_text_ids(ctx).to(self.device)
        t = torch.tensor(900.0, device=self.device)  # scheduler timestep (sigma*1000), float32
        timestep = t.expand(1).to(self.dtype)
        return dict(hidden_states=hidden, timestep=timestep / 1000, guidance=None, encoder_hidden_states=ctx,
                    txt_ids=text_ids, img_ids=latent_ids, joint_attention_kwargs=None, return_dict=False)

    @staticmethod
    def flops_per_step(cfg: dict, res: int) -> float:
        d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        n_img = (res // 16) ** 2
        seq = TEXT_TOKENS + n_img
        blocks = cfg["num_layers"] + cfg["num_single_layers"]
        return (blocks * (26 * d * d * seq + 4 * seq * seq * d)
                + 2 * TEXT_TOKENS * cfg["joint_attention_dim"] * d
                + 4 * n_img * cfg["in_channels"] * d)

    def attn_ctx(self, mode: str):
        if mode == "cudnn":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            return sdpa_kernel([SDPBackend.CUDNN_ATTENTION])
        return contextlib.nullcontext()

    def bench_transformer(self, tr, cfg, model, res, mode, n_params):
        torch = self.torch
        args = self.args
        base = {"bench": "transformer", "model": model, "res": res, "mode": mode,
                "img_tokens": (res // 16) ** 2, "txt_tokens": TEXT_TOKENS}
        inputs = self.make_inputs(cfg, res)
        self.reset_peak()
        weights_mib = round(torch.cuda.memory_allocated(self.device) / MIB, 1) if self.cuda else None

        def call():
            return tr(**inputs)[0]

        rec = dict(base)
        with torch.no_grad(), self.attn_ctx(mode):
            if mode in ("compile", "regional"):
                self.sync()
                t0 = time.perf_counter()
                out = call()
                self.sync()
                rec["compile_s"] = round(time.perf_counter() - t0, 2)
                log(f"{model} {res} {mode}: first call (compile) {rec['compile_s']} s")
            for _ in range(args.warmup):
                out = call()
            self.sync()
            wall, gpu = [], []
            for _ in range(args.steps):
                if self.cuda:
                    e0 = torch.cuda.Event(enable_timing=True)
                    e1 = torch.cuda.Event(enable_timing=True)
                self.sync()
                t0 = time.perf_counter()
                if self.cuda:
                    e0.record()
                out = call()
                if self.cuda:
                    e1.record()
                self.sync()
                wall.append((time.perf_counter() - t0) * 1000)
                if self.cuda:
                    gpu.append(e0.elapsed_time(e1))
            finite = bool(torch.isfinite(out).all().item())
        ms = statistics.median(wall)
        flop = self.flops_per_step(cfg, res)
        rec.update({
            "ms_per_step": round(ms, 3),
            "ms_min": round(min(wall), 3),
            "ms_mean": round(statistics.fmean(wall), 3),
            "gpu_ms": round(statistics.median(gpu), 3) if gpu else None,
            "steps": args.steps,
            "warmup": args.warmup,
            "tflop_per_step": round(flop / 1e12, 4),
            "tflops": round(flop / 1e12 / (ms / 1000), 1),
            "params_b": round(n_params / 1e9, 4),
            "weights_mib": weights_mib,
            "finite": finite,
        })
        rec.update(self.mem())
        log(f"{model} {res} {mode}: {ms:.2f} ms/step, peak {rec['peak_alloc_mib']} MiB")
        self.emit(rec)

    def set_compiled(self, tr, mode: str):
        """mode: None (eager), 'compile' (whole model) or 'regional' (repeated blocks)."""
        self.unset_compiled(tr)
        if mode == "compile":
            tr.compile(dynamic=False)
        elif mode == "regional":
            tr.compile_repeated_blocks(dynamic=False)

    @staticmethod
    def unset_compiled(tr):
        for m in tr.modules():
            if getattr(m, "_compiled_call_impl", None) is not None:
                m._compiled_call_impl = None

    # ------------------------------------------------------------- end to end
    def build_pipeline(self, model, tr):
        from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

        t0 = time.perf_counter()
        te = self.build_text_encoder(model)
        vae = self.build_vae()
        tok = self.build_tokenizer()
        # FLUX.2 [klein] scheduler: dynamic (exponential) shifting; mu comes from the pipeline.
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                                time_shift_type="exponential")
        pipe = Flux2KleinPipeline(scheduler=sched, vae=vae, text_encoder=te, tokenizer=tok, transformer=tr,
                                  is_distilled=True)
        pipe.set_progress_bar_config(disable=True)
        self.sync()
        log(f"{model}: pipeline built ({time.perf_counter() - t0:.1f} s; text encoder "
            f"{sum(p.numel() for p in te.parameters()) / 1e9:.3f} B, "
            f"VAE {sum(p.numel() for p in vae.parameters()) / 1e6:.1f} M params)")
        return pipe

    def e2e_once(self, pipe, res, layers):
        torch = self.torch
        steps = self.args.e2e_steps
        self.sync()
        t0 = time.perf_counter()
        pe, _ = pipe.encode_prompt(prompt=PROMPT, device=self.device, max_sequence_length=TEXT_TOKENS,
                                   text_encoder_out_layers=layers)
        self.sync()
        t1 = time.perf_counter()
        lat = pipe(prompt_embeds=pe, height=res, width=res, num_inference_steps=steps, guidance_scale=1.0,
                   generator=torch.Generator(device=self.device).manual_seed(0), output_type="latent",
                   max_sequence_length=TEXT_TOKENS, text_encoder_out_layers=layers).images
        self.sync()
        t2 = time.perf_counter()
        img = pipe.vae.decode(lat.to(pipe.vae.dtype), return_dict=False)[0]
        finite = bool(torch.isfinite(img).all().item())
        pil = pipe.image_processor.postprocess(img, output_type="pil")
        self.sync()
        t3 = time.perf_counter()
        return {"encode_s": t1 - t0, "sample_s": t2 - t1, "decode_s": t3 - t2, "total_s": t3 - t0,
                "finite": finite, "latent_shape": list(lat.shape), "image_size": list(pil[0].size)}

    def e2e_pipe_call(self, pipe, res, layers):
        torch = self.torch
        self.sync()
        t0 = time.perf_counter()
        pipe(prompt=PROMPT, height=res, width=res, num_inference_steps=self.args.e2e_steps, guidance_scale=1.0,
             generator=torch.Generator(device=self.device).manual_seed(0), output_type="pil",
             max_sequence_length=TEXT_TOKENS, text_encoder_out_layers=layers)
        self.sync()
        return time.perf_counter() - t0

    def bench_e2e(self, pipe, model, mode):
        torch = self.torch
        res = self.args.e2e_res or (128 if self.args.tiny else 1024)
        layers = TINY_OUT_LAYERS if self.args.tiny else OUT_LAYERS
        rec = {"bench": "e2e", "model": model, "res": res, "mode": mode, "steps": self.args.e2e_steps,
               "txt_tokens": TEXT_TOKENS, "text_encoder": ("tiny-Qwen3" if self.args.tiny
                                                           else TEXT_ENCODER_NAMES[model]) + " (random)",
               "text_encoder_out_layers": list(layers),
               "tokenizer": "offline byte-level stand-in with the Qwen3 chat template, padded to 512"}
        self.reset_peak()
        with torch.no_grad():
            t0 = time.perf_counter()
            self.e2e_once(pipe, res, layers)
            self.e2e_pipe_call(pipe, res, layers)
            rec["warmup_s"] = round(time.perf_counter() - t0, 2)
            log(f"{model} e2e {mode}: warm-up {rec['warmup_s']} s")
            runs, calls = [], []
            for _ in range(max(1, self.args.e2e_repeats)):
                runs.append(self.e2e_once(pipe, res, layers))
                calls.append(self.e2e_pipe_call(pipe, res, layers))
        for k in ("encode_s", "sample_s", "decode_s", "total_s"):
            rec[k] = round(statistics.median(r[k] for r in runs), 4)
        rec["total_s_runs"] = [round(r["total_s"], 4) for r in runs]
        rec["pipe_call_s"] = round(statistics.median(calls), 4)
        rec["finite"] = all(r["finite"] for r in runs)
        rec["latent_shape"] = runs[-1]["latent_shape"]
        rec["image_size"] = runs[-1]["image_size"]
        rec["sigmas"] = [round(float(s), 4) for s in pipe.scheduler.sigmas]
        rec.update(self.mem())
        log(f"{model} e2e {mode}: encode {rec['encode_s']:.3f} s, sample {rec['sample_s']:.3f} s, "
            f"decode {rec['decode_s']:.3f} s, total {rec['total_s']:.3f} s")
        self.emit(rec)

    # ------------------------------------------------------------------- run
    def run_model(self, model, resolutions, modes):
        torch = self.torch
        args = self.args
        if self.over_budget():
            self.emit({"bench": "transformer", "model": model, "skipped": "time budget"})
            return
        try:
            tr, cfg, n_params = self.build_transformer(model)
        except Exception as exc:  # noqa: BLE001
            self.emit_error({"bench": "transformer", "model": model, "stage": "build"}, exc)
            self.free()
            return
        # eager-style modes first, then compiled ones (compiling changes the module in place)
        ordered = [m for m in modes if m in ("eager", "cudnn")] + [m for m in modes if m in ("compile", "regional")]
        for mode in ordered:
            if mode in ("compile", "regional"):
                try:
                    torch._dynamo.reset()
                    self.set_compiled(tr, mode)
                except Exception as exc:  # noqa: BLE001
                    self.emit_error({"bench": "transformer", "model": model, "mode": mode, "stage": "compile"}, exc)
                    continue
            for res in resolutions:
                base = {"bench": "transformer", "model": model, "res": res, "mode": mode}
                if self.over_budget():
                    self.emit(dict(base, skipped="time budget"))
                    continue
                try:
                    self.bench_transformer(tr, cfg, model, res, mode, n_params)
                except Exception as exc:  # noqa: BLE001
                    self.emit_error(base, exc)
                    self.free()
        # end to end: compiled transformer first (it is already compiled and warm), then eager
        e2e_models = [m.strip() for m in args.e2e_models.split(",") if m.strip()]
        e2e_modes = []
        if "compile" in modes:
            e2e_modes.append("compile")
        if "eager" in modes:
            e2e_modes.append("eager")
        if args.e2e and model in e2e_models and e2e_modes:
            pipe = None
            if self.over_budget():
                self.emit({"bench": "e2e", "model": model, "skipped": "time budget"})
            else:
                try:
                    pipe = self.build_pipeline(model, tr)
                except Exception as exc:  # noqa: BLE001
                    self.emit_error({"bench": "e2e", "model": model, "stage": "build"}, exc)
            if pipe is not None:
                for mode in e2e_modes:
                    base = {"bench": "e2e", "model": model, "mode": mode}
                    if self.over_budget():
                        self.emit(dict(base, skipped="time budget"))
                        continue
                    try:
                        if mode == "eager":
                            self.unset_compiled(tr)
                        elif getattr(tr, "_compiled_call_impl", None) is None:
                            torch._dynamo.reset()
                            self.set_compiled(tr, "compile")
                        self.bench_e2e(pipe, model, mode)
                    except Exception as exc:  # noqa: BLE001
                        self.emit_error(base, exc)
                        self.free()
            del pipe
        self.unset_compiled(tr)
        del tr
        torch._dynamo.reset()
        self.free()

    def summary(self):
        lines = ["", "# summary (impl torch; " + self.common["gpu"] + ", torch " + self.common["torch"]
                 + ", diffusers " + self.common["diffusers"] + ")"]
        hdr = f"{'model':<9} {'res':>5} {'mode':<8} {'ms/step':>9} {'TFLOP/s':>8} {'compile s':>9} " \
              f"{'peak alloc MiB':>14} {'peak rsvd MiB':>13}"
        lines += [hdr, "-" * len(hdr)]
        for r in self.records:
            if r.get("bench") != "transformer" or "stage" in r or "res" not in r:
                continue
            if "error" in r or "skipped" in r:
                note = "ERROR " + r["error"][:60] if "error" in r else "skipped: " + r["skipped"]
                lines.append(f"{r['model']:<9} {r['res']:>5} {r['mode']:<8} {note}")
                continue
            lines.append(f"{r['model']:<9} {r['res']:>5} {r['mode']:<8} {r['ms_per_step']:>9.2f} "
                         f"{r['tflops']:>8.1f} {r.get('compile_s', '') or '':>9} "
                         f"{r['peak_alloc_mib'] if r['peak_alloc_mib'] is not None else '-':>14} "
                         f"{r['peak_reserved_mib'] if r['peak_reserved_mib'] is not None else '-':>13}")
        e2e = [r for r in self.records if r.get("bench") == "e2e"]
        if e2e:
            hdr2 = f"{'e2e model':<9} {'res':>5} {'mode':<8} {'encode s':>9} {'sample s':>9} {'decode s':>9} " \
                   f"{'total s':>8} {'pipe s':>7} {'peak alloc MiB':>14}"
            lines += ["", hdr2, "-" * len(hdr2)]
            for r in e2e:
                if "error" in r or "skipped" in r or "stage" in r:
                    note = "ERROR " + r.get("error", "")[:60] if "error" in r else "skipped"
                    lines.append(f"{r['model']:<9} {r.get('res', ''):>5} {r.get('mode', ''):<8} {note}")
                    continue
                lines.append(f"{r['model']:<9} {r['res']:>5} {r['mode']:<8} {r['encode_s']:>9.3f} "
                             f"{r['sample_s']:>9.3f} {r['decode_s']:>9.3f} {r['total_s']:>8.3f} "
                             f"{r['pipe_call_s']:>7.3f} "
                             f"{r['peak_alloc_mib'] if r['peak_alloc_mib'] is not None else '-':>14}")
        n_err = sum(1 for r in self.records if "error" in r)
        n_skip = sum(1 for r in self.records if "skipped" in r)
        if n_err or n_skip:
            lines.append(f"# {n_err} error record(s), {n_skip} skipped (details in the JSON lines)")
        lines.append(f"# wall time {time.perf_counter() - self.t_start:.1f} s")
        print("\n".join(lines), flush=True)

    def run(self):
        args = self.args
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        for m in models:
            if m not in TRANSFORMER_CONFIGS:
                raise SystemExit(f"unknown model {m!r}; known: {', '.join(TRANSFORMER_CONFIGS)}")
        res_default = "64,128" if args.tiny else "512,1024"
        resolutions = [int(r) for r in (args.res or res_default).split(",") if r.strip()]
        for r in resolutions:
            if r % 16:
                raise SystemExit(f"resolution {r} is not a multiple of 16")
        modes_default = "eager,cudnn,compile" if self.cuda else "eager,compile"
        modes = [m.strip() for m in (args.modes or modes_default).split(",") if m.strip()]
        for m in modes:
            if m not in ("eager", "cudnn", "compile", "regional"):
                raise SystemExit(f"unknown mode {m!r}")
        log(f"{self.common['gpu']} | torch {self.common['torch']} | diffusers {self.common['diffusers']} | "
            f"models {models} res {resolutions} modes {modes} e2e {args.e2e}")
        for model in models:
            self.run_model(model, resolutions, modes)
        self.summary()
        if self.out:
            self.out.close()


def main(argv=None):
    args = parse_args(argv)
    if args.tiny and "TORCHINDUCTOR_COMPILE_THREADS" not in os.environ and args.device == "cpu":
        os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"  # keep a CPU smoke test light
    Bench(args).run()


if __name__ == "__main__":
    main()
