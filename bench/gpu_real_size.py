"""A llava-1.5-7b-sized random-init model in bf16 on one GPU: PGD step time, peak memory at
B = 1 and 8 prompts per step, achieved TFLOP/s against the card's bf16 peak, with and without
activation checkpointing (and torch.compile with --compile). Needs CUDA; `--size small` runs the
same code on a small config (on the CPU too) to check the script itself.

    python bench/gpu_real_size.py [--steps 10] [--compile]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import (  # noqa: E402
    CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
)

from bench._common import save  # noqa: E402
from mmsafety.models.llava import LlavaAdapter  # noqa: E402
from mmsafety.organisms.tiny_llava import CLIP_MEAN, CLIP_STD  # noqa: E402
from mmsafety.organisms.tokenizer import train_tokenizer  # noqa: E402
from mmsafety.placement import resolve_placement  # noqa: E402
from mmsafety.synthetic import prompts as prompt_sets  # noqa: E402
from mmsafety.synthetic import scenes  # noqa: E402
from visual_attacks.objectives import PromptSampler, target_string  # noqa: E402
from visual_attacks.pgd import PGDConfig, pgd  # noqa: E402
from visual_attacks.targets import ToolTarget  # noqa: E402

# llava-1.5-7b: CLIP ViT-L/14 at 336 px (penultimate layer) and a Llama-2-7B language model.
SIZES = {
    "llava-1.5-7b": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
                         text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)),
    "small": dict(vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
                  text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)),
}
# Input resolution: llava-1.5's 336 px (576 image tokens); the small config checks the scripts at
# 112 px (64 image tokens), a loaded 2-core CPU being ~10x slower per step at 336.
IMAGE_SIZES = {"llava-1.5-7b": 336, "small": 112}
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "RTX 4090": 165.0}  # dense


def random_llava(size: str, device: str, dtype: torch.dtype, vision_layers: int | None = None,
                 text_layers: int | None = None):
    """(model, processor) of a random-init LLaVA-1.5 of `size` (depths overridable), at IMAGE_SIZES[size] px."""
    tokenizer = train_tokenizer()
    pixels = IMAGE_SIZES[size]
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": pixels}, crop_size={"height": pixels, "width": pixels},
                                           image_mean=CLIP_MEAN, image_std=CLIP_STD),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template)
    dims = {tower: dict(d) for tower, d in SIZES[size].items()}
    if vision_layers is not None:
        dims["vision"]["num_hidden_layers"] = vision_layers
    if text_layers is not None:
        dims["text"]["num_hidden_layers"] = text_layers
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=pixels, patch_size=14, projection_dim=768, **dims["vision"]),
        text_config=LlamaConfig(vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
                                bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                num_key_value_heads=dims["text"]["num_attention_heads"], **dims["text"]),
        image_token_id=tokenizer.image_token_id, vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=(pixels // 14) ** 2)
    with torch.device(device):  # initialised where it runs: a 7B model is 14 GB in bf16
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    return model, processor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=sorted(SIZES), default="llava-1.5-7b")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="also measure placement.compile=true")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and args.size != "small":
        sys.exit("bench/gpu_real_size.py: no CUDA device visible; run it on a GPU machine (or --size small to check it)")
    device, dtype = ("cuda:0", torch.bfloat16) if cuda else ("cpu", torch.float32)
    model, processor = random_llava(args.size, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    target = ToolTarget("send_email", "function_call", scenes.SEND_EMAIL_CALL)
    card = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak_tflops = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in card), None)
    print(f"{args.size} random init, {params / 1e9:.2f}B parameters, {dtype}, {card}")
    rows = []
    for compiled in ([False, True] if args.compile else [False]):
        for checkpointing in (False, True):
            placement = resolve_placement(device, str(dtype).removeprefix("torch."), None, checkpointing, compiled)
            adapter = LlavaAdapter(model, processor, placement, f"{args.size}-random", "random-init")
            clean = adapter.to_input_pixels([s.image for s in scenes.scenes(0, 1)])
            for b in (1, 8):
                objective = target_string(adapter, target, PromptSampler(prompt_sets.benign_prompts("train"), b, seed=0))
                pgd(objective, clean, PGDConfig(steps=2))  # warm-up (and the compile)
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                pgd(objective, clean, PGDConfig(steps=args.steps))
                if cuda:
                    torch.cuda.synchronize()
                step_s = (time.perf_counter() - start) / args.steps
                with FlopCounterMode(display=False) as flops:
                    pgd(objective, clean, PGDConfig(steps=1))
                tflops = flops.get_total_flops() / step_s / 1e12
                row = {"compile": compiled, "checkpointing": checkpointing, "prompts": b, "ms_per_step": step_s * 1000,
                       "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None, "tflops": tflops,
                       "share_of_bf16_peak": tflops / peak_tflops if peak_tflops else None}
                rows.append(row)
                peak = f"{row['peak_gib']:.1f} GiB" if cuda else "n/a on the CPU"
                print(f"  compile={compiled!s:5} checkpointing={checkpointing!s:5} B={b}: {row['ms_per_step']:.1f} ms/step, "
                      f"peak memory {peak}, {tflops:.3g} TFLOP/s"
                      + (f" ({row['share_of_bf16_peak']:.0%} of the card's bf16 peak)" if peak_tflops else ""))
            if compiled:
                torch._dynamo.reset()
    path = save("gpu_real_size", {"size": args.size, "parameters": params, "card": card, "steps": args.steps, "rows": rows})
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
