"""The five GOAT-Bench tasks (Lin et al., arXiv 2401.01523) and the paper's reported numbers."""

from __future__ import annotations

# The five tasks and the adjective each prompt asks about. The core defines them once (its
# synthetic memes mirror GOAT-Bench, and the core may not import this package).
from mmsafety.synthetic.memes import ADJECTIVES, TASKS  # noqa: F401  (re-exported)

# Test memes per task in the paper (6,626 in all): the weights of the pooled "Overall" accuracy.
PAPER_COUNTS = {"hatefulness": 2000, "misogyny": 1000, "offensiveness": 743, "sarcasm": 1820, "harmfulness": 1063}

# Table 2, (accuracy, macro-F1) in %, per task then overall.
PAPER_TABLE2 = {
    "GPT-4V": {"hatefulness": (71.70, 71.28), "misogyny": (80.80, 80.79), "offensiveness": (61.78, 61.34),
               "sarcasm": (75.88, 75.08), "harmfulness": (65.91, 62.96), "overall": (72.17, 70.29)},
    "LLaVA-1.5 13B": {"hatefulness": (65.20, 61.40), "misogyny": (57.10, 48.68), "offensiveness": (58.68, 58.39),
                      "sarcasm": (73.52, 72.89), "harmfulness": (66.70, 64.35), "overall": (65.77, 61.14)},
    "Qwen-VL 10B": {"hatefulness": (64.00, 56.42), "misogyny": (71.40, 71.39), "offensiveness": (59.62, 59.21),
                    "sarcasm": (60.11, 54.12), "harmfulness": (61.35, 53.66), "overall": (63.13, 58.96)},
    "InstructBLIP 13B": {"hatefulness": (58.25, 57.42), "misogyny": (63.10, 62.70), "offensiveness": (50.61, 50.24),
                         "sarcasm": (63.41, 60.96), "harmfulness": (54.11, 53.93), "overall": (58.88, 57.05)},
}


def paper_rows() -> list[dict]:
    """Table 2 of the paper as leaderboard rows (accuracy and macro-F1 in %), marked as reported."""
    return [{"model": name, "reported": True, "source": "GOAT-Bench paper, Table 2",
             "per_task": {t: {"accuracy": acc, "macro_f1": f1} for t, (acc, f1) in row.items() if t != "overall"},
             "overall": {"accuracy": row["overall"][0], "macro_f1": row["overall"][1]}}
            for name, row in PAPER_TABLE2.items()]
