"""One attack job: the craft stage (visual_attacks.craft) then the judge stage
(visual_attacks.judge), with one sample per attacked image in the record. The job's model judges; it also crafts unless
`attack.surrogates` names an ensemble to craft on (visual_attacks.surrogates).

What to attack, the loss and the judge come from the configured attack case (conf/case/).
Every success rate comes from the saved 8-bit PNG, reloaded from disk and passed through
the model's own (non-differentiable) processor; the clean image's rates under the same
judge are the baseline in every report.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from mmsafety.attack_case import AttackCase
from mmsafety.attack_case import build_case as build_registered_case
from mmsafety.cli.job_log import say_once
from mmsafety.models.base import ModelAdapter
from mmsafety.models.pixels import pixels_to_pil
from mmsafety.preemption import SaveOnSignal
from mmsafety.records import RunRecord
from visual_attacks.craft import craft, pgd_config, save_png, write_loss_curve  # noqa: F401  (stable names)
from visual_attacks.deploy import build_deploy
from visual_attacks.ensemble import Surrogate
from visual_attacks.eot import describe as describe_eot
from visual_attacks.judge import judge_pair, reload_png  # noqa: F401  (stable names)
from visual_attacks.pgd import read_state
from visual_attacks.stealth import lpips_available, lpips_note
from visual_attacks.summary import rescore, summarize  # noqa: F401  (stable names)
from visual_attacks.surrogates import display_name, load_surrogate, surrogate_specs
from visual_attacks.worst_case import craft_worst_case


def build_case(cfg) -> AttackCase:
    """The configured case (conf/case/), looked up by `case.name` among the registered cases: the
    attack never imports the workload that supplies it (goat_bench supplies the meme verdict case)."""
    case_cfg = OmegaConf.to_container(cfg.case, resolve=True) if OmegaConf.is_config(cfg.case) else dict(cfg.case)
    return build_registered_case(case_cfg, cfg.attack.objective.name)


def run_attack(cfg, adapter: ModelAdapter, record: RunRecord, log=print, case: AttackCase | None = None) -> dict:
    """Craft and judge on `adapter`; `case`: the case already built from `cfg` (built here if None)."""
    case = case if case is not None else build_case(cfg)
    pcfg = pgd_config(cfg.attack)
    deploy = build_deploy(cfg.get("deploy"))  # none in the config: the saved PNGs unchanged
    out_dir = record.out_dir
    case.prepare(adapter)
    bases = case.bases()
    notes = [] if lpips_available() else [lpips_note()]
    specs = surrogate_specs(cfg.attack)
    record.update(
        model={"name": cfg.model.name, "id": adapter.model_id, "adapter": adapter.name, "weights_sha256": adapter.weights_sha256},
        spec={"workload": "visual_attack", "attack": cfg.attack.name, "objective": cfg.attack.objective.name, **case.spec(),
              "headline": case.headline, "norm": pcfg.norm, "eps": pcfg.eps, "step_size": pcfg.step_size,
              "steps": pcfg.steps, "prompts_per_step": cfg.attack.prompts_per_step, "images": len(bases), "notes": notes,
              "sample_key": ["image"], "group_by": list(case.group_by), "deploy": deploy.spec(),
              # What the transfer matrix labels its rows with: the crafting model(s) and the transforms.
              "surrogates": [s.display_name for s in specs] or [display_name(cfg.model)],
              "surrogate_weights": [s.weight for s in specs] or [1.0],
              "eot": describe_eot(cfg.attack.get("eot")), "optimizer": cfg.attack.optimizer,
              **({"members": [dict(m) for m in OmegaConf.to_container(cfg.attack.members, resolve=True)]}
                 if cfg.attack.get("members") else {}),
              **({"canvas_max_side": cfg.attack.canvas_max_side} if specs else {})},
    )
    for note in notes:
        say_once(note, log)  # once per process, not once per job of a sweep
    done = record.done_keys(("image",))
    missing = {i for i in range(len(bases)) if (i,) not in done}
    resumed = resume_point(out_dir, len(bases) - len(missing), len(bases), record.data["config_sha256"])
    if resumed:
        log(resumed)
    if missing:
        checks = []

        def held_out_check(step, best_x, indices):
            """The best images so far, rounded to 8 bits as a PNG would store them, deployed and judged like the final ones."""
            rates = [case.judge(adapter, deploy.image(pixels_to_pil(x.cpu())), bases[i]).rates for i, x in zip(indices, best_x)]
            mean = {k: sum(r[k] for r in rates) / len(rates) for k in rates[0]}
            checks.append({"step": step, "images": [indices[0], indices[-1] + 1], "rates": mean})
            log(f"step {step}: held-out {case.headline} {mean[case.headline]:.1%}")

        # With surrogates, model= judges and they craft (one of them may be model= itself, loaded once).
        surrogates = [Surrogate(spec.display_name, spec.weight, load_surrogate(spec, cfg.placement, cfg.model, adapter))
                      for spec in specs] or None
        if cfg.attack.get("members"):  # attack=worst_case: several attacks per image, the winner judged
            crafted = craft_worst_case(case, adapter, bases, cfg.attack, out_dir, missing, log=log,
                                       config_sha256=record.data["config_sha256"])
        else:
            crafted = craft(case, adapter, bases, cfg.attack, out_dir, missing, monitor=held_out_check, log=log,
                            surrogates=surrogates, config_sha256=record.data["config_sha256"])
        del surrogates  # their weights are not needed to judge
        # A cluster's signal while judging is held to the end of the image being judged, which is written;
        # the requeued job takes the crafted chunks from their saved results (craft.save_crafted).
        with SaveOnSignal() as held:
            for i in sorted(missing):
                held.stop_here(record.write)
                image = crafted.images[i]
                judged = judge_pair(case, adapter, bases[i], image.clean_png, image.adversarial_png, deploy)
                record.add_sample({
                    "image": i, "key": bases[i].key, "status": "ok", "clean_png": str(image.clean_png.relative_to(out_dir)),
                    "adversarial_png": str(image.adversarial_png.relative_to(out_dir)), "best_loss": image.best_loss,
                    "steps_run": image.steps_run, "steps_budget": pcfg.steps * max(1, len(cfg.attack.get("members") or ())),
                    "attack_seconds": image.seconds, **crafted.details.get(i, {}), **judged, "base": bases[i].info,
                })
                record.checkpoint()
        record.update(artifacts={"loss_curve": crafted.loss_curve}, held_out_checks=checks, execution=crafted.execution)
        for state in [*out_dir.glob("attack_state*.pt"), *out_dir.glob("members/*/attack_state*.pt")]:  # every sample is written: nothing left to resume
            state.unlink(missing_ok=True)
    return summarize(record.samples, case.group_by)


def resume_point(out_dir: Path, done: int, total: int, config_sha256: str | None = None) -> str | None:
    """Where a rerun of an interrupted attack starts: the images already judged, and the step of
    each chunk's saved attack state (attack.checkpoint_every) that this config saved. None for a fresh run."""
    states = []
    for path in sorted(out_dir.glob("attack_state_images*.pt")):
        try:
            state = read_state(path)
            if state.get("config_sha256") != config_sha256:
                continue  # another config's (a replaced failed run): the attack starts that chunk afresh
            step = state["step"]
        except Exception:  # the attack itself reports a state it cannot load
            step = "an unreadable state"
        states.append(f"{path.stem.removeprefix('attack_state_')} from step {step}")
    if not done and not states:
        return None
    where = f"; {', '.join(states)} (saved attack state)" if states else ""
    return f"resuming: {done} of {total} images already attacked and judged{where}"
