"""Times one diffusers Flux2Transformer2DModel step on CPU with random weights, same configs as
`models/examples/bench_step.rs`. Usage: python models/benchmarks/bench_step.py <small|klein4b-512> [runs] [threads]"""

import sys
import time

import torch
from diffusers import Flux2Transformer2DModel

CONFIGS = {
    "small": (dict(num_layers=2, num_single_layers=4, attention_head_dim=64, num_attention_heads=4,
                   joint_attention_dim=768, axes_dims_rope=(16, 16, 16, 16)), 16),
    "klein4b-512": (dict(num_layers=1, num_single_layers=2, attention_head_dim=128, num_attention_heads=24,
                         joint_attention_dim=7680, axes_dims_rope=(32, 32, 32, 32)), 32),
}


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "small"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    kwargs, grid = CONFIGS[name]
    model = Flux2Transformer2DModel(in_channels=128, timestep_guidance_channels=256, mlp_ratio=3.0, rope_theta=2000,
                                    guidance_embeds=False, **kwargs).eval()
    x = torch.randn(1, grid * grid, 128)
    txt = torch.randn(1, 512, kwargs["joint_attention_dim"])
    img_ids = torch.cartesian_prod(torch.arange(1), torch.arange(grid), torch.arange(grid), torch.arange(1))
    txt_ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(512))
    t = torch.tensor([0.5])
    times = []
    with torch.no_grad():
        for run in range(runs + 1):
            start = time.perf_counter()
            model(hidden_states=x, encoder_hidden_states=txt, timestep=t, img_ids=img_ids, txt_ids=txt_ids,
                  guidance=None, return_dict=False)
            ms = (time.perf_counter() - start) * 1000
            if run > 0:
                times.append(ms)
    times.sort()
    print(f"torch {torch.__version__} {name}: tokens {grid * grid} + 512 text, median {times[len(times) // 2]:.1f} ms "
          f"over {runs} runs ({[round(t, 1) for t in times]}), threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
