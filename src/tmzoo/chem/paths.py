"""All-pairs shortest paths and the bond features along them, for one molecule at a time.

Both builders work on whole ``[N, N]`` arrays (a BFS from every atom at once, or a vectorised
Floyd–Warshall), never per-pair Python recursion.
"""

from __future__ import annotations

import functools

import numpy as np

UNREACHABLE = 510
"""Distance given to pairs in different fragments (the reference's convention)."""

NO_HOP = 0
"""Path code of a hop beyond the end of the path."""

NON_BOND = 1
"""Path code of a hop between two atoms that are not bonded (reference quirk only)."""


def _adjacency(edge_index: np.ndarray, n: int) -> np.ndarray:
    adj = np.zeros((n, n), dtype=bool)
    adj[edge_index[0], edge_index[1]] = True
    return adj


def _bond_codes(edge_index: np.ndarray, edge_attr: np.ndarray, n: int) -> np.ndarray:
    """``[N+1, N+1, F]`` path codes per ordered atom pair: bond feature + 2, or NON_BOND.

    Row and column N are a sentinel for "no atom" and hold NO_HOP.
    """
    codes = np.full((n + 1, n + 1, edge_attr.shape[1]), NON_BOND, dtype=np.uint8)
    codes[n, :] = NO_HOP
    codes[:, n] = NO_HOP
    codes[edge_index[0], edge_index[1]] = edge_attr + 2
    return codes


def shortest_paths(edge_index: np.ndarray, n: int) -> np.ndarray:
    """Hop distances ``[N, N]`` (int16, UNREACHABLE across fragments), by BFS from every atom.

    All sources advance together: ``reach @ step`` grows every ball by one bond, and the
    distance of a pair is the number of levels before it was reached. Small dense matrix
    products beat a sparse-graph library here: molecules have tens of atoms.
    """
    step = np.eye(n, dtype=np.float32)
    step[edge_index[0], edge_index[1]] = 1.0
    reach = step.copy()
    reached = np.eye(n, dtype=np.float32)  # sum over levels d of "within d bonds"
    unreached = n * n - np.count_nonzero(reach)
    depth = 1
    while unreached:
        reached += reach
        depth += 1
        grown = reach @ step
        np.minimum(grown, 1.0, out=grown)
        left = n * n - np.count_nonzero(grown)
        if left == unreached:
            break
        reach, unreached = grown, left
    levels = depth - reached
    return np.where(reach > 0, levels, UNREACHABLE).astype(np.int16)


@functools.lru_cache(maxsize=256)
def _pair_grid(n: int, max_hops: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source and target atom of every flattened pair, and hop numbers ``[max_hops, 1]`` (read-only)."""
    flat = np.arange(n * n)
    grid = (flat // n, flat % n, np.arange(max_hops)[:, None])
    for array in grid:
        array.setflags(write=False)
    return grid


def path_bond_codes(
    edge_index: np.ndarray, edge_attr: np.ndarray, n: int, max_hops: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``[N, N]`` and bond codes ``[N, N, max_hops, F]`` along one true shortest path.

    From atom i towards j the path steps to the lowest-numbered neighbour that is one bond
    closer to j. Codes are ``feature + 2`` on a hop and 0 (NO_HOP) past the end of the path.
    """
    dist = shortest_paths(edge_index, n)
    f = edge_attr.shape[1]
    if edge_index.shape[1] == 0:
        return dist, np.zeros((n, n, max_hops, f), dtype=np.uint8)
    codes = np.full((n * n + 1, f), NON_BOND, dtype=np.uint8)  # row i*n+j: bond i-j; last row: NO_HOP
    codes[-1] = NO_HOP
    codes[edge_index[0] * n + edge_index[1]] = edge_attr + 2
    closer = (dist[None, :, :] == dist[:, None, :] - 1) & (dist == 1)[:, :, None]  # [i, u, j]
    nxt = closer.argmax(axis=1)  # [i, j] -> next atom from i towards j
    hops = np.where(dist >= UNREACHABLE, 0, dist).ravel()
    source, target, hop_index = _pair_grid(n, max_hops)
    atoms = np.empty((max_hops + 1, n * n), dtype=np.int64)  # atoms[t]: t-th atom of each path
    atoms[0] = source
    for hop in range(min(max_hops, int(hops.max()))):
        atoms[hop + 1] = nxt[atoms[hop], target]
    pairs = atoms[:-1] * n + atoms[1:]
    pairs[hop_index >= hops] = n * n
    return dist, codes.take(pairs.T, axis=0).reshape(n, n, max_hops, f)


def floyd_warshall_via(adj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's Floyd–Warshall: distances and ``via[i, j]``, the last strictly improving k."""
    n = adj.shape[0]
    dist = np.where(adj, 1, UNREACHABLE).astype(np.int64)
    np.fill_diagonal(dist, 0)
    via = np.zeros((n, n), dtype=np.int64)
    for k in range(n):
        candidate = dist[:, k, None] + dist[None, k, :]
        better = candidate < dist
        dist = np.where(better, candidate, dist)
        via = np.where(better, k, via)
    unreachable = dist >= UNREACHABLE
    dist[unreachable] = UNREACHABLE
    via[unreachable] = UNREACHABLE
    return dist, via


def reference_path_bond_codes(
    edge_index: np.ndarray, edge_attr: np.ndarray, n: int, max_hops: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Distances and bond codes exactly as the reference builds them (SPEC "Shortest paths").

    The recursive rebuild ``path(i, j) = path(i, k) + [k] + path(k, j)`` (empty when
    ``via[i, j] == 0``) is done for all pairs at once by repeatedly inserting ``via`` between
    consecutive atoms of every sequence; only the first ``max_hops + 1`` atoms matter.
    """
    dist, via = floyd_warshall_via(_adjacency(edge_index, n))
    codes = _bond_codes(edge_index, edge_attr, n)
    pad = n  # sentinel atom
    keep = max_hops + 1
    seq = np.full((n, n, keep), pad, dtype=np.int64)
    seq[:, :, 0] = np.arange(n)[:, None]
    seq[:, :, 1] = np.arange(n)[None, :]
    length = np.full((n, n), 2, dtype=np.int64)
    via_ext = np.zeros((n + 1, n + 1), dtype=np.int64)
    via_ext[:n, :n] = np.where(via == UNREACHABLE, 0, via)
    while True:
        left, right = seq[:, :, :-1], seq[:, :, 1:]
        inner = via_ext[left, right]
        valid = (np.arange(keep - 1)[None, None, :] < (length - 1)[..., None]) & (inner != 0)
        if not valid.any():
            break
        # interleave: a0 [k01] a1 [k12] a2 ... then compact away the empty slots
        wide = np.full((n, n, 2 * keep - 1), pad, dtype=np.int64)
        present = np.zeros((n, n, 2 * keep - 1), dtype=bool)
        wide[:, :, 0::2] = seq
        present[:, :, 0::2] = np.arange(keep)[None, None, :] < length[..., None]
        wide[:, :, 1::2] = np.where(valid, inner, pad)
        present[:, :, 1::2] = valid
        order = np.argsort(~present, axis=-1, kind="stable")
        seq = np.take_along_axis(wide, order, axis=-1)[:, :, :keep]
        length = np.minimum(present.sum(-1), keep)
        seq = np.where(np.arange(keep)[None, None, :] < length[..., None], seq, pad)
    out = np.zeros((n, n, max_hops, edge_attr.shape[1]), dtype=np.uint8)
    hops = np.arange(max_hops)[None, None, :] < (length - 1)[..., None]
    hop_codes = codes[seq[:, :, :-1], seq[:, :, 1:]]
    out[:] = np.where(hops[..., None], hop_codes, NO_HOP)
    eye = np.eye(n, dtype=bool)
    out[eye] = NO_HOP
    out[dist >= UNREACHABLE] = NO_HOP
    return dist, out
