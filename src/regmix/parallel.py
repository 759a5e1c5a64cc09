"""Shared low-level helpers for the numeric stages: thread pools with single-threaded BLAS,
and the blocked distance kernel that scoring a million candidates rests on."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import numpy as np

KERNEL_BLOCK = 4_194_304
"""Most kernel entries (candidates × runs) held at once per thread: 32 MiB of float64."""


def available_threads() -> int:
    """CPU cores this process may use (respects taskset/cgroup affinity, unlike cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All squared Euclidean distances between rows of a and rows of b, as one matmul."""
    d2 = (a * a).sum(axis=1)[:, None] - 2.0 * (a @ b.T)
    d2 += (b * b).sum(axis=1)[None, :]
    return np.maximum(d2, 0.0, out=d2)


@contextmanager
def quiet_convergence() -> Iterator[None]:
    """Silence scikit-learn's ConvergenceWarning: a GP length scale at its upper bound means
    the domain is irrelevant to the target, which is an answer, not a failure. Enter it also
    around thread pools: warning filters are process-wide and not thread-safe to toggle."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@contextmanager
def parallel(threads: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool whose workers run single-threaded BLAS, so they do not oversubscribe."""
    from threadpoolctl import threadpool_limits

    with (
        quiet_convergence(),
        threadpool_limits(1, user_api="blas"),
        ThreadPoolExecutor(threads) as pool,
    ):
        yield pool


_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def parallel_map(
    fn: Callable[[_Item], _Result], items: Iterable[_Item], threads: int
) -> list[_Result]:
    """`fn` of each item, in order: in this thread when `threads` <= 1, else on a `parallel`
    pool of that many threads."""
    if threads <= 1:
        return [fn(item) for item in items]
    with parallel(threads) as pool:
        return list(pool.map(fn, items))
