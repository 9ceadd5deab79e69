"""attack=worst_case: per image, the first member that succeeds on the validation prompts wins (later
members skip that image), else the lowest validation loss; each member's cost is recorded; a rerun
resumes from the members' finished images; members inherit the budget and take their overrides."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

import visual_attacks.worst_case as wc
from mmsafety.attack_case import AttackBase
from mmsafety.errors import ConfigError
from mmsafety.models.pixels import pil_to_pixels
from visual_attacks.config import AttackConfig
from visual_attacks.craft import Crafted, CraftedImage, save_png
from visual_attacks.judge import reload_png


def worst_case_attack(**overrides):
    return OmegaConf.merge(OmegaConf.structured(AttackConfig), wc.preset("worst_case"), overrides)


def test_members_take_the_worst_cases_budget_then_their_own_overrides():
    members = dict(wc.member_attacks(worst_case_attack(eps="4/255", steps=40)))
    assert list(members) == ["default", "apgd", "pgd_restarts"]
    assert all(m.eps == "4/255" and m.steps == 40 and m.images_per_batch == 1 for m in members.values())
    assert members["default"].optimizer == "adam" and members["apgd"].optimizer == "apgd"  # from their presets
    restart = members["pgd_restarts"]
    assert (restart.optimizer, restart.random_start, restart.restarts, restart.objective.name) == ("sign", True, 4, "tool_misuse")


@pytest.mark.parametrize("members,message", [
    ([{"name": "a", "preset": "tool_call"}, {"name": "a", "preset": "apgd"}], "two members are named 'a'"),
    ([{"name": "a", "preset": "no_such_preset"}], "not in conf/attack"),
    ([], "needs attack.members"),
])
def test_bad_members_are_one_line(members, message):
    with pytest.raises(ConfigError, match=message):
        wc.member_attacks(worst_case_attack(members=members))


class FakeRun:
    """Members that each paint the images a grey of their own; a table says what the validation scores are."""

    def __init__(self, outcome):
        self.outcome, self.asked = outcome, []  # outcome[(member, image)] = (validation loss, success)

    def craft(self, case, adapter, bases, member, folder, indices, log=print, config_sha256=None):
        self.asked.append((member.name, list(indices)))
        shade = {"default": 0.2, "apgd": 0.5, "pgd_restarts": 0.8}[member.name]
        images = {}
        for i in indices:
            png = save_png(torch.full((3, 4, 4), shade), folder / "images", i, "adversarial")
            clean = save_png(torch.zeros(3, 4, 4), folder / "images", i, "clean")
            images[i] = CraftedImage(clean, png, 0.0, member.steps, 1.5)
        return Crafted(images, {}, 1.5, {})

    def score(self, case, adapter, attack):
        return lambda base, png: self.outcome[(png.parent.parent.name, int(base.key))]


def test_first_success_wins_else_lowest_validation_loss_and_a_rerun_resumes(tmp_path, monkeypatch):
    outcome = {("default", 0): (0.9, False), ("default", 1): (0.8, False), ("default", 2): (0.7, False),
               ("apgd", 0): (0.5, True), ("apgd", 1): (0.3, False), ("apgd", 2): (0.2, True),
               ("pgd_restarts", 1): (0.4, False)}
    fake = FakeRun(outcome)
    monkeypatch.setattr(wc, "craft", fake.craft)
    monkeypatch.setattr(wc, "ValidationScore", fake.score)
    bases = [AttackBase(str(i), None, {}) for i in range(3)]
    attack = worst_case_attack(steps=7)
    out = wc.craft_worst_case(None, None, bases, attack, tmp_path, [0, 1, 2], log=lambda *_: None)
    # apgd succeeded on images 0 and 2: only image 1 went on to pgd_restarts.
    assert fake.asked == [("default", [0, 1, 2]), ("apgd", [0, 1, 2]), ("pgd_restarts", [1])]
    assert {i: d["attack_won"] for i, d in out.details.items()} == {0: "apgd", 1: "apgd", 2: "apgd"}
    # Image 1: nobody succeeded; apgd's 0.3 is the lowest validation loss (pgd_restarts 0.4, default 0.8).
    shade = pil_to_pixels(reload_png(out.images[1].adversarial_png))
    assert torch.allclose(shade, torch.full_like(shade, 0.5), atol=1 / 255)
    assert out.images[1].steps_run == 21 and out.images[0].steps_run == 14  # each member it needed: 7 steps
    assert [m["attack"] for m in out.details[1]["members"]] == ["default", "apgd", "pgd_restarts"]
    assert out.details[0]["members"][1] == {"attack": "apgd", "steps_run": 7, "seconds": 1.5, "validation_loss": 0.5,
                                            "validation_success": True}
    fake.asked.clear()
    again = wc.craft_worst_case(None, None, bases, attack, tmp_path, [0, 1, 2], log=lambda *_: None)
    assert fake.asked == []  # every member's images were finished: nothing is attacked again
    assert {i: d["attack_won"] for i, d in again.details.items()} == {0: "apgd", 1: "apgd", 2: "apgd"}


def test_a_success_beats_a_lower_loss_that_failed(tmp_path, monkeypatch):
    fake = FakeRun({("default", 0): (0.1, False), ("apgd", 0): (0.6, True)})
    monkeypatch.setattr(wc, "craft", fake.craft)
    monkeypatch.setattr(wc, "ValidationScore", fake.score)
    attack = worst_case_attack(members=[{"name": "default", "preset": "tool_call"}, {"name": "apgd", "preset": "apgd"}])
    out = wc.craft_worst_case(None, None, [AttackBase("0", None, {})], attack, tmp_path, [0], log=lambda *_: None)
    assert out.details[0]["attack_won"] == "apgd"


def test_summary_and_leaderboard_say_who_won_and_the_budget_saved():
    from types import SimpleNamespace

    from visual_attacks.leaderboard import cells
    from visual_attacks.summary import summarize

    def sample(won, steps_run):
        return {"status": "ok", "adversarial": {"syntax": 1.0}, "clean": {"syntax": 0.0}, "stealth": {"linf": 0.1},
                "steps_run": steps_run, "steps_budget": 100, "attack_seconds": 1.0, "attack_won": won}

    m = summarize([sample("apgd", 50), sample("default", 100), sample("apgd", 30)])
    assert m["won_by"] == {"apgd": 2, "default": 1}
    assert m["budget_saved"] == pytest.approx(1 - 180 / 300)
    row = SimpleNamespace(spec={"headline": "syntax", "eps": 16 / 255, "norm": "linf"}, metrics=m, model="organism",
                          status="completed", seconds=1.0, note="")
    c = cells(row)
    assert c["note"] == "won by apgd 2, default 1; 40.0% of passes saved by early stop"


def test_validation_success_needs_every_validation_prompt_and_never_the_held_out_ones():
    from types import SimpleNamespace

    from mmsafety.synthetic import scenes
    from visual_attacks.craft import success_check, validation_success
    from visual_attacks.objectives import PromptSampler, SampledObjective
    from visual_attacks.targets import ToolTarget

    target = ToolTarget("send_email", "function_call", scenes.SEND_EMAIL_CALL)
    sampler = PromptSampler([f"train prompt {i}" for i in range(20)], 4, 0, validation_size=3)
    objective = SampledObjective(lambda px, items: px.flatten(1).mean(1), sampler)
    seen = []

    class Adapter:
        def generate(self, images, prompts, max_new_tokens):
            seen.extend(prompts)
            # image 0 answers every prompt with the call; image 1 all but the last validation prompt
            return [target.render(p) if (i < 3 or p != sampler.validation[-1]) else "red" for i, p in enumerate(prompts)]

    case = SimpleNamespace(target=target, headline="syntax", max_new_tokens=32, heldout=["held-out prompt"])
    check = validation_success(case, Adapter(), objective)
    assert check(torch.zeros(2, 3, 4, 4)).tolist() == [True, False]
    assert set(seen) == set(sampler.validation)  # the held-out prompts are never asked
    no_target = SimpleNamespace(headline="top1")
    attack = OmegaConf.create({"early_stop_success": True})
    with pytest.raises(ConfigError, match="has no validation-prompt check"):
        success_check(no_target, Adapter(), objective, attack)
