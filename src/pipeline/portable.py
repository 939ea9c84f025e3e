"""The same model bytes on every x86-64 CPU: which kernels torch and MKL may use (issue 15).

Float sums give other bits when a kernel adds in another order, and torch and MKL pick their
kernels by the CPU's instruction sets (AVX-512, AVX2, none). bench/portability.py emulates
other CPUs on one machine and shows which settings make every emulated CPU give the same model
bytes; those are SETTINGS. They cost CPU time (about twice the training time on an AVX-512
machine), so params.yaml's train.portable chooses. A stage that computes with torch (train,
evaluate; predict always pins) calls apply() before torch loads: torch, MKL and oneDNN read
their variable once, when first used, and ignore a later change.

Each is a default: a variable already set in the environment wins (to measure, or to trade
portability for speed on purpose).
"""

import os
import sys

SETTINGS = {
    # torch's own kernels (softmax, layer norm, GELU, reductions, adds): the plain C++ ones,
    # which every x86-64 CPU runs with the same order of operations.
    "ATEN_CPU_CAPABILITY": "default",
    # MKL's matrix products (nn.Linear, attention): one code path whatever the CPU.
    "MKL_CBWR": "COMPATIBLE",
    # oneDNN (some of the network's products go through it): the SSE4.1 code, the lowest
    # level it accepts, so a CPU with AVX2 or AVX-512 runs what one without them would.
    "ONEDNN_MAX_CPU_ISA": "SSE41",
}


def apply(pinned: bool = True) -> None:
    """Set SETTINGS in this process's environment, unless already set, when `pinned` (else
    leave the libraries their own choice); before torch loads, which is checked, since a
    later call would silently change nothing. Children (distributed training's workers)
    inherit the environment."""
    if "torch" in sys.modules:
        raise RuntimeError("pipeline.portable.apply() must run before torch is imported")
    if pinned:
        for name, value in SETTINGS.items():
            os.environ.setdefault(name, value)
