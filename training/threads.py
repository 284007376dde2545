"""torch's intra-op thread count, kept across calls into libraries that change it.

umap-learn and pynndescent run numba kernels on numba's OpenMP layer, which sets the calling
thread's OpenMP thread count to every core and leaves it there. torch shares that OpenMP runtime,
so after one UMAP fit the thread's torch work used every core: ``--torch-threads 1`` in the
explorer was undone for the server thread that drew a UMAP map, and ``OMP_NUM_THREADS=1``
training runs went to 2 threads after a component initialisation (measured on 2 cores with three
runs side by side: 52 s epochs became 200 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None = None) -> Iterator[None]:
    """Set torch's threads to ``n`` (if given) while active, and restore the count found on entry after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
