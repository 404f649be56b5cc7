/**
 * The embedding heads `marginHead`, `sphereface` and `lsoftmax`: logits from
 * embeddings `x [N, D]` and class weights `W [C, D]`, then cross-entropy, with
 * gradients w.r.t. `x` and `W`. What they share is defined here; each differs by
 * which side is normalised and by the label's logit (its "target").
 *
 * With `a_i = 1/max(||x_i||, 1e-12)` when x is normalised (else 1) and
 * `b_j = 1/max(||W_j||, 1e-12)` when W is (else 1), `u_ij = (x_i . W_j) a_i b_j`, every
 * logit is `s * u_ij` (clamped to [-1, 1] first for `marginHead`) except the label's,
 * `T_i(u_iy, ||x_i||, ||W_y||)`.
 *
 * @module
 */
import type { Definition, LossDef } from "../loss.ts";
import { result } from "../kernels/core.ts";
import type { CommonOptions, GpuMatrix, Labels, Matrix, Reduction, Tensor } from "../types.ts";
import type { AdafaceState } from "./adaface.ts";
import type { CurricularFaceState } from "./curricular_face.ts";
import * as v from "../validate.ts";
import { ARCFACE_KEYS, arcfaceTarget } from "./arcface.ts";
import { COMBINED_MARGIN_KEYS, combinedMarginTarget } from "./combined_margin.ts";
import { COSFACE_KEYS, cosfaceTarget } from "./cosface.ts";
import { outBuffer } from "../kernels/core.ts";
import { classList } from "./linear_cross_entropy.ts";
import {
  INTER_KEYS,
  interTransform,
  isRowArray,
  type MarginOptions,
  type Phi,
  ROW_MARGIN_KEYS,
  subcentersOf,
} from "./margin.ts";
import { normfaceTarget } from "./normface.ts";
import { type HeadProblem, norm, type RowStats, type Target, type TargetSpec } from "../kernels/head.ts";
import { type MarginSpec, type NonTarget, subcenter } from "../kernels/hard_label.ts";
import type { ArcfaceOptions } from "./arcface.ts";
import {
  type FaceData,
  type FaceRows,
  nextState,
  normGrads,
  type NormTerms,
  type RowsIn,
  STATE_FIELDS,
  stateInput,
} from "./face_margin.ts";
import { ADAFACE_KEYS, adafaceData, adafaceRows } from "./adaface.ts";
import { CURRICULAR_FACE_KEYS, curricularData, curricularRows } from "./curricular_face.ts";
import { MAGFACE_KEYS, magfaceData, magfaceParts, magfaceRows } from "./magface.ts";
import { lin } from "../kernels/deferred.ts";
import type { FaceTarget } from "../kernels/hard_label.ts";
import type { ShardTopK } from "../kernels/shards.ts";

/** Inputs of the embedding heads. */
export interface HeadInputs {
  /** Embeddings `[N, D]`. */
  x: Tensor;
  /** Class weights `[C, D]`, one row per class (as `nn.Linear`); `marginHead` with `subcenters` K: `[C*K, D]`. */
  W: Tensor;
  /** One class index per row, in `[0, C)` or `ignoreIndex`. */
  labels: Labels;
  /**
   * `marginHead` only (PartialFC, An et al. 2022): sorted distinct class indices `[S]` in `[0, C)`, e.g.
   * from `partialFcSample`; only their rows of W (`classes[r]*K .. +K-1`) take part in the softmax, every
   * non-ignored label must be among them, and `grads.W` is `[S*K, D]` in their order. None: every class.
   */
  classes?: Int32Array | readonly number[];
  /**
   * `marginHead` with a stateful kind only: the state so far, AdaFace's `{ mean, std }`
   * (`adafaceInit()` at the first step) or CurricularFace's `{ t }` (`{ t: 0 }`); the call
   * returns the next one as `state`. On WebGPU also a GPU matrix `[1, k]` (the fields in that order).
   */
  state?: AdafaceState | CurricularFaceState | GpuMatrix;
  /**
   * The class-sharded `marginHead` with kind `"curricularFace"` only: every row's label cosine `[N]`,
   * the sum over the shards of `sharded.marginHead.labelCosines` (one all-reduce of N floats).
   */
  labelCos?: Float32Array | readonly number[];
  /**
   * The class-sharded `marginHead` with `interTopK` k >= 1 only: every shard's top k merged, `mergeShardTopK` of
   * the shards' `sharded.marginHead.topK` (one all-gather of N k pairs per shard).
   */
  topK?: ShardTopK;
}

/** The parts of `marginHead`'s result, by kind: the next state of adaface and curricularFace, magface's `ce` and `g`. */
export interface MarginHeadParts {
  /** `"adaface"`, `"curricularFace"`: the next state (the one this call used): pass it to the next step. */
  state?: AdafaceState | CurricularFaceState;
  /** `"magface"`: the mean cross-entropy. */
  ce?: number;
  /** `"magface"`: the norms' regulariser `mean_i(a_i/u_a^2 + 1/a_i)`. */
  g?: number;
}

/** Gradients of the embedding heads. */
export interface HeadGrads {
  /** Gradient w.r.t. the embeddings `[N, D]`. */
  x: Matrix;
  /** Gradient w.r.t. the class weights `[C, D]` (`[C*K, D]` with sub-centres, `[S*K, D]` with `classes`). */
  W: Matrix;
}

/** Options every head takes. */
export interface HeadOptions extends CommonOptions {
  /** Rows with this label are ignored. @default -100 */
  ignoreIndex?: number;
  /** `"mean"`, `"sum"` or `"none"`. @default "mean" */
  reduction?: Reduction;
}

/** How a head is built: which sides are normalised, the scale, and its target. */
export interface HeadKind<O> {
  normX: boolean;
  normW: boolean;
  clamp: boolean;
  /** The options it takes besides `ignoreIndex` and `reduction` (a function when they depend on `kind`). */
  options: readonly string[] | ((o: O) => readonly string[]);
  /**
   * Checks the options and returns the scale and the target function (as a function and as data).
   * `n`, the batch's rows, where a per-row margin is taken (`marginHead`; without it one is refused).
   */
  parse(o: O, n?: number): { scale: number; target: Target; spec: TargetSpec; rowMargins?: readonly MarginSpec[] };
  /** `marginHead`'s inter-class options (SPEC §7): their non-target transform without rows and interTopK's k. */
  inter?(o: O): { nonTarget: NonTarget; k: number } | undefined;
  /**
   * The face margin kinds (SPEC §7): their rows from every row's label cosine and norm at once
   * (batch statistics, the state input), or null for the other kinds.
   */
  face?(o: O): ((r: RowsIn) => FaceRows) | null;
  /** The face margin kinds' rows as data (for the WebGPU head, which computes them itself), or null. */
  faceData?(o: O): FaceData | null;
  /** Whether it takes the option `subcenters` and the input `classes` (`marginHead`). */
  sampled?: boolean;
}

/**
 * Labels local to `classes` (their index in it; ignored rows -1). A label outside `[lo, hi)` (a
 * shard's range) maps to `outside`; inside, one not among `classes` is a `RangeError`.
 */
export function sampledLabels(
  labels: Int32Array,
  classes: Int32Array,
  lo = 0,
  hi = Infinity,
  outside = -1,
): Int32Array {
  const at = new Map<number, number>();
  classes.forEach((k, r) => at.set(k, r));
  return labels.map((y, i) => {
    if (y < 0) return -1;
    if (y < lo || y >= hi) return outside;
    const r = at.get(y);
    if (r === undefined) {
      throw new RangeError(`Expected labels[${i}] (${y}) to be one of classes, got a class not in it`);
    }
    return r;
  });
}

/**
 * Row i's `[||x_i||, ||W_y||, x_i . W_y]` with W's rows of class `first` on (the last two 0 without a
 * label there). With sub-centres K (`marginHead`: both sides normalised), W_y is class y's winning row
 * (`subcenter`, the rule of every kernel: the largest cosine clamped to [-1, 1], ties to the smaller
 * row, the first NaN wins); with `rows`, local class y is W's class block `rows[y]`.
 */
export function labelStats(
  x: Float32Array,
  W: Float32Array,
  d: number,
  labels: Int32Array,
  first: number,
  K = 1,
  rows: Int32Array | null = null,
): RowStats {
  const classes = rows ? rows.length : W.length / (d * K);
  return (i) => {
    const y = labels[i] - first, nx = norm(x, i * d, d);
    if (labels[i] < 0 || y < 0 || y >= classes) return [nx, 0, 0];
    const r0 = (rows ? rows[y] : y) * K, dots = new Float64Array(K), nws = new Float64Array(K);
    for (let k = 0; k < K; k++) {
      for (let q = 0; q < d; q++) dots[k] += x[i * d + q] * W[(r0 + k) * d + q];
      nws[k] = norm(W, (r0 + k) * d, d);
    }
    const cos = dots.map((dot, k) => dot / (Math.max(nx, 1e-12) * Math.max(nws[k], 1e-12)));
    const k = K === 1 ? 0 : subcenter(cos, 0, K);
    return [nx, nws[k], dots[k]];
  };
}

/**
 * Per row: ||x_i||, ||W_y|| and x_i . W_y (`stats`), then the label's logit and its
 * derivatives `[N, 4]` (rows with a negative label, or whose label `owns` says is not
 * here, are left 0).
 */
export function headTargets(
  kind: { readonly normX: boolean; readonly normW: boolean },
  fn: Target,
  labels: Int32Array,
  stats: RowStats,
  owns: (row: number) => boolean = () => true,
): { target: Float64Array; nx: Float64Array; nw: Float64Array } {
  const n = labels.length;
  const target = new Float64Array(4 * n), nx = new Float64Array(n), nw = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const [normX, normW, dot] = stats(i);
    nx[i] = normX;
    if (labels[i] < 0 || !owns(i)) continue;
    nw[i] = normW;
    const a = kind.normX ? 1 / Math.max(nx[i], 1e-12) : 1;
    const b = kind.normW ? 1 / Math.max(nw[i], 1e-12) : 1;
    target.set(fn(dot * a * b, nx[i], nw[i], i), 4 * i);
  }
  return { target, nx, nw };
}

/** Defines an embedding head. */
/** A head's definition, with its kind (for its class-sharded form). */
export type HeadDef<O> = LossDef<HeadInputs, O, HeadGrads, "head"> & {
  readonly head: HeadKind<O>;
  readonly shard?: undefined;
};

export function headLoss<O extends HeadOptions>(
  name: string,
  kind: HeadKind<O>,
): HeadDef<O> {
  const own = kind.options;
  return {
    name,
    head: kind,
    kernel: "head",
    inputs: ["x", "W", "labels", ...(kind.face ? ["state"] : []), ...(kind.sampled ? ["classes"] : [])],
    options: (o) => [...(typeof own === "function" ? own(o) : own), "ignoreIndex", "reduction"],
    grads: ["x", "W"],
    prepare(inputs, options, grad, upstream) {
      const o = v.options(options);
      v.inputs(inputs);
      const [n, d] = v.batch("x", inputs.x);
      const [rowsW] = v.matrix("W", inputs.W, undefined, d);
      if (rowsW === 0) throw new RangeError("Expected W to have at least one row (one per class), got 0");
      const [K, classes] = kind.sampled ? subcentersOf(o as { subcenters?: unknown }, "W", rowsW, "rows") : [1, rowsW];
      const ignoreIndex = v.integer("options.ignoreIndex", o.ignoreIndex, -100);
      const given = v.labels("labels", inputs.labels, n, classes, ignoreIndex);
      const x = v.values(inputs.x), W = v.values(inputs.W);
      const rows = kind.sampled ? classList(inputs.classes, classes) : null;
      const labels = rows ? sampledLabels(given, rows) : given;
      const c = rows ? rows.length : classes;
      if (o.checkFinite) {
        v.finite("x", x, d);
        v.finite("W", W, d);
      }
      const { scale, target: fn, spec, rowMargins } = kind.parse(o, n);
      const inter = kind.inter?.(o);
      const reduction = v.reduction(o.reduction);
      let count = 0;
      for (let i = 0; i < n; i++) if (labels[i] >= 0) count++;
      // (for host inputs; the WebGPU kernels evaluate `spec` themselves)
      const host = v.onDevice(x) || v.onDevice(W)
        ? null
        : headTargets(kind, fn, labels, labelStats(x, W, d, labels, 0, K, rows));
      const empty = new Float64Array(0);
      const scales = grad ? v.rowScales(reduction, upstream, n, count, (i) => labels[i] < 0) : new Float64Array(0);
      const face = faceOf(kind, o, inputs as HeadInputs & { state?: unknown }, labels, host, scale);
      return {
        ...face,
        ...(inter ? { nonTarget: inter.nonTarget, interTopK: inter.k } : {}),
        ...(rowMargins ? { rowMargins } : {}),
        grad,
        n,
        c,
        d,
        x,
        W,
        labels,
        normX: kind.normX,
        normW: kind.normW,
        scale,
        clamp: kind.clamp,
        target: host?.target ?? empty,
        nx: host?.nx ?? empty,
        nw: host?.nw ?? empty,
        spec,
        scales,
        reduction,
        denominator: count,
        outX: grad ? outBuffer(o, "x", n, d) : null,
        outW: grad ? outBuffer(o, "W", c * K, d) : null,
        ...(kind.sampled ? { subcenters: K, rows } : {}),
      };
    },
    finish: (p, raw) => {
      const r = {
        loss: v.reduce(raw.rows[0], p.reduction, p.denominator),
        grads: {
          x: p.outX ?? result(raw.grads.x, p.n, p.d),
          W: p.outW ?? result(raw.grads.W, p.c * (p.subcenters ?? 1), p.d),
        },
      };
      const f = p as HeadProblem & { parts?: Record<string, unknown>; norm?: NormTerms };
      if (p.face && raw.rows.length > 1) {
        // The WebGPU head computed the face kind's rows (magface's norm terms in grads.x already).
        if (p.face.kind !== "magface") {
          return { ...r, state: nextState(raw, STATE_FIELDS[p.face.kind].map(([k]) => k), undefined) };
        }
        const [ce, g] = raw.rows, lambda = p.face.params.lambda;
        const loss = v.reduce(lin(0, [ce, 1], [g, lambda]) as unknown as Float64Array, p.reduction, p.denominator);
        return { ...r, loss, ce: r.loss, g: v.reduce(g, p.reduction, p.denominator) };
      }
      if (!f.norm) return { ...r, ...f.parts };
      // magface: ce + lambda g, and the norms' gradient through ||x_i|| (d||x||/dx = x / ||x||).
      const parts = magfaceParts(f.norm, raw.rows[0], p.reduction, p.denominator);
      if (p.grad) {
        const gx = r.grads.x.data, dn = normGrads(f.norm, p.scales, raw.rows[0]);
        for (let i = 0; i < p.n; i++) {
          if (!(p.nx[i] > 0) || dn[i] === 0) continue;
          for (let k = 0; k < p.d; k++) gx[i * p.d + k] += (dn[i] * p.x[i * p.d + k]) / p.nx[i];
        }
      }
      return { ...r, ...parts, ce: r.loss };
    },
  };
}

/**
 * A face margin kind's problem fields: the rows from each row's label cosine `u` and norm
 * `||x_i||` (the head's targets `[N, 4]` take the rows' logit and slope; their dependence on
 * `||x||` is magface's norm terms, added by `finish`), the non-target transform, the parts.
 * Refuses `state` for the kinds without one, and GPU-resident inputs.
 */
export function faceOf<O>(
  kind: HeadKind<O>,
  o: O,
  inputs: HeadInputs & { state?: unknown },
  labels: Int32Array,
  host: { target: Float64Array; nx: Float64Array; nw: Float64Array } | null,
  scale: number,
): { nonTarget?: NonTarget; parts?: Record<string, unknown>; norm?: NormTerms; face?: FaceTarget } {
  const rows = kind.face?.(o) ?? null;
  if (rows === null) {
    if (inputs.state !== undefined) {
      throw new TypeError(
        `Expected inputs.state only with a stateful kind (adaface, curricularFace), got ${v.show(inputs.state)}`,
      );
    }
    return {};
  }
  // The rows as data, for the WebGPU head (which computes them itself: also from GPU-resident x, W, state).
  const { nonTarget, ...data } = kind.faceData!(o)!;
  const fields = STATE_FIELDS[data.kind];
  const state = fields.length === 0
    ? null
    : stateInput(inputs.state, fields.map(([k]) => k), fields.map(([, min]) => min), host === null);
  const constant =
    v.oneOf("options.marginGrad", (o as MarginOptions).marginGrad, ["exact", "constant"] as const, "exact") ===
      "constant";
  const face: FaceTarget = { ...data, norms: null, state, constant };
  if (host === null) return { face, nonTarget };
  const { target, nx, nw } = host;
  // The dummy target of `parse` left u in target[4i] (see marginHeadKind).
  const u = Float64Array.from({ length: labels.length }, (_, i) => target[4 * i]);
  const r = rows({ labels, cosY: (i) => u[i], norms: nx, state: inputs.state, scale, constant });
  target.fill(0);
  for (let i = 0; i < labels.length; i++) {
    target[4 * i] = r.target[2 * i];
    target[4 * i + 1] = r.target[2 * i + 1];
  }
  void nw;
  return { nonTarget: r.nonTarget, parts: r.parts, norm: r.norm, face };
}

/** Options of `marginHead`: the margin's kind and that kind's options. */
export interface MarginHeadOptions extends HeadOptions, Omit<MarginOptions, "out"> {
  /**
   * Which margin: `"arcface"`, `"cosface"`, `"normface"`, `"combinedMargin"`, or (SPEC §7) `"adaface"`,
   * `"curricularFace"` (with `inputs.state`), `"magface"`: their options as on their losses on cosines,
   * with the norms `||x_i||` (AdaFace: detached; MagFace: x gets both gradients); on WebGPU their rows are
   * computed on the GPU, and `inputs.state` may be a GPU matrix as on the losses. @default "arcface"
   */
  kind?: "arcface" | "cosface" | "normface" | "combinedMargin" | "adaface" | "curricularFace" | "magface";
  /** `"adaface"`: the norm's weight h in the margin's scaling (see `adaface`). @default 0.333 */
  h?: number;
  /** `"adaface"`: the norms' moving-statistics rate t_alpha (see `adaface`). @default 0.01 */
  alpha?: number;
  /** `"adaface"`: the clip of the cosines and of the angle (see `adaface`). @default 1e-3 */
  eps?: number;
  /** `"curricularFace"`: the rate of `t`'s moving mean (see `curricularFace`). @default 0.01 */
  momentum?: number;
  /** `"magface"`: the lower clamp of the norms (see `magface`). @default 10 */
  lowerNorm?: number;
  /** `"magface"`: the upper clamp of the norms (see `magface`). @default 110 */
  upperNorm?: number;
  /** `"magface"`: the margin at `lowerNorm` (see `magface`). @default 0.45 */
  lowerMargin?: number;
  /** `"magface"`: the margin at `upperNorm` (see `magface`). @default 0.8 */
  upperMargin?: number;
  /** `"magface"`: the weight of the norm regulariser g (see `magface`). @default 35 */
  lambda?: number;
  /** Logit scale s, finite, in (0, 1e6] (float32 logits `s cos`). @default 16 for normface, else 64 */
  scale?: number;
  /**
   * ArcFace's angular margin in [0, pi) (0.5) or CosFace's cosine margin in [-2, 2] (0.35); a
   * `Float32Array [N]` gives each row its own (ElasticFace, `elasticMargins`; ArcFace's own
   * `cos(pi - m)` threshold included; every backend, WebGPU's on GPU-resident x and W too).
   */
  margin?: number | Float32Array;
  /**
   * arcface, cosface, combinedMargin (insightface): when > 0, every non-target class cosine above it
   * is replaced by 0 (gradient 0) before the logits. In [0, 1]. @default 0
   */
  interclassFilteringThreshold?: number;
  /**
   * arcface (wespeaker's inter-top-k penalty): the k non-target classes with the largest class
   * cosines of each row (after the filtering; ties to the smaller class; every non-target when
   * k >= C - 1, C the classes of the softmax) get the logit `s cos(theta_j - interTopKMargin)`.
   * An integer >= 0, at the cost of a first pass over W (on WebGPU: N (2k + 2) floats must fit one storage
   * binding). @default 0
   */
  interTopK?: number;
  /** arcface: the margin m' of `interTopK`, in [0, pi). @default 0.06 */
  interTopKMargin?: number;
  /**
   * Sub-centres per class K, an integer >= 1 (sub-center ArcFace, Deng et al. 2020; PML
   * `SubCenterArcFaceLoss`): W is `[C*K, D]`, rows `j*K .. j*K+K-1` are class j's, the class cosine is
   * the largest of theirs (clamped to [-1, 1] first, ties to the smaller row, a NaN row makes it NaN)
   * and its gradient goes to that row alone; the margin and every later rule act on class cosines.
   * @default 1
   */
  subcenters?: number;
  /** ArcFace: apply the margin only where cos > 0. @default false */
  easyMargin?: boolean;
  /** combinedMargin's multiplicative angular margin m1, in [0, 8]. @default 1 */
  m1?: number;
  /** combinedMargin's additive angular margin m2 (radians), in [-pi, pi], or one per row (`Float32Array [N]`). @default 0.5 */
  m2?: number | Float32Array;
  /** combinedMargin's additive cosine margin m3, in [-2, 2], or one per row (`Float32Array [N]`). @default 0 */
  m3?: number | Float32Array;
}

/** Each kind's default scale and target function (shared with the losses on cosines). */
const KINDS = {
  arcface: [64, arcfaceTarget, ARCFACE_KEYS],
  cosface: [64, cosfaceTarget, COSFACE_KEYS],
  normface: [16, normfaceTarget, []],
  combinedMargin: [64, combinedMarginTarget, COMBINED_MARGIN_KEYS],
} as const;

/** Each kind's inter-class options (SPEC §7, as on its loss on cosines). */
const INTER: Record<string, readonly string[]> = {
  arcface: INTER_KEYS,
  cosface: ["interclassFilteringThreshold"],
  combinedMargin: ["interclassFilteringThreshold"],
};

/** The face margin kinds: their keys and their rows (shared with their losses on cosines). */
const FACE = {
  adaface: [64, ADAFACE_KEYS, adafaceRows, adafaceData],
  curricularFace: [64, CURRICULAR_FACE_KEYS, curricularRows, curricularData],
  magface: [64, MAGFACE_KEYS, magfaceRows, magfaceData],
} as const;

/** The face margin kinds of `marginHead` (SPEC §7). */
export const FACE_KINDS: readonly string[] = Object.keys(FACE);

function marginKind(o: MarginHeadOptions): keyof typeof KINDS | keyof typeof FACE {
  return v.oneOf(
    "options.kind",
    o.kind,
    ["arcface", "cosface", "normface", "combinedMargin", "adaface", "curricularFace", "magface"] as const,
    "arcface",
  );
}

function marginPhi(o: MarginHeadOptions): { phi: Phi; scale: number } {
  const [fallback, target] = KINDS[marginKind(o) as keyof typeof KINDS];
  return {
    scale: v.scale(o.scale, fallback),
    phi: target(o),
  };
}

/**
 * A margin head from embeddings: `cos = normalize(x) normalize(W)^T` (`F.normalize`,
 * dividing by `max(||v||, 1e-12)`), then the margin loss of `kind` (`"arcface"` default,
 * `"cosface"`, `"normface"`, `"combinedMargin"`, with that kind's options), with
 * gradients w.r.t. `x [N, D]` and `W [C, D]` through the normalisations. The WebAssembly
 * backend works in chunks of classes with an online log-sum-exp, so the `[N, C]`
 * logits never exist: extra memory is O(N * chunk + N * D) beyond W and its gradient.
 *
 * SPEC §7 adds the face kinds (`"adaface"`, `"curricularFace"`, `"magface"`), `subcenters` K
 * (sub-center ArcFace, Deng et al. 2020; PML `SubCenterArcFaceLoss`: W `[C*K, D]`, a class's
 * cosine the largest of its K rows' after the clamp, ties to the smaller row, its gradient to that
 * row alone; default 1) and the input `classes [S]` (PartialFC, An et al. 2022, e.g. from
 * `partialFcSample`: only those classes' rows take part, labels stay class indices and must be
 * among them, `grads.W` is `[S*K, D]` in their order), and the inter-class options and per-row margins
 * of the losses on cosines: `interclassFilteringThreshold` (arcface, cosface, combinedMargin: non-target
 * class cosines above it become 0), `interTopK` / `interTopKMargin` (arcface, wespeaker: each row's k
 * largest non-target class cosines get `s cos(theta_j - m')`, found in a first pass over W), a
 * `Float32Array [N]` `margin` (arcface, cosface) or `m2` / `m3` (combinedMargin), one per row
 * (ElasticFace); on every backend (the WebGPU head finds the top k and each row's target on the GPU); the
 * class-sharded head takes them all on every backend (`interTopK` with its step `topK`). The head is then
 * normalise + matmul + that loss on cosines with the same options.
 *
 * @example An ArcFace head
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const x = { data: new Float32Array([1, 0, 0.6, 0.8]), shape: [2, 2] as const };
 * const W = { data: new Float32Array([1, 0, 0, 1, -1, 0]), shape: [3, 2] as const };
 * const { loss, grads } = wasm.marginHead.valueAndGrad({ x, W, labels: [0, 1] }, { kind: "arcface", scale: 16 });
 * console.log(loss, grads.W.shape); // 1.5097 [3, 2] (PyTorch: 1.5097439)
 * ```
 *
 * @example Sub-center ArcFace (K = 2) on a PartialFC sample of the classes
 * ```ts
 * import { partialFcSample, wasm } from "@softmargin/softmargin/cpu";
 * const x = { data: new Float32Array([1, 0, 0.6, 0.8]), shape: [2, 2] as const };
 * // 3 classes of 2 sub-centres each: W [6, 2], rows 2j and 2j + 1 are class j's
 * const W = { data: new Float32Array([1, 0, 0.8, 0.6, 0, 1, -0.6, 0.8, -1, 0, 0, -1]), shape: [6, 2] as const };
 * const labels = [0, 1];
 * const classes = partialFcSample(labels, 3, { rate: 0.5, seed: 1 }); // the labels' classes: [0, 1]
 * const r = wasm.marginHead.valueAndGrad({ x, W, labels, classes }, { subcenters: 2, scale: 16 });
 * console.log(r.loss, r.grads.W.shape); // 4.3648 [4, 2] (PyTorch: 4.3647955)
 * ```
 *
 * @example Inter-top-k and a margin per row: the head equals arcface on its cosines
 * ```ts
 * import { js, wasm } from "@softmargin/softmargin/cpu";
 * const x = { data: new Float32Array([1, 0, 0.6, 0.8]), shape: [2, 2] as const };
 * const W = { data: new Float32Array([1, 0, 0, 1, -1, 0]), shape: [3, 2] as const };
 * const options = { scale: 16, margin: new Float32Array([0.3, 0.5]), interTopK: 1, interTopKMargin: 0.1 };
 * const head = wasm.marginHead.forward({ x, W, labels: [0, 1] }, options);
 * // the cosines x^ W^T, [2, 3]
 * const cos = { data: new Float32Array([1, 0, -1, 0.6, 0.8, -0.6]), shape: [2, 3] as const };
 * const onCos = js.arcface.forward({ cos, labels: [0, 1] }, options);
 * console.log(Number(head.loss).toFixed(4), Number(onCos.loss).toFixed(4)); // 2.1071 2.1071
 * ```
 */
export const marginHead: Definition<HeadInputs, MarginHeadOptions, HeadGrads, MarginHeadParts, "loss", "head"> = {
  ...headLoss<MarginHeadOptions>("marginHead", marginHeadKind()),
  shard: "head",
} as Definition<HeadInputs, MarginHeadOptions, HeadGrads, MarginHeadParts, "loss", "head">; // (its parts by kind: phantom)

/** How `marginHead` is built (shared with its class-sharded form). */
export function marginHeadKind(): HeadKind<MarginHeadOptions> {
  return {
    normX: true,
    normW: true,
    clamp: true,
    sampled: true,
    // The options of the kind given (an option of another kind is refused, not ignored).
    options: (o) => {
      const k = marginKind(o);
      return [
        "kind",
        "scale",
        "marginGrad",
        "subcenters",
        ...(k in FACE ? FACE[k as keyof typeof FACE][1] : KINDS[k as keyof typeof KINDS][2]),
        ...(INTER[k] ?? []),
      ];
    },
    inter: (o) => interTransform(o as ArcfaceOptions, INTER[marginKind(o)] ?? []),
    face: (o) => {
      const k = marginKind(o);
      return k in FACE ? (r) => FACE[k as keyof typeof FACE][2](o as never, r) : null;
    },
    faceData: (o) => {
      const k = marginKind(o);
      return k in FACE ? FACE[k as keyof typeof FACE][3](o as never) : null;
    },
    parse(o, n) {
      const k = marginKind(o);
      if (k in FACE) {
        // The face kinds' targets need every row at once (`face`): here u is only passed on.
        const scale = v.scale(o.scale, FACE[k as keyof typeof FACE][0]);
        return { scale, target: (u) => [u, 0, 0, 0], spec: { kind: "host" } };
      }
      // A per-row margin (ElasticFace): row i's target function from its own value of each array option.
      const keys: readonly string[] = KINDS[k as keyof typeof KINDS][2];
      const given = o as Record<string, unknown>;
      const rowKeys = ROW_MARGIN_KEYS.filter((key) => keys.includes(key) && isRowArray(given[key]));
      if (rowKeys.length > 0 && n === undefined) {
        throw new TypeError(
          `Expected options.${
            rowKeys[0]
          } to be a number where the batch size is not given (a per-row margin needs N), got an array`,
        );
      }
      const values = rowKeys.map((key) => v.vector(`options.${key}`, given[key], n!)!);
      const { phi, scale } = marginPhi({ ...o, ...Object.fromEntries(rowKeys.map((key) => [key, undefined])) });
      const phis = rowKeys.length === 0
        ? null
        : Array.from({ length: n! }, (_, i) =>
          marginPhi({ ...o, ...Object.fromEntries(rowKeys.map((key, q) => [key, values[q][i]])) }).phi);
      const constant = v.oneOf("options.marginGrad", o.marginGrad, ["exact", "constant"] as const, "exact") ===
        "constant";
      return {
        scale,
        target: (u, _nx, _nw, row) => {
          const x = Math.min(1, Math.max(-1, u));
          const [value, slope] = (phis ? phis[row] : phi)(x);
          return [scale * value, x === u ? scale * (constant ? 1 : slope) : 0, 0, 0];
        },
        // (with a per-row margin, each row's target as data too: m1 and the branch are the kind's)
        spec: { kind: "margin", phi: phi.spec, constant },
        ...(phis ? { rowMargins: phis.map((f) => f.spec) } : {}),
      };
    },
  };
}

/**
 * `psi(theta) = (-1)^k cos(m theta) - 2k`, `k = floor(m theta / pi)` (a constant: no
 * gradient), `cos(m theta) = T_m(cos theta)` by the Chebyshev recurrence; returns
 * `[psi, d psi / d cos]`.
 */
export function psi(m: number, cos: number): [number, number] {
  const k = Math.floor((m * Math.acos(cos)) / Math.PI);
  // T_0 = 1, T_1 = c, T_{n+1} = 2c T_n - T_{n-1}; and the derivatives alongside.
  let t0 = 1, t1 = cos, d0 = 0, d1 = 1;
  if (m === 0) [t1, d1] = [1, 0];
  for (let j = 1; j < m; j++) {
    [t0, t1, d0, d1] = [t1, 2 * cos * t1 - t0, d1, 2 * t1 + 2 * cos * d1 - d0];
  }
  const sign = k % 2 === 0 ? 1 : -1;
  return [sign * t1 - 2 * k, sign * d1];
}

/** Checks SphereFace's and L-Softmax's integer margin m in [1, MAX_ANGULAR_FACTOR]. */
export function integerMargin(value: unknown): number {
  const m = v.angularFactor("options.m", value, 4, 1);
  if (!Number.isInteger(m)) {
    throw new RangeError(`Expected options.m to be an integer in [1, ${v.MAX_ANGULAR_FACTOR}], got ${m}`);
  }
  return m;
}
