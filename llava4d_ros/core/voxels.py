"""Voxel keys in the gravity frame, and votes of voxels on being structure (floor, table
tops, walls) over views. Keys pack the three voxel indices, shifted positive, into one int64, so
sets of voxels are sorted int64 arrays (`np.unique`, `np.searchsorted`)."""

from __future__ import annotations

import numpy as np

_OFF = 1 << 20  # voxel indices shifted positive, 21 bits per axis
_BITS = 21
# key offsets of half of a voxel's 26 neighbours (the other half are their opposites)
HALF_NEIGHBOURS = np.array([(di << (2 * _BITS)) + (dj << _BITS) + dk
                            for di in (-1, 0, 1) for dj in (-1, 0, 1) for dk in (-1, 0, 1)
                            if (di, dj, dk) > (0, 0, 0)], np.int64)


def voxel_keys(p_g: np.ndarray, voxel_m: float) -> np.ndarray:
    """`(N,)` int64 keys of the voxels holding points `p_g (N, 3)` [m]."""
    ijk = np.floor(np.asarray(p_g, np.float64) / voxel_m).astype(np.int64) + _OFF
    return (ijk[:, 0] << (2 * _BITS)) | (ijk[:, 1] << _BITS) | ijk[:, 2]


def voxel_centres(keys: np.ndarray, voxel_m: float) -> np.ndarray:
    """`(N, 3)` centres [m] of voxels `keys (N,)`."""
    mask = (1 << _BITS) - 1
    ijk = np.stack([keys >> (2 * _BITS), (keys >> _BITS) & mask, keys & mask], axis=1)
    return (ijk - _OFF + 0.5) * voxel_m


class StructureVoxels:
    """Votes of voxels (`voxel_m`, gravity frame) on being structure: each view's points add
    a vote for structure or for not. A point in a voxel with at least `min_votes` structure
    votes and more structure than other votes is structure."""

    def __init__(self, voxel_m: float = 0.06, min_votes: int = 2):
        self.voxel_m = float(voxel_m)
        self.min_votes = int(min_votes)
        self.reset()

    def reset(self) -> None:
        self._keys = np.zeros(0, np.int64)
        self._votes = np.zeros((0, 2), np.int32)  # (structure, not) per key

    def vote(self, p_g: np.ndarray, is_structure: np.ndarray) -> np.ndarray:
        """Add this view's votes for points `p_g (N, 3)`; returns `(N,)` bool: points whose
        voxel is structure by the votes before this view."""
        keys = voxel_keys(p_g, self.voxel_m)
        out = np.zeros(keys.size, bool)
        if self._keys.size:
            j = np.minimum(np.searchsorted(self._keys, keys), self._keys.size - 1)
            known = self._keys[j] == keys
            v = self._votes[j]
            out = known & (v[:, 0] >= self.min_votes) & (v[:, 0] > v[:, 1])
        uk, inv = np.unique(keys, return_inverse=True)
        add = np.zeros((uk.size, 2), np.int32)
        np.add.at(add, (inv, np.where(is_structure, 0, 1)), 1)
        add = np.minimum(add, 1)  # one vote per view and voxel
        allk = np.concatenate([self._keys, uk])
        self._keys, inv2 = np.unique(allk, return_inverse=True)
        votes = np.zeros((self._keys.size, 2), np.int32)
        np.add.at(votes, inv2, np.concatenate([self._votes, add]))
        self._votes = votes
        return out

    def mark(self, p_g: np.ndarray, votes: int = 2) -> None:
        """Count points `(N, 3)` as structure `votes` times (an object that grew past the
        size of any object was structure)."""
        for _ in range(votes):
            self.vote(p_g, np.ones(p_g.shape[0], bool))
