/**
 * Class-sharded (model-parallel) softmax losses: each shard holds a range of classes
 * (`offset`, `offset + Cs`) of `classes` in all, computes per-row statistics of its
 * classes (`stats`), the caller all-reduces them with whatever transport it has
 * ({@linkcode mergeShardStats} is the exact merge), and each shard finishes its loss share
 * and its gradients locally (`finish`), in the style of Megatron's vocabulary-parallel
 * cross-entropy and PartialFC. Labels are global class indices, replicated on every
 * shard. docs/SHARDING.md is the design note.
 *
 * Per row i, a shard's statistics ({@linkcode ShardStats}) are `max` (the largest logit
 * of its classes, the label's margin-modified logit included where it holds the label),
 * `sum` (`sum_j e^(z_j - max)` over its classes other than the label: keeping the label
 * out keeps `1 - p_y` accurate as `p_y -> 1`), `target` (the label's logit where it holds
 * the label, else 0), and with label smoothing `below` (`sum_j w_j (max - z_j)` over its
 * classes) and the scalar `weightSum` (`sum_j w_j`); and the shard's record `shards`
 * (its class range, C, fingerprints of the batch and of the options), by which the merge
 * and `finish` refuse a wrong layout (overlapping, repeated or missing shards, another
 * batch's statistics, other options) with a named `RangeError`.
 *
 * SPEC §7's inter-class options and per-row margins: a per-row margin and
 * `interclassFilteringThreshold` act on each shard's own rows and columns; `interTopK` needs each
 * row's k-th largest non-target class cosine over every shard, so `arcface` and `marginHead` then
 * have one more step, `topK` (each shard's k largest per row, merged exactly by
 * {@linkcode mergeShardTopK} into `inputs.topK` of `stats` and `finish`; the k-th value and its class
 * give each shard the unsharded rule, ties to the smaller global class).
 *
 * @module
 */
import { checkCall, type Definition, type LossDef, type ShardForm } from "../loss.ts";
import { then } from "../kernels/core.ts";
import type { CommonOptions, Labels, Matrix, Upstream } from "../types.ts";
import { type CrossEntropyOptions, largeVocabulary, nonIgnored } from "./cross_entropy.ts";
import * as v from "../validate.ts";
import {
  classCos,
  INTER_KEYS,
  interTransform,
  labelTargets,
  type MarginDef,
  type MarginOptions,
  subcentersOf,
} from "./margin.ts";
import { type HeadProblem, headRowTerms, RowTopK } from "../kernels/head.ts";
import type { NonTarget } from "../kernels/hard_label.ts";
import {
  FACE_KINDS,
  faceOf,
  type HeadDef,
  type HeadInputs,
  headTargets,
  labelStats,
  type MarginHeadOptions,
  sampledLabels,
} from "./margin_head.ts";
import { classList } from "./linear_cross_entropy.ts";
import { magfaceParts } from "./magface.ts";
import { normGrads, rowVector } from "./face_margin.ts";
import {
  checkStats,
  logitRowTerms,
  type LogitShardProblem,
  type ShardKernels,
  shardRecord,
  type ShardStats,
  type ShardTopK,
  shardTopK,
  topKRows,
} from "../kernels/shards.ts";
import type * as registry from "./registry.ts";
import { biasOf, type LinearCrossEntropyOptions } from "./linear_cross_entropy.ts";
import { capped, type LinearCeProblem } from "../kernels/linear_ce.ts";

/** Where a shard's classes are: its first class and the number of classes of all shards. */
export interface ShardOptions {
  /** The global index of the shard's first class (its classes are `[offset, offset + Cs)`). */
  offset: number;
  /** C, the number of classes of all shards together (labels are in `[0, C)`). */
  classes: number;
}

/** What `finish` returns on one shard: its share of the loss and its gradients. */
export interface ShardResult<G> {
  /**
   * The shard's share of the loss: the rows whose label it holds (their whole loss), reduced
   * as the unsharded loss ("mean" divides by the whole batch's count of non-ignored rows, or
   * their summed class weight). The shares of all shards sum to the unsharded loss;
   * `reduction: "none"` gives per-row shares (0 on the rows whose label is elsewhere).
   */
  loss: number | Float32Array;
  /** crossEntropy: the shard's share of part `z` (the z-loss, included in `loss`), shared as `loss` is. */
  z?: number | Float32Array;
  /** The shard's gradients. */
  grads: G;
}

/** A shard's view of its input: the shard's size Cs and its checked offset / class count. */
function shardOf(name: string, cs: number, o: Partial<ShardOptions>): { offset: number; classes: number } {
  const classes = v.integer("options.classes", v.required("options.classes", o.classes), 0);
  const offset = v.integer("options.offset", v.required("options.offset", o.offset), 0);
  if (classes < 1) throw new RangeError(`Expected options.classes to be an integer >= 1, got ${classes}`);
  if (cs < 1) throw new RangeError(`Expected ${name} to have at least one class (column or row) on the shard, got 0`);
  if (offset < 0 || offset + cs > classes) {
    throw new RangeError(
      `Expected options.offset to be in [0, ${
        classes - cs
      }] (the shard's ${cs} classes inside options.classes = ${classes}), got ${offset}`,
    );
  }
  return { offset, classes };
}

/** Per row: the label's column on the shard, -1 elsewhere, -2 ignored. */
function localLabels(labels: Int32Array, offset: number, cs: number): Int32Array {
  return labels.map((y) => (y < 0 ? -2 : y >= offset && y < offset + cs ? y - offset : -1));
}

/** The options every sharded loss takes besides its own. */
const SHARD_KEYS = ["offset", "classes"] as const;

/** How a sharded loss reads a call, and its two steps on a backend's kernels. */
interface ShardDef {
  readonly name: string;
  readonly inputs: readonly string[];
  readonly options: readonly string[] | ((o: unknown) => readonly string[]);
  stats(inputs: never, o: never, k: ShardKernels): ShardStats | Promise<ShardStats>;
  finish(
    inputs: never,
    stats: ShardStats,
    o: never,
    upstream: Upstream | undefined,
    k: ShardKernels,
  ): ShardResult<unknown> | Promise<ShardResult<unknown>>;
  /** marginHead: the class cosine of each row's label where this shard holds it (else 0), and its record. */
  labelCosines?(inputs: never, o: never): LabelCosines;
  /** With `interTopK` (arcface, marginHead): per row the k largest non-target class cosines of the shard. */
  topK?(inputs: never, o: never, k: ShardKernels): ShardTopK | Promise<ShardTopK>;
}

/** The inter-class option keys a definition takes (of {@linkcode INTER_KEYS}). */
const interKeys = (keys: readonly string[]) => keys.filter((k) => (INTER_KEYS as readonly string[]).includes(k));

/**
 * The inter-class options of a shard (SPEC §7): their non-target transform, with `interTopK` k > 0
 * each row's threshold and tie from the merged top k `inputs.topK` (checked against this shard's
 * `topK` record `own`; `tie` maps a global class to the kernels' index of the last class of this
 * shard at or below it), and what the shard's record fingerprints. Without k, `inputs.topK` is refused;
 * `step` (the `topK` step itself): no rows yet.
 */
function shardInter(
  inter: { nonTarget: NonTarget; k: number } | undefined,
  given: unknown,
  n: number,
  own: Float64Array,
  tie: (g: number) => number,
  step = false,
): { nonTarget?: NonTarget; replicated: Float32Array[] } {
  const k = inter?.k ?? 0;
  if (step && k === 0) {
    throw new RangeError(
      `Expected options.interTopK to be an integer >= 1 for the step topK (each row's k largest non-target cosines), got ${k}`,
    );
  }
  if (!step && (given !== undefined) !== k > 0) {
    throw new TypeError(
      k > 0
        ? "Expected inputs.topK with options.interTopK (every shard's top k merged by mergeShardTopK), got undefined"
        : `Expected inputs.topK only with options.interTopK >= 1, got ${v.show(given)}`,
    );
  }
  if (!inter) return { replicated: [] };
  if (k === 0 || step) return { nonTarget: inter.nonTarget, replicated: [] };
  const rows = topKRows("inputs.topK", given, n, k, own);
  const t = given as ShardTopK;
  for (let i = 0; i < n; i++) rows[2 * i + 1] = rows[2 * i + 1] < 0 ? -1 : tie(rows[2 * i + 1]);
  return {
    nonTarget: { ...inter.nonTarget, rows },
    replicated: [Float32Array.from(t.values), Float32Array.from(t.classes)],
  };
}

/** What a shard's record fingerprints of the inter-class options: their transform's constants and k. */
const interAgreed = (inter: { nonTarget: NonTarget; k: number } | undefined) =>
  inter ? [inter.nonTarget.cut, inter.nonTarget.a, inter.nonTarget.g, inter.k] : null;

/** What `sharded.marginHead.labelCosines` returns on one shard. */
export interface LabelCosines {
  /**
   * Per row (float64 `[N]`), the class cosine of its label (clamped to [-1, 1]; with sub-centres the
   * largest of its K) where this shard holds the label, else 0 (ignored rows 0): the sum over the
   * shards (an all-reduce of N floats) is every row's label cosine, `inputs.labelCos` of
   * `stats` and `finish` with `kind: "curricularFace"`.
   */
  readonly cos: Float64Array;
  /** The shard's record (its class range; of the batch; of the loss, `"labelCosines"` and K). */
  readonly shards: Float64Array;
}

/** A definition with a sharded form over the logits: crossEntropy's, or a margin loss's on cosines (with `parse`). */
type LogitDef = LossDef<unknown, unknown, unknown, "hardLabel"> | MarginDef<MarginOptions>;

/** A checked logit shard: its problem, and what the host needs to finish it. */
function logitShard(
  def: LogitDef,
  inputs: { logits?: unknown; cos?: unknown; labels: Labels; topK?: unknown },
  options: unknown,
  step = false,
) {
  const o = v.options(options as CrossEntropyOptions & MarginOptions & Partial<ShardOptions>);
  v.inputs(inputs);
  const margin = "parse" in def ? def : null;
  const key = margin ? "cos" : "logits";
  const [n, cols] = v.batch(key, inputs[key as "logits"]);
  // (a margin loss's sub-centres: the shard's Cs classes of K columns each)
  const [sub, cs] = margin ? subcentersOf(o, key, cols) : [1, cols];
  const { offset, classes } = shardOf(key, cs, o);
  const ignoreIndex = v.integer("options.ignoreIndex", o.ignoreIndex, -100);
  const labels = v.labels("labels", inputs.labels, n, classes, ignoreIndex);
  const x = v.values(inputs[key as "logits"] as Matrix);
  if (v.onDevice(x)) {
    throw new TypeError(`Expected ${key} to be a host matrix { data, shape } (sharded losses), got a GPUBuffer`);
  }
  if (o.checkFinite) v.finite(key, x, cols);
  const local = localLabels(labels, offset, cs);
  const reduction = v.reduction(o.reduction);
  let weight: Float32Array | null = null, smoothing = 0, scale = 1, clamp = false, target: Float64Array;
  let softcap = 0, zLoss = 0, phi: unknown = null, constant = false, arrays: unknown = null;
  if (!margin) {
    weight = v.vector("options.weight", o.weight, classes, 0);
    smoothing = v.number("options.labelSmoothing", o.labelSmoothing, 0, { min: 0, max: 1 });
    ({ softcap, zLoss } = largeVocabulary(o));
    target = new Float64Array(2 * n);
    for (let i = 0; i < n; i++) {
      if (local[i] < 0) continue;
      const xy = x[i * cs + local[i]], t = softcap ? Math.tanh(xy / softcap) : 0;
      target.set(softcap ? [softcap * t, 1 - t * t] : [xy, 1], 2 * i);
    }
  } else {
    const parsed = margin.parse(o, n);
    ({ scale, constant } = parsed);
    phi = parsed.phi.spec;
    arrays = parsed.arrays ?? null;
    clamp = true;
    const phis = parsed.phis;
    target = labelTargets(
      local.map((y) => (y < 0 ? -1 : y)),
      phis ? (i) => phis[i] : parsed.phi,
      scale,
      parsed.constant,
      (i) => classCos(x, i, local[i], cs, sub),
    );
  }
  // "mean" divides by the whole batch's non-ignored rows (their summed class weight).
  let denominator = 0;
  for (let i = 0; i < n; i++) if (labels[i] >= 0) denominator += weight ? weight[labels[i]] : 1;
  const problem: LogitShardProblem = {
    n,
    c: cs,
    logits: x,
    local,
    weight: weight && weight.subarray(offset, offset + cs),
    scale,
    clamp,
    target,
    smoothing: smoothing !== 0,
    softcap,
    ...(sub > 1 ? { subcenters: sub } : {}),
  };
  // What every shard must share: the labels, and the options as checked (defaults filled in).
  const agreed: unknown[] = [def.name, reduction, weight, smoothing, softcap, zLoss, scale, constant, phi];
  if (sub > 1) agreed.push(sub);
  // The inter-class options (their transform acts on this shard's columns; interTopK's rows from the
  // merged top k, ties as global classes made columns here), and the per-row margins, fingerprinted.
  const transform = margin ? interTransform(o as never, interKeys(def.options as readonly string[])) : undefined;
  agreed.push(interAgreed(transform), arrays);
  const topKRecord = shardRecord(offset, offset + cs, classes, labels, [], [...agreed, "topK"]);
  const inter = shardInter(transform, inputs.topK, n, topKRecord, (g) => Math.min(g - offset, cs - 1), step);
  const record = shardRecord(offset, offset + cs, classes, labels, inter.replicated, agreed);
  const nonTarget = inter.nonTarget;
  return {
    problem: nonTarget ? { ...problem, nonTarget } : problem,
    labels,
    weight,
    smoothing,
    zLoss,
    classes,
    reduction,
    denominator,
    key,
    record,
    topKRecord,
    sub,
    offset,
    interTopK: transform?.k ?? 0,
  };
}

/** The sharded form of crossEntropy or a margin loss on cosines. */
function logitShardDef(def: LogitDef): ShardDef {
  const topK = (def.options as readonly string[]).includes("interTopK");
  return {
    name: def.name,
    inputs: [...def.inputs, ...(topK ? ["topK"] : [])],
    options: [...(def.options as readonly string[]), ...SHARD_KEYS],
    ...(topK
      ? {
        topK(inputs: never, options: never): ShardTopK {
          // Per row the k largest of this shard's non-target class cosines (clamped, filtered), in class order.
          const s = logitShard(def, inputs, options, true), { n, c, local, logits, nonTarget } = s.problem;
          const top = new RowTopK(n, s.interTopK);
          for (let i = 0; i < n; i++) {
            if (local[i] === -2) continue;
            for (let j = 0; j < c; j++) {
              if (j === local[i]) continue;
              const x = Math.min(1, Math.max(-1, classCos(logits, i, j, c, s.sub)));
              top.offer(i, j, x > nonTarget!.cut ? 0 : x);
            }
          }
          return shardTopK(top, (j) => s.offset + j, s.topKRecord);
        },
      }
      : {}),
    stats(inputs, options, k) {
      const s = logitShard(def, inputs, options);
      const target = Float64Array.from({ length: s.problem.n }, (_, i) => s.problem.target[2 * i]);
      return then(k.logitShardStats(s.problem), (r): ShardStats => {
        if (!s.problem.smoothing) return { max: r.max, sum: r.sum, target, shards: s.record };
        let weightSum = 0;
        for (let j = 0; j < s.problem.c; j++) weightSum += s.problem.weight ? s.problem.weight[j] : 1;
        return { max: r.max, sum: r.sum, target, below: r.below as Float64Array, weightSum, shards: s.record };
      });
    },
    finish(inputs, stats, options, upstream, k) {
      const s = logitShard(def, inputs, options);
      const { n, c, local, target: own } = s.problem;
      checkStats("stats", stats, n, s.problem.smoothing, s.record);
      const ignored = (i: number) => s.labels[i] < 0;
      const scales = v.rowScales(s.reduction, upstream, n, s.denominator, ignored);
      // The z-loss k lse^2 ("mean": over the non-ignored rows), lse from the merged statistics.
      const count = nonIgnored(s.labels), zScales = v.rowScales(s.reduction, upstream, n, count, ignored);
      const t = logitRowTerms(stats, { ...s, scales, zScales, target: own });
      const { A, U, G } = t;
      // The shard's share: the rows whose label it holds.
      const rows = t.rows.map((r, i) => (local[i] >= 0 ? r : 0)),
        zRows = t.zRows.map((r, i) => (local[i] >= 0 ? r : 0));
      return then(k.logitShardGrads({ ...s.problem, max: stats.max, A, U, G, out: null }), (grad) => {
        const ce = v.reduce(rows, s.reduction, s.denominator), z = v.reduce(zRows, s.reduction, count);
        const loss = typeof ce === "number" ? ce + (z as number) : Float32Array.from(rows, (r, i) => r + zRows[i]);
        return {
          loss,
          ...(def.name === "crossEntropy" ? { z } : {}),
          grads: { [s.key]: { data: grad, shape: [n, c * (s.problem.subcenters ?? 1)] } },
        };
      });
    },
  };
}

/**
 * A checked head shard: the shard's rows of W (`[Cs*K, D]` with sub-centres K), global labels, and
 * optionally `classes`, sorted global indices inside the shard's range `[offset, offset + Cs)`:
 * then only those take part (PartialFC on each shard), the problem's labels are local to them (a
 * label elsewhere: `S`) and `grads.W` is `[S*K, D]`. The face kinds: adaface's and magface's batch
 * statistics are of the norms `||x_i||` (x replicated: exact on every shard); curricularFace's `t`
 * is the mean label cosine, each held by one shard: its shards take every row's label cosine as
 * `inputs.labelCos`, the sum of the shards' `labelCosines` (one all-reduce of N floats more).
 */
function headShardBase(
  def: HeadDef<MarginHeadOptions>,
  inputs: { x: unknown; W: unknown; labels: Labels; classes?: unknown },
  options: unknown,
) {
  const opts = v.options(options as MarginHeadOptions & Partial<ShardOptions>);
  v.inputs(inputs);
  const [n, d] = v.batch("x", inputs.x);
  const [rowsW] = v.matrix("W", inputs.W, undefined, d);
  const kind = def.head;
  const [K, cs] = kind.sampled ? subcentersOf(opts, "W", rowsW, "rows") : [1, rowsW];
  const { offset, classes } = shardOf("W", cs, opts);
  const ignoreIndex = v.integer("options.ignoreIndex", opts.ignoreIndex, -100);
  const labels = v.labels("labels", inputs.labels, n, classes, ignoreIndex);
  const x = v.values(inputs.x as Matrix), W = v.values(inputs.W as Matrix);
  if (v.onDevice(x) || v.onDevice(W)) {
    throw new TypeError("Expected x and W to be host matrices { data, shape } (sharded losses), got a GPUBuffer");
  }
  if (opts.checkFinite) {
    v.finite("x", x, d);
    v.finite("W", W, d);
  }
  const picked = kind.sampled ? classList(inputs.classes, classes) : null;
  picked?.forEach((k, r) => {
    if (k < offset || k >= offset + cs) {
      throw new RangeError(
        `Expected classes[${r}] to be a class of this shard, in [${offset}, ${offset + cs}), got ${k}`,
      );
    }
  });
  // With classes: labels local to them (elsewhere: S), rows of W local to the shard, first class 0.
  const rows = picked ? picked.map((k) => k - offset) : null;
  const local = picked ? sampledLabels(labels, picked, offset, offset + cs, picked.length) : labels;
  const first = picked ? 0 : offset, c = picked ? picked.length : cs;
  const owns = (i: number) => local[i] >= first && local[i] < first + c;
  return { opts, n, d, K, cs, offset, classes, labels, x, W, kind, rows, local, first, c, owns };
}

/** The class cosine of each row's label on this shard (`sharded.marginHead.labelCosines`). */
function headLabelCosines(def: HeadDef<MarginHeadOptions>, inputs: HeadShardInputs, options: unknown): LabelCosines {
  const { n, d, K, cs, offset, classes, labels, x, W, rows, local, first, owns } = headShardBase(def, inputs, options);
  const stat = labelStats(x, W, d, local, first, K, rows);
  const cos = Float64Array.from({ length: n }, (_, i) => {
    if (!owns(i)) return 0;
    const [nx, nw, dot] = stat(i);
    return Math.min(1, Math.max(-1, dot / (Math.max(nx, 1e-12) * Math.max(nw, 1e-12))));
  });
  return { cos, shards: shardRecord(offset, offset + cs, classes, labels, [x], [def.name, "labelCosines", K]) };
}

/** The inputs of a head shard. */
type HeadShardInputs = {
  x: unknown;
  W: unknown;
  labels: Labels;
  classes?: unknown;
  state?: unknown;
  labelCos?: unknown;
  topK?: unknown;
};

/** A checked head shard (see {@linkcode headShardBase}), its problem and record. */
function headShard(
  def: HeadDef<MarginHeadOptions>,
  inputs: HeadShardInputs,
  options: unknown,
  grad: boolean,
  upstream?: Upstream,
  step = false,
) {
  const { opts, n, d, K, cs, offset, classes, labels, x, W, kind, rows, local, first, c, owns } = headShardBase(
    def,
    inputs,
    options,
  );
  const { scale, target: fn, spec, rowMargins } = kind.parse(opts, n);
  const reduction = v.reduction(opts.reduction);
  const host = headTargets(kind, fn, local, labelStats(x, W, d, local, first, K, rows), owns);
  // curricularFace: every row's label cosine, summed over the shards' labelCosines by the caller.
  const curricular = opts.kind === "curricularFace";
  if ((inputs.labelCos !== undefined) !== curricular) {
    throw new TypeError(
      curricular
        ? "Expected inputs.labelCos with kind curricularFace (every row's label cosine: the sum over the shards of sharded.marginHead.labelCosines), got undefined"
        : `Expected inputs.labelCos only with kind curricularFace, got ${v.show(inputs.labelCos)}`,
    );
  }
  const labelCos = curricular ? rowVector("inputs.labelCos", inputs.labelCos, n) : null;
  if (labelCos) { for (let i = 0; i < n; i++) if (local[i] >= 0) host.target[4 * i] = labelCos[i]; }
  let count = 0;
  for (let i = 0; i < n; i++) if (labels[i] >= 0) count++;
  const face = faceOf(kind, opts, inputs as HeadInputs & { state?: unknown }, local, host, scale);
  // What every shard must share: the labels and x, and the options as checked (defaults filled in;
  // the face kinds' own options as given, and the state).
  const own = FACE_KINDS.includes(opts.kind as string)
    ? (def.options as (o: MarginHeadOptions) => readonly string[])(opts).map((k) => [k, opts[k as "scale"] ?? null])
    : [];
  // The inter-class options (interTopK's rows from the merged top k: a tie, a global class, becomes the
  // kernels' index first + r of the last class r here at or below it) and per-row margins, fingerprinted.
  const global = (j: number) => offset + (rows ? rows[j] : j);
  const tie = (g: number) => {
    let lo = 0, hi = c; // (the count of classes here at or below g)
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (global(mid) <= g) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? -1 : first + lo - 1;
  };
  const given = opts as Record<string, unknown>;
  const arrays = ["margin", "m2", "m3"].map((k) => (typeof given[k] === "object" ? given[k] : null));
  const kinter = kind.inter?.(opts);
  const agreed = [def.name, reduction, scale, spec, K, own, inputs.state ?? null, interAgreed(kinter)];
  agreed.push(rowMargins ? arrays : null);
  const topKRecord = shardRecord(offset, offset + cs, classes, labels, [x], [...agreed, "topK"]);
  const inter = shardInter(kinter, inputs.topK, n, topKRecord, tie, step);
  const replicated = labelCos ? [x, Float32Array.from(labelCos), ...inter.replicated] : [x, ...inter.replicated];
  const record = shardRecord(offset, offset + cs, classes, labels, replicated, agreed);
  const p: HeadProblem = {
    grad,
    n,
    c,
    d,
    x,
    W,
    labels: local,
    normX: kind.normX,
    normW: kind.normW,
    scale,
    clamp: kind.clamp,
    ...host,
    spec,
    scales: grad ? v.rowScales(reduction, upstream, n, count, (i) => labels[i] < 0) : new Float64Array(0),
    reduction,
    denominator: count,
    outX: null,
    outW: null,
    nonTarget: face.nonTarget ?? inter.nonTarget,
    // (the face kinds as data: the WebGPU shard takes their rows from the host's values, src/webgpu/sharded.ts)
    ...(face.face ? { face: face.face } : {}),
    ...(rowMargins ? { rowMargins } : {}),
    subcenters: K,
    rows,
  };
  return { p, first, owns, record, face, global, topKRecord, interTopK: kinter?.k ?? 0 };
}

/** The sharded form of a head (marginHead). */
const headShardDef = (def: HeadDef<MarginHeadOptions>): ShardDef => ({
  name: def.name,
  inputs: [...def.inputs, "labelCos", "topK"],
  labelCosines: (inputs, options) => headLabelCosines(def, inputs, options),
  topK(inputs, options, k) {
    // Per row the k largest of this shard's non-target class cosines, by the backend's head kernels.
    const { p, first, global, topKRecord, interTopK } = headShard(def, inputs, options, false, undefined, true);
    return then(k.headShardTopK({ p, first, k: interTopK }), (top) => shardTopK(top, global, topKRecord));
  },
  options: (opts) => {
    const own = def.options;
    return [...(typeof own === "function" ? own(opts as MarginHeadOptions) : own), ...SHARD_KEYS];
  },
  stats(inputs, options, k) {
    const { p, first, owns, record } = headShard(def, inputs, options, false);
    const target = Float64Array.from({ length: p.n }, (_, i) => (owns(i) ? p.target[4 * i] : 0));
    return then(k.headShardStats({ p, first }), (s) => ({ max: s.max, sum: s.sum, target, shards: record }));
  },
  finish(inputs, stats, options, upstream, k) {
    const { p, first, owns, record, face } = headShard(def, inputs, options, true, upstream);
    checkStats("stats", stats, p.n, false, record);
    const t4 = p.target.slice();
    for (let i = 0; i < p.n; i++) t4[4 * i] = stats.target[i];
    const terms = headRowTerms(t4, p.labels, stats);
    const rows = terms.rows.map((r, i) => (owns(i) ? r : 0));
    return then(k.headShardGrads({ p, first, stats, terms, target: stats.target }), (g) => {
      const grads = { x: { data: g.x, shape: [p.n, p.d] }, W: { data: g.W, shape: [p.c * (p.subcenters ?? 1), p.d] } };
      if (!face.norm) return { loss: v.reduce(rows, p.reduction, p.denominator), ...face.parts, grads };
      // magface: the shard's rows' share of ce + lambda g, and of the norms' gradient through ||x_i||.
      const mine = { ...face.norm, g: face.norm.g.map((t, i) => (owns(i) ? t : 0)) };
      const parts = magfaceParts(mine, rows, p.reduction, p.denominator);
      const dn = normGrads(face.norm, p.scales, terms.rows);
      for (let i = 0; i < p.n; i++) {
        if (!owns(i) || !(p.nx[i] > 0) || dn[i] === 0) continue;
        for (let q = 0; q < p.d; q++) g.x[i * p.d + q] += (dn[i] * p.x[i * p.d + q]) / p.nx[i];
      }
      return { loss: parts.loss, ce: v.reduce(rows, p.reduction, p.denominator), g: parts.g, grads };
    });
  },
});

/**
 * A checked shard of `linearCrossEntropy`'s vocabulary: x, the shard's rows of W and slice of the
 * bias, global labels and class weights; its problem with labels local to the shard (-1 ignored,
 * the shard's class, or Cs for a label elsewhere).
 */
function linearShard(
  inputs: { x: unknown; W: unknown; bias?: unknown; labels: Labels; classes?: unknown },
  options: unknown,
  grad: boolean,
  upstream?: Upstream,
) {
  const o = v.options(options as LinearCrossEntropyOptions & Partial<ShardOptions>);
  v.inputs(inputs);
  if (inputs.classes !== undefined) {
    throw new TypeError(
      `Expected no classes on a shard of linearCrossEntropy (its rows of W are its classes), got ${
        v.show(inputs.classes)
      }`,
    );
  }
  const [n, d] = v.batch("x", inputs.x);
  const [cs] = v.matrix("W", inputs.W, undefined, d);
  const { offset, classes } = shardOf("W", cs, o);
  const ignoreIndex = v.integer("options.ignoreIndex", o.ignoreIndex, -100);
  const labels = v.labels("labels", inputs.labels, n, classes, ignoreIndex);
  const bias = biasOf(inputs.bias, cs);
  const weight = v.vector("options.weight", o.weight, classes, 0, v.MAX_WEIGHT);
  const smoothing = v.number("options.labelSmoothing", o.labelSmoothing, 0, { min: 0, max: 1 });
  const { softcap, zLoss } = largeVocabulary(o);
  const reduction = v.reduction(o.reduction);
  const x = v.values(inputs.x as Matrix), W = v.values(inputs.W as Matrix);
  if (v.onDevice(x) || v.onDevice(W)) {
    throw new TypeError("Expected x and W to be host matrices { data, shape } (sharded losses), got a GPUBuffer");
  }
  if (o.checkFinite) {
    v.finite("x", x, d);
    v.finite("W", W, d);
    if (bias) v.finite("bias", bias, cs);
  }
  const local = labels.map((y) => (y < 0 ? -1 : y >= offset && y < offset + cs ? y - offset : cs));
  const target = new Float64Array(2 * n);
  for (let i = 0; i < n; i++) {
    const y = local[i];
    if (y < 0 || y >= cs) continue;
    let u = bias ? bias[y] : 0;
    for (let k = 0; k < d; k++) u += x[i * d + k] * W[y * d + k];
    target.set(capped(u, softcap), 2 * i);
  }
  let denominator = 0;
  for (let i = 0; i < n; i++) if (labels[i] >= 0) denominator += weight ? weight[labels[i]] : 1;
  const count = nonIgnored(labels), ignored = (i: number) => labels[i] < 0;
  const scales = grad ? v.rowScales(reduction, upstream, n, denominator, ignored) : new Float64Array(0);
  const zScales = grad ? v.rowScales(reduction, upstream, n, count, ignored) : new Float64Array(0);
  const p: LinearCeProblem = {
    grad,
    n,
    d,
    c: cs,
    x,
    W,
    bias,
    labels: local,
    weight: weight && weight.subarray(offset, offset + cs),
    smoothing,
    softcap,
    zLoss,
    target,
    scales,
    zScales,
    reduction,
    denominator,
    count,
    outX: null,
    outW: null,
    outBias: null,
  };
  // What every shard must share: the labels and x, and the options as checked (defaults filled in).
  const agreed = [linearName, reduction, weight, smoothing, softcap, zLoss];
  const record = shardRecord(offset, offset + cs, classes, labels, [x], agreed);
  return { p, labels, weight, classes, local, record };
}

const linearName = "linearCrossEntropy";

/** The sharded form of `linearCrossEntropy` (its vocabulary over shards of W's rows). */
const linearShardDef = (def: LossDef<unknown, unknown, unknown, "linearCe">): ShardDef => ({
  name: def.name,
  inputs: def.inputs,
  options: [...(def.options as readonly string[]), ...SHARD_KEYS],
  stats(inputs, options, k) {
    const { p, record } = linearShard(inputs, options, false);
    return then(k.linearShardStats({ p }), (st): ShardStats => ({ ...st, shards: record }));
  },
  finish(inputs, stats, options, upstream, k) {
    const s = linearShard(inputs, options, true, upstream), { p } = s;
    checkStats("stats", stats, p.n, p.smoothing !== 0, s.record);
    // The row terms from the merged statistics, G without the label's slope (the kernel applies it).
    const unit = Float64Array.from({ length: 2 * p.n }, (_, k) => (k % 2 ? 1 : 0));
    const t = logitRowTerms(stats, { ...p, labels: s.labels, weight: s.weight, classes: s.classes, target: unit });
    const own = (i: number) => s.local[i] >= 0 && s.local[i] < p.c;
    const rows = t.rows.map((r, i) => (own(i) ? r : 0)), zRows = t.zRows.map((r, i) => (own(i) ? r : 0));
    return then(k.linearShardGrads({ p, stats, terms: t }), (g) => {
      const ce = v.reduce(rows, p.reduction, p.denominator), z = v.reduce(zRows, p.reduction, p.count);
      const loss = typeof ce === "number" ? ce + (z as number) : Float32Array.from(rows, (r, i) => r + zRows[i]);
      return {
        loss,
        z,
        grads: {
          x: { data: g.x, shape: [p.n, p.d] },
          W: { data: g.W, shape: [p.c, p.d] },
          ...(g.bias ? { bias: g.bias } : {}),
        },
      };
    });
  },
});

/** The sharded form of a definition that has one (its `shard`). */
const FORMS: Record<ShardForm, (def: never) => ShardDef> = {
  logits: logitShardDef,
  head: headShardDef,
  linear: linearShardDef,
};

/** What a sharded loss's method returns: `T` on the CPU backends (`"sync"`), a Promise of it on `init()`'s. */
export type ShardedReturn<W extends "sync" | "async", T> = W extends "sync" ? T : Promise<T>;

/**
 * A loss split over shards of classes: `stats` on each shard, an all-reduce of the
 * statistics ({@linkcode mergeShardStats}), then `finish` on each shard with the merged ones.
 * Options: the loss's own (no `out`), `offset` (the shard's first class) and `classes` (C).
 */
export interface ShardedLoss<W extends "sync" | "async", I, O, G> {
  /** The shard's per-row statistics of its classes (the inputs hold the shard's columns / rows of W). */
  stats(inputs: I, options: O & ShardOptions): ShardedReturn<W, ShardStats>;
  /**
   * The shard's share of the loss and its gradients, from every shard's merged statistics;
   * `upstream` as `backward` (a number, or one value per row for `reduction: "none"`).
   */
  finish(
    inputs: I,
    stats: ShardStats,
    options: O & ShardOptions,
    upstream?: Upstream,
  ): ShardedReturn<W, ShardResult<G>>;
  /**
   * `marginHead` only: the class cosine of each row's label where this shard holds it, else 0;
   * their sum over the shards is `inputs.labelCos` of `stats` and `finish` with
   * `kind: "curricularFace"` (whose `t` is the batch's mean label cosine).
   */
  labelCosines?(inputs: I, options: O & ShardOptions): ShardedReturn<W, LabelCosines>;
  /**
   * `arcface` and `marginHead` with `interTopK` k >= 1 (SPEC §7): per row the k largest non-target
   * class cosines of this shard's classes (clamped, filtered by `interclassFilteringThreshold`) and
   * their global classes; merge every shard's with `mergeShardTopK` (an all-gather of `N k` pairs)
   * and pass the result to `stats` and `finish` as `inputs.topK`.
   */
  topK?(inputs: I, options: O & ShardOptions): ShardedReturn<W, ShardTopK>;
}

/** The options of a sharded loss besides `offset` and `classes`: the loss's own without `out`. */
export type ShardedOptions<O> = Omit<O, "out" | keyof CommonOptions> & Pick<CommonOptions, "checkFinite">;

/**
 * The class-sharded losses of a backend (`losses.sharded`); see docs/SHARDING.md.
 *
 * @example Two shards of crossEntropy equal the unsharded loss
 * ```ts
 * import { js, mergeShardStats } from "@softmargin/softmargin/cpu";
 * const labels = [0, 2];
 * const full = { data: new Float32Array([2, 1, 0, 0.5, 1, 3]), shape: [2, 3] as const };
 * // Shard 0 holds class 0, shard 1 classes 1 and 2.
 * const shards = [
 *   { logits: { data: new Float32Array([2, 0.5]), shape: [2, 1] as const }, labels },
 *   { logits: { data: new Float32Array([1, 0, 1, 3]), shape: [2, 2] as const }, labels },
 * ];
 * const options = [{ offset: 0, classes: 3 }, { offset: 1, classes: 3 }];
 * const merged = mergeShardStats(shards.map((s, k) => js.sharded.crossEntropy.stats(s, options[k])));
 * const shares = shards.map((s, k) => js.sharded.crossEntropy.finish(s, merged, options[k]).loss as number);
 * console.log(shares[0] + shares[1], js.crossEntropy.forward({ logits: full, labels }).loss); // 0.3022 0.3022
 * ```
 */
export type ShardedSet<W extends "sync" | "async"> = {
  [K in keyof Registry as ShardOf<Registry[K]> extends ShardForm ? K : never]: Registry[K] extends
    Definition<infer I, infer O, infer G, infer _Parts, "loss", infer _Shard> ? ShardedLoss<W, I, ShardedOptions<O>, G>
    : never;
};

/** The definitions of the registry (`src/losses/registry.ts`), by public name. */
export type Registry = typeof registry;

/** The sharded form of a definition (`undefined` for none). */
export type ShardOf<D> = D extends Definition<infer _I, infer _O, infer _G, infer _P, infer _K, infer S> ? S
  : undefined;

/** Binds the sharded losses to a backend's kernels (methods return Promises with `async`). */
export function bindSharded(
  definitions: Readonly<Record<string, object>>,
  k: ShardKernels,
  async: boolean,
): ShardedSet<"sync"> | ShardedSet<"async"> {
  const out: Record<string, unknown> = {};
  for (const [name, d] of Object.entries(definitions)) {
    const form = (d as { shard?: ShardForm }).shard;
    if (form === undefined) continue;
    const def = FORMS[form](d as never);
    const wrap = <T>(f: () => T) => (async ? (async () => await f())() : f());
    const keys = { name: `sharded.${name}`, inputs: def.inputs, options: def.options };
    out[name] = {
      stats: (inputs: never, options: never) =>
        wrap(() => def.stats(inputs, checkCall(keys, inputs, options) as never, k)),
      finish: (inputs: never, stats: ShardStats, options: never, upstream?: Upstream) =>
        wrap(() => def.finish(inputs, stats, checkCall(keys, inputs, options) as never, upstream, k)),
      ...(def.labelCosines
        ? {
          labelCosines: (inputs: never, options: never) =>
            wrap(() => def.labelCosines!(inputs, checkCall(keys, inputs, options) as never)),
        }
        : {}),
      ...(def.topK
        ? {
          topK: (inputs: never, options: never) =>
            wrap(() => def.topK!(inputs, checkCall(keys, inputs, options) as never, k)),
        }
        : {}),
    };
  }
  return out as unknown as ShardedSet<"sync">;
}
