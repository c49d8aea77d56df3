"""Path features for many molecules at once (a proposal measured by ``run.py``).

``fast_path_bond_codes_many`` runs the algorithm of ``tmzoo.chem.paths.path_bond_codes`` on
molecules grouped by atom count, each group as ``[M, N, N]`` stacks, so every numpy call
serves M molecules. tmzoo's datamodules still featurise record by record.
"""

from __future__ import annotations

import numpy as np

from tmzoo.chem.paths import UNREACHABLE


def fast_path_bond_codes_many(
    graphs: list[tuple[np.ndarray, np.ndarray, int]], max_hops: int = 5
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`tmzoo.chem.paths.path_bond_codes` for many molecules at once (same results, same order).

    Molecules are grouped by atom count, and each group is processed as one stack
    ``[M, N, N]``: every numpy call then serves M molecules, which removes the per-call
    overhead that dominates for ~15-atom graphs. Meant for a dataset's one-off featurisation.
    """
    out: list = [None] * len(graphs)
    by_size: dict[int, list[int]] = {}
    for k, (_, _, n) in enumerate(graphs):
        by_size.setdefault(n, []).append(k)
    for n, members in by_size.items():
        for k, result in zip(members, _same_size(graphs, members, n, max_hops)):
            out[k] = result
    return out


def _same_size(graphs, members, n, max_hops):
    m = len(members)
    f = graphs[members[0]][1].shape[1]
    counts = np.array([graphs[k][0].shape[1] for k in members])
    mol = np.repeat(np.arange(m), counts)
    src = np.concatenate([graphs[k][0][0] for k in members]) if counts.sum() else np.zeros(0, np.int64)
    dst = np.concatenate([graphs[k][0][1] for k in members]) if counts.sum() else np.zeros(0, np.int64)
    attr = np.concatenate([graphs[k][1] for k in members]) if counts.sum() else np.zeros((0, f), np.int64)
    adj = np.zeros((m, n, n), dtype=bool)
    adj[mol, src, dst] = True
    step = adj.astype(np.float32)
    step[:, np.arange(n), np.arange(n)] = 1.0
    walks = [np.broadcast_to(np.eye(n, dtype=np.float32), (m, n, n))]
    seen = m * n
    for _ in range(1, n):
        grown = np.minimum(walks[-1] @ step, 1.0)
        count = np.count_nonzero(grown)
        if count == seen:
            break
        walks.append(grown)
        seen = count
    levels = np.stack(walks)  # [L, M, N, N]
    reachable = walks[-1] > 0
    dist = np.where(reachable, (levels > 0).argmax(axis=0), UNREACHABLE).astype(np.int64)
    closer = dist[:, None, :, :] == (dist - 1)[:, :, None, :]  # [M, i, u, j]
    closer &= adj[:, :, :, None]
    nxt = closer.argmax(axis=2).ravel()  # flat [M, i, j]
    base = (np.arange(m) * n * n)[:, None, None]
    cols = np.arange(n)
    seq = np.empty((max_hops + 1, m, n, n), dtype=np.int64)
    seq[0] = cols[:, None]
    for hop in range(max_hops):
        seq[hop + 1] = nxt.take(base + seq[hop] * n + cols)
    # bond codes per molecule: [M, N+1, N+1, F], row/column N = NO_HOP sentinel
    codes = np.full((m, n + 1, n + 1, f), 1, dtype=np.uint8)  # NON_BOND
    codes[:, n, :] = 0
    codes[:, :, n] = 0
    codes[mol, src, dst] = attr + 2
    sentinel = n * (n + 1) + n
    pair = seq[:-1] * (n + 1) + seq[1:]
    live = np.arange(max_hops)[:, None, None, None] < np.where(reachable, dist, 0)[None]
    pair = np.where(live, pair, sentinel).transpose(1, 2, 3, 0)  # [M, N, N, hops]
    pair = pair + (np.arange(m) * (n + 1) * (n + 1))[:, None, None, None]
    hop_codes = codes.reshape(-1, f).take(pair, axis=0)  # [M, N, N, hops, F]
    if not counts.sum():
        hop_codes[:] = 0
    return [(dist[i], hop_codes[i]) for i in range(m)]


__all__ = ["fast_path_bond_codes_many"]
