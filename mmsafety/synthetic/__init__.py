"""Deterministic synthetic data: benign prompts, tool-use scenes and GOAT-style memes.

Everything here is generated from explicit seeds, so the organism's training, the demo
and the tests see exactly the same data on every machine, with no download.
"""
