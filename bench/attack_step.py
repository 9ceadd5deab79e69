"""Cost of one PGD step of our loop vs a bare forward+backward of the same model and batch,
and prompt-steps/s with B prompts per batched step vs one prompt per step, in one run.

    python bench/attack_step.py [--steps 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench._common import save, timed, timed_pair  # noqa: E402
from mmsafety.models.execution import recomputing  # noqa: E402
from mmsafety.models.sequences import prompt_target_batch, token_nll  # noqa: E402
from mmsafety.synthetic import prompts as prompt_sets  # noqa: E402
from mmsafety.synthetic import scenes  # noqa: E402
from tests.helpers import load_builtin  # noqa: E402
from visual_attacks.objectives import PromptSampler, target_string  # noqa: E402
from visual_attacks.pgd import PGDConfig, pgd  # noqa: E402
from visual_attacks.targets import ToolTarget  # noqa: E402


def bare_steps(adapter, target, prompts: list[str], clean: torch.Tensor, steps: int):
    """A callable running `steps` bare forward+backward passes of one batch (each prompt with the
    clean image, tokenised once): the model's loss and the gradient to the pixels, nothing else.
    Under placement.gradient_checkpointing the layers recompute, as in the attack."""
    ids, mask, labels = prompt_target_batch([adapter.prompt_ids(p) for p in prompts],
                                            [adapter.answer_ids(target.render(p)) for p in prompts], adapter.pad_id)
    ids, mask, labels = ids.to(adapter.device), mask.to(adapter.device), labels.to(adapter.device)
    x = clean.to(adapter.device).repeat(len(prompts), 1, 1, 1)

    def bare():
        for _ in range(steps):
            px = x.clone().requires_grad_(True)
            with recomputing(adapter._recomputed):
                nll, _ = token_nll(adapter.model, ids, mask, labels, pixel_values=adapter.preprocess(px).to(adapter.dtype))
            torch.autograd.grad(nll.mean(), px)
    return bare


def our_steps(adapter, target, prompts: list[str], clean: torch.Tensor, steps: int, per_step: int | None = None):
    """A callable running our PGD loop for `steps` steps, `per_step` prompts (default: all of
    `prompts`, then every step sees exactly the bare batch) drawn from `prompts` each step."""
    sampler = PromptSampler(prompts, per_step or len(prompts), seed=0)
    objective = target_string(adapter, target, sampler)
    return lambda: pgd(objective, clean, PGDConfig(steps=steps, keep_best=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--prompts", type=int, default=8)
    args = ap.parse_args()
    adapter = load_builtin("organism")
    target = ToolTarget("send_email", "function_call", scenes.SEND_EMAIL_CALL)
    clean = adapter.to_input_pixels([s.image for s in scenes.scenes(0, 1)])
    train = prompt_sets.benign_prompts("train")
    steps = args.steps

    fixed = train[: args.prompts]
    bare = bare_steps(adapter, target, fixed, clean, steps)

    def ours(b: int, prompts=train):
        return our_steps(adapter, target, prompts, clean, steps, b)

    # Same model and batch: our loop samples the step's prompts from exactly the bare batch's prompts.
    # The two alternate, so drift in the machine's speed hits both alike.
    ours_fixed = ours(args.prompts, fixed)
    t_bare, t_ours = (t / steps for t in timed_pair(bare, ours_fixed, 9))
    print(f"one PGD step, {args.prompts} prompts, organism on CPU: ours {t_ours * 1000:.1f} ms, "
          f"bare forward+backward {t_bare * 1000:.1f} ms, overhead {t_ours / t_bare:.3f}x")
    rates = {}
    for b in (1, 4, 8, 16):
        rates[b] = b / (timed(ours(b), 2) / steps)
        print(f"  B={b:2}: {rates[b]:7.1f} prompt-steps/s  ({rates[b] / rates[1]:.2f}x one prompt per step)")
    path = save("attack_step", {"prompts": args.prompts, "steps": steps, "ms_per_step_ours": t_ours * 1000,
                                "ms_per_step_bare": t_bare * 1000, "overhead": t_ours / t_bare,
                                "prompt_steps_per_s": rates})
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
