/**
 * Reference kernels of the class-sharded losses (`src/losses/sharded.ts`), in float64:
 * a logit shard's statistics and gradient, and a head shard's two phases (the head's own,
 * src/reference/margin_head.ts, over the shard's rows of W).
 *
 * @module
 */
import type { LogitShardGradProblem, LogitShardProblem, LogitShardStats, ShardKernels } from "../kernels/shards.ts";
import { headShardKernels } from "../kernels/shards.ts";
import { cosines, headGrads, headStats } from "./margin_head.ts";
import { linearShardGrads, linearShardStats } from "./linear_cross_entropy.ts";
import { hardLogit, isHard, subcenter } from "../kernels/hard_label.ts";

/**
 * Row i's logits z_j = scale * clamp?(x_j) or softcap c tanh(x_j / c) (the label's: its target) and dz_j / dx_j;
 * with sub-centres x_j is class j's winning column, whose index goes into `win`; with the inter-class
 * options' `nonTarget`, a non-target above its cut becomes 0 (dz 0) and a hard one its transform.
 */
function rowLogits(p: LogitShardProblem, i: number, z: Float64Array, dz: Float64Array, win: Int32Array): void {
  const { c, logits, scale, clamp, softcap, nonTarget: nt } = p;
  const k = p.subcenters ?? 1;
  for (let j = 0; j < c; j++) {
    win[j] = (i * c + j) * k + subcenter(logits, (i * c + j) * k, k);
    const x = logits[win[j]];
    let xc = clamp ? Math.min(1, Math.max(-1, x)) : x;
    z[j] = scale * xc;
    dz[j] = xc === x ? scale : 0;
    if (nt && j !== p.local[i]) {
      if (xc > nt.cut) xc = z[j] = dz[j] = 0;
      if (nt.rows && isHard(xc, j, nt.rows[2 * i], nt.rows[2 * i + 1])) {
        const [value, slope] = hardLogit(nt, xc);
        z[j] = scale * value;
        dz[j] *= slope;
      }
    }
    if (softcap) {
      const t = Math.tanh(z[j] / softcap);
      z[j] = softcap * t;
      dz[j] *= 1 - t * t;
    }
  }
  const y = p.local[i];
  if (y >= 0) [z[y], dz[y]] = [p.target[2 * i], p.target[2 * i + 1]];
}

/** Per row: the max over the shard's logits, the sum of e^(z - max) over the non-label ones, and `below`. */
export function logitShardStats(p: LogitShardProblem): LogitShardStats {
  const { n, c } = p;
  const max = new Float64Array(n), sum = new Float64Array(n), below = p.smoothing ? new Float64Array(n) : null;
  const z = new Float64Array(c), dz = new Float64Array(c), win = new Int32Array(c);
  for (let i = 0; i < n; i++) {
    if (p.local[i] === -2) continue;
    rowLogits(p, i, z, dz, win);
    let m = -Infinity, s = 0, b = 0;
    for (let j = 0; j < c; j++) m = Math.max(m, z[j]);
    for (let j = 0; j < c; j++) {
      if (j !== p.local[i]) s += Math.exp(z[j] - m);
      b += (p.weight ? p.weight[j] : 1) * (m - z[j]);
    }
    max[i] = m;
    sum[i] = s;
    if (below) below[i] = b;
  }
  return { max, sum, below };
}

/** The shard's gradient: `dz/dx (A e^(z - max) - U w)` off the label, `G` at it, 0 for ignored rows. */
export function logitShardGrads(p: LogitShardGradProblem): Float32Array {
  const { n, c } = p;
  // (sub-centres: each class's gradient at its winning column, 0 at the others)
  const k = p.subcenters ?? 1;
  const g = p.out ?? new Float32Array(n * c * k);
  const z = new Float64Array(c), dz = new Float64Array(c), win = new Int32Array(c);
  for (let i = 0; i < n; i++) {
    g.fill(0, i * c * k, (i + 1) * c * k);
    if (p.local[i] === -2) continue;
    rowLogits(p, i, z, dz, win);
    for (let j = 0; j < c; j++) {
      g[win[j]] = dz[j] * (p.A[i] * Math.exp(z[j] - p.max[i]) - p.U[i] * (p.weight ? p.weight[j] : 1));
    }
    if (p.local[i] >= 0) g[win[p.local[i]]] = p.G[i];
  }
  return g;
}

/** The reference kernels of the sharded losses. */
export const referenceShardKernels: ShardKernels = {
  logitShardStats,
  logitShardGrads,
  ...headShardKernels({ stats: headStats, grads: headGrads }, cosines),
  linearShardStats,
  linearShardGrads,
};
