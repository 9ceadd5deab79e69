"""mmsafety core: model adapters, image I/O, placement, run records, registries."""

import os

# Same config and seed, same bytes on a CPU (docs/reliability.md): Intel MKL, torch's CPU BLAS, may
# otherwise change how many threads one matrix product uses from call to call when the machine is busy,
# and with them the order of its sums (Intel's guide to reproducible results asks for a fixed thread
# count). Set before torch's first product; a value the user set is kept.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

__version__ = "0.1.0"
