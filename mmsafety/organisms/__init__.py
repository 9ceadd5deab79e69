"""Tiny random-init models and trained model organisms, built in code and cached on disk.

Each builder writes an ordinary Hugging Face / open_clip checkpoint into
`$MMSAFETY_CACHE`; adapters then load it through the same `from_pretrained` path as a
real checkpoint, so the tests exercise the real loading code.
"""
