/**
 * The model of the example, forward and backward by hand: a shared backbone
 * (`h = relu(W1 x + b1)`, feature `f = normalize(W2 h)`), one linear head per expert on
 * `f` (`z_e = V_e f + c_e`), a gating head (`softmax(Wg h)`) and a coarse head (`Wq h`),
 * plus learnable class centres. Trained with Adam. Matrices are row-major
 * `Float32Array`s; every layer keeps its gradient beside its weights.
 *
 * @module
 */
import type { Rng } from "./data.ts";

/** A dense layer `y = x W^T + b`, W `[out, in]`, with its gradient and Adam moments. */
export class Linear {
  readonly w: Float32Array;
  readonly b: Float32Array;
  readonly gw: Float32Array;
  readonly gb: Float32Array;
  constructor(readonly inputs: number, readonly outputs: number, rng: Rng, bias = true) {
    // He initialisation (std sqrt(2 / in)).
    this.w = rng.normals(outputs * inputs, Math.sqrt(2 / inputs));
    this.b = new Float32Array(bias ? outputs : 0);
    this.gw = new Float32Array(this.w.length);
    this.gb = new Float32Array(this.b.length);
  }
  /** `y [n, out]` for `x [n, in]`. */
  forward(x: Float32Array, n: number): Float32Array {
    const { inputs: d, outputs: o, w, b } = this, y = new Float32Array(n * o);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < o; j++) {
        let s = b.length ? b[j] : 0;
        for (let k = 0; k < d; k++) s += x[i * d + k] * w[j * d + k];
        y[i * o + j] = s;
      }
    }
    return y;
  }
  /** Adds `dW += dy^T x`, `db += sum dy` and returns `dx = dy W` (added into `dx` if given). */
  backward(
    x: Float32Array,
    dy: Float32Array,
    n: number,
    dx: Float32Array = new Float32Array(n * this.inputs),
  ): Float32Array {
    const { inputs: d, outputs: o, w, gw, gb } = this;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < o; j++) {
        const g = dy[i * o + j];
        if (g === 0) continue;
        if (gb.length) gb[j] += g;
        for (let k = 0; k < d; k++) {
          gw[j * d + k] += g * x[i * d + k];
          dx[i * d + k] += g * w[j * d + k];
        }
      }
    }
    return dx;
  }
  /** The parameters and their gradients, for the optimiser. */
  params(): [Float32Array, Float32Array][] {
    return [[this.w, this.gw], [this.b, this.gb]];
  }
}

/** Adam (Kingma and Ba 2015) over a list of (parameter, gradient) pairs; zeroes the gradients after each step. */
export class Adam {
  #m: Float32Array[];
  #v: Float32Array[];
  #t = 0;
  constructor(
    readonly params: [Float32Array, Float32Array][],
    public lr: number,
    readonly b1 = 0.9,
    readonly b2 = 0.999,
  ) {
    this.#m = params.map(([p]) => new Float32Array(p.length));
    this.#v = params.map(([p]) => new Float32Array(p.length));
  }
  step(): void {
    this.#t++;
    const { b1, b2 } = this, c1 = 1 - b1 ** this.#t, c2 = 1 - b2 ** this.#t;
    this.params.forEach(([p, g], i) => {
      const m = this.#m[i], v = this.#v[i];
      for (let j = 0; j < p.length; j++) {
        m[j] = b1 * m[j] + (1 - b1) * g[j];
        v[j] = b2 * v[j] + (1 - b2) * g[j] * g[j];
        p[j] -= this.lr * (m[j] / c1) / (Math.sqrt(v[j] / c2) + 1e-8);
        g[j] = 0;
      }
    });
  }
}

/** Row-wise `x / max(||x||, 1e-12)` and the norms. */
export function normalizeRows(x: Float32Array, n: number, d: number): { f: Float32Array; norms: Float32Array } {
  const f = new Float32Array(n * d), norms = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += x[i * d + k] ** 2;
    norms[i] = Math.max(Math.sqrt(s), 1e-12);
    for (let k = 0; k < d; k++) f[i * d + k] = x[i * d + k] / norms[i];
  }
  return { f, norms };
}

/** The gradient through `f = x / ||x||`: `dx = (df - f (f . df)) / ||x||`. */
export function normalizeBackward(f: Float32Array, norms: Float32Array, df: Float32Array, n: number, d: number) {
  const dx = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    let dot = 0;
    for (let k = 0; k < d; k++) dot += f[i * d + k] * df[i * d + k];
    for (let k = 0; k < d; k++) dx[i * d + k] = (df[i * d + k] - f[i * d + k] * dot) / norms[i];
  }
  return dx;
}

/** Row-wise softmax. */
export function softmaxRows(a: Float32Array, n: number, d: number): Float32Array {
  const p = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    let m = -Infinity, s = 0;
    for (let k = 0; k < d; k++) m = Math.max(m, a[i * d + k]);
    for (let k = 0; k < d; k++) s += p[i * d + k] = Math.exp(a[i * d + k] - m);
    for (let k = 0; k < d; k++) p[i * d + k] /= s;
  }
  return p;
}

/** The gradient through `p = softmax(a)`: `da = p (dp - sum p dp)`. */
export function softmaxBackward(p: Float32Array, dp: Float32Array, n: number, d: number): Float32Array {
  const da = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    let dot = 0;
    for (let k = 0; k < d; k++) dot += p[i * d + k] * dp[i * d + k];
    for (let k = 0; k < d; k++) da[i * d + k] = p[i * d + k] * (dp[i * d + k] - dot);
  }
  return da;
}

/** The sizes of a model. */
export interface ModelConfig {
  inputs: number;
  hidden: number;
  /** Feature width D. */
  features: number;
  classes: number;
  groups: number;
  experts: number;
}

/** What a forward pass keeps for its backward pass. */
export interface Forward {
  n: number;
  x: Float32Array;
  /** Hidden activations (after the ReLU). */
  h: Float32Array;
  /** Normalised features `[n, D]` and the norms they were divided by. */
  f: Float32Array;
  norms: Float32Array;
  /** One logit matrix `[n, C]` per expert. */
  expertLogits: Float32Array[];
  /** Gating weights `[n, E]` (softmax), when the model has more than one expert. */
  gating: Float32Array | null;
  /** Coarse logits `[n, K]`, when the model has more than one expert. */
  coarse: Float32Array | null;
}

/** Gradients of the loss w.r.t. the model's outputs. */
export interface OutputGrads {
  features?: Float32Array;
  expertLogits: Float32Array[];
  gating?: Float32Array;
  coarse?: Float32Array;
}

/** The network. With one expert it is a plain classifier (backbone and one linear head). */
export class Model {
  readonly l1: Linear;
  readonly l2: Linear;
  readonly heads: Linear[];
  readonly gate: Linear | null;
  readonly coarseHead: Linear | null;
  /** Class centres `[C, D]` (physMoe's centre regularisation), with their gradient. */
  readonly centers: Float32Array;
  readonly gCenters: Float32Array;
  constructor(readonly cfg: ModelConfig, rng: Rng) {
    const { inputs, hidden, features, classes, experts } = cfg;
    this.l1 = new Linear(inputs, hidden, rng);
    this.l2 = new Linear(hidden, features, rng, false);
    this.heads = Array.from({ length: experts }, () => new Linear(features, classes, rng));
    const moe = experts > 1;
    this.gate = moe ? new Linear(hidden, experts, rng) : null;
    this.coarseHead = moe ? new Linear(hidden, cfg.groups, rng) : null;
    this.centers = moe ? normalizeRows(rng.normals(classes * features), classes, features).f : new Float32Array(0);
    this.gCenters = new Float32Array(this.centers.length);
  }
  /** Every parameter with its gradient. */
  params(): [Float32Array, Float32Array][] {
    const layers = [this.l1, this.l2, ...this.heads, this.gate, this.coarseHead].filter((l) => l !== null);
    return [...layers.flatMap((l) => l.params()), [this.centers, this.gCenters]];
  }
  forward(x: Float32Array, n: number): Forward {
    const h = this.l1.forward(x, n).map((v) => Math.max(v, 0));
    const { f, norms } = normalizeRows(this.l2.forward(h, n), n, this.cfg.features);
    const gating = this.gate ? softmaxRows(this.gate.forward(h, n), n, this.cfg.experts) : null;
    const coarse = this.coarseHead ? this.coarseHead.forward(h, n) : null;
    return { n, x, h, f, norms, expertLogits: this.heads.map((l) => l.forward(f, n)), gating, coarse };
  }
  /** Accumulates the parameter gradients from the gradients w.r.t. the outputs. */
  backward(fw: Forward, g: OutputGrads): void {
    const { n, x, h, f, norms } = fw, { features: d, hidden, experts } = this.cfg;
    const df = g.features ? Float32Array.from(g.features) : new Float32Array(n * d);
    this.heads.forEach((l, e) => l.backward(f, g.expertLogits[e], n, df));
    const dh = this.l2.backward(h, normalizeBackward(f, norms, df, n, d), n);
    if (this.gate && g.gating) this.gate.backward(h, softmaxBackward(fw.gating!, g.gating, n, experts), n, dh);
    if (this.coarseHead && g.coarse) this.coarseHead.backward(h, g.coarse, n, dh);
    for (let i = 0; i < n * hidden; i++) if (h[i] === 0) dh[i] = 0; // ReLU
    this.l1.backward(x, dh, n);
  }
}
