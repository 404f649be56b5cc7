/**
 * The `metric` family: the metric-learning staples of SPEC §8 on the similarities of
 * L2-normalised embeddings (`ntXent`, `tripletMargin`, `multiSimilarity`, `proxyAnchor`).
 *
 * Every backend does the same four steps: normalise the rows (`h = f / max(||f||, 1e-12)`,
 * and the proxies), form the similarities `S = h h^T` (`[B, B]`; proxyAnchor `h p^T`,
 * `[B, C]`), walk them one anchor row at a time to take the loss and its derivative
 * `A = dL/dS` (the mining happens in that walk: no list of pairs or triplets is ever
 * formed), then send A back: `dL/dh = (A + A^T) h` (`A p` and `dL/dp = A^T h` for
 * proxies) and through the normalisation. The loss is reduced inside the kernel (a
 * triplet loss's denominator, the triplets with a positive loss, is only known after the
 * walk), so a kernel returns one row: the loss, and gradients already scaled by the
 * upstream value.
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix } from "../types.ts";

/** The losses of the family. */
export type MetricLoss = "ntXent" | "tripletMargin" | "multiSimilarity" | "proxyAnchor";

/** tripletMargin's triplet selection (SPEC §8). */
export type Mining = "all" | "hard" | "semihard" | "batchHard";

/** The codes of {@linkcode Mining} the kernels take. */
export const MINING_CODES: Readonly<Record<Mining, number>> = { all: 0, hard: 1, semihard: 2, batchHard: 3 };

/** The prepared problem of a loss of the family. */
export interface MetricProblem extends Prepared {
  readonly loss: MetricLoss;
  /** Rows of f. */
  readonly b: number;
  readonly d: number;
  /** Embeddings `[B, D]` (normalised by the kernel). */
  readonly f: Float32Array;
  readonly labels: Int32Array;
  /** proxyAnchor's proxies `[C, D]` (normalised by the kernel), else null. */
  readonly proxies: Float32Array | null;
  /** Rows of the proxies (0 without). */
  readonly c: number;
  /** ntXent's temperature. */
  readonly temperature: number;
  /** tripletMargin's and proxyAnchor's margin. */
  readonly margin: number;
  readonly mining: Mining;
  /** tripletMargin: `log(1 + e^v)` instead of `relu(v)`. */
  readonly soft: boolean;
  /** multiSimilarity's alpha and proxyAnchor's alpha. */
  readonly alpha: number;
  /** multiSimilarity's beta and base. */
  readonly beta: number;
  readonly base: number;
  /**
   * The number of ordered positive pairs `(a, p)`, `y_a = y_p`, `a != p` (ntXent's
   * denominator), and of the classes present in the batch (proxyAnchor's `|P+|`).
   */
  readonly pairs: number;
  readonly present: number;
  /** The upstream gradient (1 by default). */
  readonly upstream: number;
  readonly outF: Matrix | null;
  readonly outProxies: Matrix | null;
}

/** The number of ordered pairs of different rows with equal labels, and of distinct labels. */
export function labelCounts(labels: Int32Array): { pairs: number; present: number } {
  const counts = new Map<number, number>();
  for (const y of labels) counts.set(y, (counts.get(y) ?? 0) + 1);
  let pairs = 0;
  for (const n of counts.values()) pairs += n * (n - 1);
  return { pairs, present: counts.size };
}

/** `log(1 + e^x)` without overflow or loss of digits. */
export function softplus(x: number): number {
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}

/** `1 / (1 + e^-x)` without overflow. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}
