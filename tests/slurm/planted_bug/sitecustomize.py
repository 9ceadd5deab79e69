"""A bug planted for tests/test_slurm.py: with this folder on PYTHONPATH and MMSAFETY_TEST_BUG_IN_SHARD=i,
the GOAT eval of shard i raises a RuntimeError from this file (a stand-in for a bug in mmsafety or a
plug-in: every config check passes, the code then raises). Python imports sitecustomize at start-up,
so the SLURM job (which inherits the submitting process's environment) carries it too."""

import os

if os.environ.get("MMSAFETY_TEST_BUG_IN_SHARD"):
    import goat_bench.evaluate as _module

    _real = _module.evaluate

    def evaluate(cfg, *args, **kwargs):
        if cfg.shard == int(os.environ["MMSAFETY_TEST_BUG_IN_SHARD"]):
            raise RuntimeError("planted bug: index 7 out of range")
        return _real(cfg, *args, **kwargs)

    _module.evaluate = evaluate
