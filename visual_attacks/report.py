"""The short table an attack job prints when it ends (the eval prints its Acc / F1 table):
success rates with the clean image's rates beside them, the utility rates, and stealth."""

from __future__ import annotations

from mmsafety.numbers import pct_of


def _percent(value) -> str:
    return pct_of(value, unit=" %") or "-"


def _number(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_attack_table(metrics: dict) -> str:
    """Rates in % on the held-out set, judged on the saved 8-bit PNGs; stealth as means over images."""
    if not metrics.get("images"):
        return "no image was attacked (see the record's skipped reasons)"
    asr, clean = metrics.get("asr") or {}, metrics.get("clean_baseline") or {}
    width = max([len(k) for k in asr] + [len(k) for k in metrics.get("utility") or {}] + [18]) + 2
    lines = [f"{'success':{width}}{'attacked':>10}{'clean':>10}"]
    lines += [f"{key:{width}}{_percent(asr[key]):>10}{_percent(clean.get(key)):>10}" for key in asr]
    utility, counts = metrics.get("utility") or {}, metrics.get("utility_counts") or {}
    if utility:
        lines.append(f"{'utility':{width}}{'rate':>10}{'images':>10}")
        lines += [f"{key:{width}}{_percent(value):>10}{counts.get(key, ''):>10}" for key, value in utility.items()]
    s = metrics.get("stealth") or {}
    lines.append(f"stealth: SSIM {_number(s.get('ssim'), '.3f')}, PSNR {_number(s.get('psnr'), '.1f')} dB, "
                 f"L-inf {_number(s.get('linf'), '.4f')} ({_number(None if s.get('linf') is None else s['linf'] * 255, '.1f')}/255), "
                 f"L2 {_number(s.get('l2'), '.3f')}, LPIPS {_number(s.get('lpips'), '.3f')}")
    lines.append(f"{metrics['images']} image(s), {_number(metrics.get('steps_run'), '.0f')} steps, "
                 f"{_number(metrics.get('attack_seconds'), '.1f')} s of attack")
    return "\n".join(lines)
