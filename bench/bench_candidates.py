"""Could k-means (IVF) candidate lists make the threshold predictor sub-quadratic? Run by hand (issue 13).

For each layer and head of one extracted long sequence, the keys are assigned to ``--clusters``
k-means centroids fitted on another sequence's keys (as a fitted predictor would store them); each
query visits its ``m`` clusters of highest centroid score (an IVF probe), and keeps the visited keys
whose score clears the α-entmax threshold of the visited keys plus the predictor's calibrated margin
(the threshold of a subset is a lower bound of the row's: method.md §1). Two spaces:

- ``projected``: the stored threshold predictor's rank-r scores ``q'·k'``, margin at ``--recall``;
- ``exact``: the true scores ``q·k/√d``, margin 0 (an IVF route to exact attention).

Prints, per layer and for the whole sequence, the recall of the gold graph and the share of keys
each query scored (the work an IVF route does, against 1.0 for the quadratic predictor). Every
``--stride``-th query is probed.

    python bench/bench_candidates.py --dataset <extracted 4,096-token dataset> \\
        --stored proj24-thr-<id> --store artifacts/store --clusters 64 --probes 8,16,24
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import Tensor

from sparsefinder.attention import cpu_rows
from sparsefinder.dataset import GoldDataset
from sparsefinder.faiss_backend import kmeans
from sparsefinder.store import ArtifactStore


def probe(q: Tensor, k: Tensor, centroids: Tensor, margin: float, probes: list[int], gold: Tensor) -> Tensor:
    """``(1 + len(probes), 3)``: gold pairs hit, gold pairs and keys scored, for the full row threshold
    and for each IVF probe count. ``q`` ``(m, r)``, ``k`` ``(n, r)``, ``centroids`` ``(C, r)``, ``gold`` ``(m, n)`` bool.
    """
    m, n = q.shape[0], k.shape[0]
    z = q @ k.T
    everyone = torch.full((m,), n)
    kept = z - cpu_rows.row_thresholds(z.contiguous(), everyone)[:, None] >= margin
    out = [[int((kept & gold).sum()), int(gold.sum()), m * n]]
    assign = torch.cdist(k, centroids).argmin(1)
    order = (q @ centroids.T).argsort(1, descending=True)
    for p in probes:
        visited = torch.zeros(m, centroids.shape[0], dtype=torch.bool).scatter_(1, order[:, :p], True)[:, assign]
        zc = torch.where(visited, z, torch.tensor(-1e4))
        t = cpu_rows.row_thresholds(zc.contiguous(), everyone)
        kept = visited & (z - t[:, None] >= margin)
        out.append([int((kept & gold).sum()), int(gold.sum()), int(visited.sum())])
    return torch.tensor(out, dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="extracted dataset with at least 2 sequences")
    parser.add_argument("--stored", required=True, help="id of a stored threshold predictor (proj…-thr)")
    parser.add_argument("--store", default="artifacts/store")
    parser.add_argument("--clusters", type=int, default=64)
    parser.add_argument("--probes", default="8,16,24", help="comma-separated clusters visited per query")
    parser.add_argument("--recall", type=float, default=0.99)
    parser.add_argument("--stride", type=int, default=8, help="probe every stride-th query")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    probes = [int(p) for p in args.probes.split(",")]
    seq, other = list(GoldDataset(args.dataset, limit=2))
    predictor = ArtifactStore(args.store).load(args.stored)
    print(json.dumps({"dataset": args.dataset, "length": seq.length, "predictor": args.stored,
                      "clusters": args.clusters, "stride": args.stride, "threads": args.threads}))
    rows = torch.arange(0, seq.length, args.stride)
    routes = ["full"] + [f"probe{p}" for p in probes]
    totals: dict[str, Tensor] = {}
    for layer in range(len(seq.gold)):
        qp, kp = predictor.project(seq.inputs(layer))
        _, ko = predictor.project(other.inputs(layer))
        margins = predictor.margins(layer, args.recall)
        gold = seq.gold[layer].to_dense()[0][:, rows]  # (H, m, n)
        scale = seq.queries[layer].shape[-1] ** -0.5
        spaces = {"projected": lambda h: (qp[0, h, rows], kp[0, h], ko[0, h], float(margins[h])),
                  "exact": lambda h: (seq.queries[layer][h, rows].float() * scale, seq.keys[layer][h].float(),
                                      other.keys[layer][h].float(), 0.0)}
        for space, parts in spaces.items():
            found = torch.zeros(len(routes), 3, dtype=torch.float64)
            for h in range(qp.shape[1]):
                q, k, k_other, margin = parts(h)
                found += probe(q, k, kmeans(k_other, args.clusters, seed=h), margin, probes, gold[h])
            totals[space] = totals.get(space, 0) + found
            print(json.dumps({"layer": layer, "space": space, **_summary(found, routes)}), flush=True)
    for space, total in totals.items():
        print(json.dumps({"layer": "all", "space": space, **_summary(total, routes)}))


def _summary(found: Tensor, routes: list[str]) -> dict:
    """Recall of the gold graph and share of the keys scored, per route (rows of :func:`probe`'s sums)."""
    full = float(found[0, 2])
    return {route: {"recall": round(float(hits / gold), 4), "keys_scored": round(float(scored) / full, 3)}
            for route, (hits, gold, scored) in zip(routes, found)}


if __name__ == "__main__":
    main()
