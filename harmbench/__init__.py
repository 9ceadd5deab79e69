"""HarmBench multimodal behaviours: behaviours -> test cases -> completions -> judge -> ASR.

Imports only `mmsafety` at import time; the PGD machinery of `visual_attacks` is reached
through the core's AttackCase contract (the attack job runs this package's case).
"""
