"""Distinct counts in bounded memory: exact for a few values, then HyperLogLog.

An online window counts its distinct users and its distinct recommended items, and the
worker writes every open window to its changelog after each micro-batch
(:mod:`stream_app.windows.persistence`). Sets of ids would make that record grow with the
window's audience (200,000 users: about 2 MB, over Apache Kafka's 1 MiB default limit). A :class:`DistinctSketch` is at most ``2 ** P`` one-byte registers (4 KiB; about
5.5 KB in a window record) whatever the number of values.

- Up to :data:`SPARSE_MAX` distinct values it keeps their 64-bit hashes: the count is exact
  (barring a 64-bit collision).
- Beyond, it is a HyperLogLog (Flajolet et al., 2007) of ``2 ** P`` registers: standard error
  ``1.04 / sqrt(2 ** P)`` = 1.6 %, with linear counting for small estimates (no bias tables,
  so in the range of about 2.5 to 5 times ``2 ** P`` values the raw estimate can be a few per
  cent high).

Values are hashed deterministically (blake2b for strings, splitmix64 for integers), so a sketch
written by one worker and read by another (or after a restart) keeps counting the same values
the same way.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

P = 12
M = 1 << P
SPARSE_MAX = 128  # values kept exactly before switching to registers
_LOW_BITS = 64 - P
_LOW_MASK = np.uint64((1 << _LOW_BITS) - 1)
_ALPHA = 0.7213 / (1 + 1.079 / M)


def hash_strings(values: Iterable[str]) -> np.ndarray:
    """64-bit hashes (blake2b) of ``values``, as uint64."""
    b2 = hashlib.blake2b
    return np.fromiter((int.from_bytes(b2(v.encode(), digest_size=8).digest(), "little")
                        for v in values), dtype=np.uint64)


def hash_ints(values: np.ndarray) -> np.ndarray:
    """64-bit hashes (splitmix64 finaliser) of integers, as uint64."""
    z = np.asarray(values).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class DistinctState:
    """A :class:`DistinctSketch` as data: exactly one of the two fields is set.

    ``hashes``: the values' 64-bit hashes, sorted (exact phase); ``registers``: the ``M``
    HyperLogLog registers, one byte each.
    """

    hashes: tuple[int, ...] | None
    registers: bytes | None


class DistinctSketch:
    """Count of distinct values added (see the module docstring for its accuracy)."""

    __slots__ = ("sparse", "registers")

    def __init__(self) -> None:
        self.sparse: set[int] | None = set()  # exact phase: the values' hashes
        self.registers: np.ndarray | None = None  # uint8[M] once past SPARSE_MAX

    def add_strings(self, values: Iterable[str]) -> None:
        self.add_hashes(hash_strings(values))

    def add_ints(self, values: np.ndarray) -> None:
        self.add_hashes(hash_ints(values))

    def add_hashes(self, hashes: np.ndarray) -> None:
        if not len(hashes):
            return
        if self.registers is None:
            self.sparse.update(np.unique(hashes).tolist())
            if len(self.sparse) <= SPARSE_MAX:
                return
            hashes = np.fromiter(self.sparse, dtype=np.uint64, count=len(self.sparse))
            self.registers = np.zeros(M, dtype=np.uint8)
            self.sparse = None
        idx = (hashes >> np.uint64(_LOW_BITS)).astype(np.intp)
        low = (hashes & _LOW_MASK).astype(np.float64)  # < 2**52: exact in a float64
        bit_length = np.frexp(low)[1]  # 0 for 0
        rho = (_LOW_BITS + 1 - bit_length).astype(np.uint8)  # leading zeros + 1
        np.maximum.at(self.registers, idx, rho)

    def count(self) -> int:
        if self.registers is None:
            return len(self.sparse)
        regs = self.registers
        est = _ALPHA * M * M / float(np.sum(np.ldexp(1.0, -regs.astype(np.int64))))
        if est <= 2.5 * M:
            zeros = int(np.count_nonzero(regs == 0))
            if zeros:
                est = M * math.log(M / zeros)
        return int(round(est))

    def __len__(self) -> int:
        return self.count()

    def snapshot(self) -> DistinctState:
        if self.registers is None:
            return DistinctState(hashes=tuple(sorted(self.sparse)), registers=None)
        return DistinctState(hashes=None, registers=self.registers.tobytes())

    @classmethod
    def restore(cls, state: DistinctState) -> DistinctSketch:
        if (state.hashes is None) == (state.registers is None):
            raise ValueError("a distinct-count state holds either hashes or registers")
        out = cls()
        if state.registers is not None:
            regs = np.frombuffer(state.registers, dtype=np.uint8)
            if len(regs) != M:
                raise ValueError(f"a distinct-count state holds {len(regs)} registers, "
                                 f"expected {M}")
            out.registers = regs.copy()
            out.sparse = None
        else:
            out.sparse = set(state.hashes)
        return out


__all__ = ["DistinctSketch", "DistinctState", "M", "P", "SPARSE_MAX", "hash_ints", "hash_strings"]
