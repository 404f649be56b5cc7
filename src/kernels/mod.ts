/**
 * The kernel contract, the bottom layer of the library: what a backend implements. It
 * imports nothing above it (only `src/types.ts` and `src/validate.ts`); the loss
 * definitions (`src/losses/`) and the backends (`src/reference/`, `src/wasm/`,
 * `src/webgpu/`) import it, never each other. Each family's problem type, and the math
 * every backend shares for it, is a file of this folder; `core.ts` holds the raw result
 * (`Raw`), the kernel type and the generic result helpers.
 *
 * Every loss definition names its family (`LossDef.kernel`), so this interface and the
 * definitions are the one place that says which kernel runs each loss; a backend is one
 * function per family (`src/reference/mod.ts`, `src/wasm/mod.ts`, `src/webgpu/mod.ts`).
 * The families:
 *
 * | family      | problem                                    | losses                                                          |
 * | ----------- | ------------------------------------------ | --------------------------------------------------------------- |
 * | `hardLabel` | fused softmax cross-entropy, label logit   | crossEntropy, focal, arcface, cosface, normface, combinedMargin |
 * |             |                                            | adaface, curricularFace, magface                                |
 * | `softTarget`| soft-target cross-entropy                  | softCrossEntropy                                                |
 * | `klDiv`     | KL divergence of log-probabilities         | klDiv                                                           |
 * | `distill`   | temperature KL + cross-entropy             | distillation                                                    |
 * | `topkHits`  | top-k hits (a metric)                      | accuracy                                                        |
 * | `head`      | class-chunked GEMM + online log-sum-exp    | marginHead, sphereface, lsoftmax                                |
 * | `linearCe`  | vocabulary chunks as crossEntropy shards   | linearCrossEntropy                                              |
 * | `softmax`   | row softmax / log-softmax and their VJPs   | softmax, logSoftmax                                             |
 * | `center`    | distances to class centres                 | centerLoss                                                      |
 * | `contrastive` | B x B similarities, rule-aware SupCon    | physicsContrastive (and physMoe)                                |
 * | `diversity` | pairwise distances between experts         | featureDiversity                                                |
 * | `centerReg` | normalised centres and the rule graph      | centerRegularization (and physMoe)                              |
 * | `experts`   | one softmax per expert: CE/focal, KL terms | mixOutputs, iclMoe (and physMoe)                                |
 * | `hierarchical` | coarse CE + CE over the true group      | hierarchical (and physMoe)                                      |
 * | `hnm`       | prototype cosines, hard negatives          | hnmContrastive                                                  |
 * | `paired`    | blocked N x N similarities of two batches  | clip, siglip                                                    |
 * | `metric`    | similarities of normalised rows, mining    | ntXent, tripletMargin, multiSimilarity, proxyAnchor             |
 * | `combine`   | sums of terms' gradients, a gated VJP      | (physMoe's combination of its terms' gradients)                 |
 * | `logitShardStats`, `logitShardGrads` | a shard of classes of the fused softmax | `sharded.crossEntropy` and the margin losses |
 * | `headShardStats`, `headShardGrads` | the head's two phases on a shard of W | `sharded.marginHead`                         |
 *
 * A composite (`physMoe`) has no family of its own: its terms run on the families
 * above, the `combine` term last, through `composite`: in order on the CPU
 * (`sequential` below), in one submission on WebGPU when the inputs are on
 * the GPU (`src/webgpu/composite.ts`).
 *
 * @module
 */
import type { Kernel, Raw } from "./core.ts";
import { hostOnly, then } from "./core.ts";
import type { CombineProblem } from "./combine.ts";
import type { AccuracyProblem } from "./topk_hits.ts";
import type { HardLabelProblem } from "./hard_label.ts";
import type { DistillationProblem } from "./distill.ts";
import type { KlProblem, PairProblem } from "./soft_target.ts";
import type { HeadProblem } from "./head.ts";
import type { SoftmaxKernel } from "./softmax.ts";
import type { CenterProblem } from "./center.ts";
import type { ContrastiveProblem } from "./contrastive.ts";
import type { DiversityProblem } from "./diversity.ts";
import type { CenterRegProblem } from "./center_reg.ts";
import type { ExpertsProblem } from "./experts.ts";
import type { HierarchicalProblem } from "./hierarchical.ts";
import type { HnmProblem } from "./hnm.ts";
import type { PairedProblem } from "./paired.ts";
import type { MetricProblem } from "./metric.ts";
import type { ShardKernels } from "./shards.ts";
import type { LinearCeProblem } from "./linear_ce.ts";

export * from "./core.ts";

/** One kernel per family: what a backend implements (the sharded losses' families included). */
export interface Kernels extends ShardKernels {
  hardLabel: Kernel<HardLabelProblem>;
  softTarget: Kernel<PairProblem>;
  klDiv: Kernel<KlProblem>;
  distill: Kernel<DistillationProblem>;
  topkHits: Kernel<AccuracyProblem>;
  head: Kernel<HeadProblem>;
  linearCe: Kernel<LinearCeProblem>;
  softmax: SoftmaxKernel;
  center: Kernel<CenterProblem>;
  contrastive: Kernel<ContrastiveProblem>;
  diversity: Kernel<DiversityProblem>;
  centerReg: Kernel<CenterRegProblem>;
  experts: Kernel<ExpertsProblem>;
  hierarchical: Kernel<HierarchicalProblem>;
  hnm: Kernel<HnmProblem>;
  paired: Kernel<PairedProblem>;
  metric: Kernel<MetricProblem>;
  combine: Kernel<CombineProblem>;
  /** A composite's terms, in order, each with its links bound; their raw results. */
  composite: (p: CompositeProblem) => Raw[] | Promise<Raw[]>;
}

/** The name of a kernel family (a key of {@linkcode Kernels}). */
export type KernelName = Exclude<keyof Kernels, "softmax" | "composite">;

/** The problem a kernel family solves. */
export type ProblemOf<K extends KernelName> = Parameters<Kernels[K]>[0];

/** A value of an earlier term of a composite: its index and a key of its gradients or outputs. */
export type Ref = readonly [term: number, key: string];

/**
 * One term of a composite loss: a problem, the kernel family that solves it, and its
 * links: fields of the problem (dotted paths: `"gated.into.0"`) that are an earlier
 * term's gradient or output, bound when the earlier term has run (on the backend where
 * it ran: a GPU buffer on WebGPU), so that one term can take another's result (the
 * experts' gated ensemble as the hierarchical term's fine logits) and the `combine`
 * family can add the terms' gradients together.
 */
export interface Term {
  readonly kernel: KernelName;
  readonly problem: unknown;
  readonly links?: Readonly<Record<string, Ref>>;
}

/**
 * The problem of `Kernels.composite`: the terms, and the size by which the `auto`
 * backend routes the whole composite (its largest term's rows `n` and columns `c`).
 */
export interface CompositeProblem {
  readonly terms: readonly Term[];
  readonly n: number;
  readonly c: number;
}

/** `value` with the field at a dotted `path` replaced by `x` (copies along the path; the rest shared). */
function setPath(value: unknown, path: readonly string[], x: unknown): unknown {
  if (path.length === 0) return x;
  const [head, ...rest] = path;
  const copy = (Array.isArray(value) ? [...value] : { ...(value as object) }) as Record<string, unknown>;
  copy[head] = setPath(copy[head], rest, x);
  return copy;
}

/**
 * A term's problem with its links bound: `lookup` gives an earlier term's value (its
 * gradient or output `key`). A missing value is an `Error` (a composite's own bug).
 */
export function linked(term: Term, lookup: (ref: Ref) => Float32Array | undefined): unknown {
  let p = term.problem;
  for (const [path, ref] of Object.entries(term.links ?? {})) {
    const value = lookup(ref);
    if (value === undefined) throw new Error(`Term ${term.kernel}: no ${ref[1]} from term ${ref[0]} for ${path}`);
    p = setPath(p, path.split("."), value);
  }
  return p;
}

/** A raw result's gradient or output by key. */
export const valueOf = (raw: Raw, key: string): Float32Array | undefined => raw.grads[key] ?? raw.outputs?.[key];

/**
 * `Kernels.composite` of a CPU backend (and of WebGPU for host inputs): every term on its
 * family's kernel, in order, each with its links bound to the earlier terms' results.
 */
export function sequential(kernels: Omit<Kernels, "composite">): (p: CompositeProblem) => Raw[] | Promise<Raw[]> {
  return (p) => {
    let raws: Raw[] | Promise<Raw[]> = [];
    for (const t of p.terms) {
      raws = then(raws, (done) => {
        const kernel = kernels[t.kernel] as (q: unknown) => Raw | Promise<Raw>;
        return then(kernel(linked(t, ([k, key]) => valueOf(done[k], key))), (r) => [...done, r]);
      }) as Raw[] | Promise<Raw[]>;
    }
    return raws;
  };
}

/**
 * A CPU backend's kernels, each refusing GPU-resident inputs (at any depth) with a
 * `TypeError`, and its `composite`: the terms in order on them (`sequential`).
 */
export function hostKernels(kernels: Omit<Kernels, "composite">, backend: string): Kernels {
  const out: Record<string, unknown> = {};
  const all = { ...kernels, composite: sequential(kernels) };
  for (const [k, f] of Object.entries(all)) out[k] = hostOnly(f as (p: object) => unknown, backend);
  return out as unknown as Kernels;
}

/**
 * A backend's GPU path (WebGPU; SPEC §10): a call with GPU-resident inputs and
 * `readback: false` runs its kernel and the loss's `finish` synchronously inside
 * `record`, its loss and parts computed on the GPU by `materialize`; the binding layer
 * (src/loss.ts) builds `readback: false`, `encoder` and `Losses.sync` on it.
 */
export interface GpuPath {
  /** The backend's kernels (synchronous inside `record`). */
  readonly kernels: Kernels;
  /** Runs `body` recording into `encoder` (the caller submits) or a new encoder submitted when it returns. */
  record<T>(encoder: GPUCommandEncoder | undefined, body: () => T): T;
  /** A finished result with its loss and parts as GPU matrices (`[1, 1]`, or `[N, 1]` per row), computed in the recording. */
  materialize(r: Record<string, unknown>): Record<string, unknown>;
  /** Releases a buffer of the recording with it (after its submission). */
  drop(b: GPUBuffer): void;
  /** Resolves once the device reported the errors of the recorded calls, rejecting with them if any. */
  settled(): Promise<void>;
}
