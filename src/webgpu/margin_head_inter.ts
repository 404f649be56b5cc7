/**
 * `marginHead`'s inter-class options and per-row margins on the WebGPU head (SPEC.md section 7), the
 * glue of src/webgpu/margin_head_inter.wgsl and src/webgpu/margin_head_topk.wgsl, as small additions
 * to the head's call (src/webgpu/margin_head.ts):
 *  - `interclassFilteringThreshold`: the logit tiles clamp and filter every non-label cosine
 *    (flags MH_NT | MH_INTER, uniform `nt_cut`);
 *  - `interTopK` k: after the label's terms, a first pass over W in the backward's chunks of classes
 *    (the head's tile GEMM) writes each chunk's clamped and filtered cosines [chunk, N], and one
 *    invocation per row keeps its top k in class order (ties to the smaller class, as the host's
 *    `RowTopK`); then each row's threshold and tie go to row_v, and the logit tiles make the hard
 *    non-labels `s cos(theta - m')` (MH_TOPK; k >= C - 1: every non-label, no pass);
 *  - a per-row `margin` (`m2`, `m3`): each row's target constants in float64 pairs, read by the
 *    label's kernel (MH_ROWM).
 * Extra memory: N (2k + 2) floats and, for k > 0 without a gradient, one [N, chunk] block.
 *
 * @module
 */
import type { HeadProblem } from "../kernels/head.ts";
import type { GpuContext, KernelName } from "./context.ts";
import { MH } from "./generated.ts";
import { rowMarginPairs } from "./margin.ts";

/** interTopK's classes are float32s on the GPU: exact below 2^24. */
const MAX_TOPK_CLASSES = 1 << 24;

/** The pipelines of the interTopK pass (src/webgpu/margin_head_topk.wgsl). */
export const INTER_PIPELINES: [KernelName, string, string[]] = [
  "margin_head_topk",
  "rrrwrww",
  ["topk_cos", "topk_scan", "topk_rows"],
];

/**
 * A head problem of a class shard's `interTopK` step (src/webgpu/sharded.ts): `topKStep` keeps every
 * row's list of k even where k >= C - 1 (the shard's classes are a part of the head's).
 */
export type TopKStep = HeadProblem & { readonly topKStep?: boolean };

/** Whether the interTopK pass keeps no list (k >= C - 1: every non-label hard). */
const allHard = (p: TopKStep, k: number) => k >= p.c - 1 && !p.topKStep;

/**
 * The inter-class options' flag bits and uniform fields for a head problem (none: no bits, no fields).
 * `nonTarget.rows` given (a shard's rows from the merged top k): MH_TOPK with no pass, the host's rows in row_v.
 */
export function interParams(p: TopKStep): { flags: number; fields: Record<string, number> } {
  const nt = !p.face && p.nonTarget ? p.nonTarget : null;
  const k = p.interTopK ?? 0;
  let flags = p.rowMargins ? MH.ROWM : 0;
  if (!nt) return { flags, fields: {} };
  flags |= MH.NT | MH.INTER | (k > 0 || nt.rows ? MH.TOPK : 0);
  // (nt_k 0: k >= C - 1, every non-label hard)
  return { flags, fields: { nt_cut: nt.cut, nt_a: nt.a, nt_b: nt.b, nt_g: nt.g, nt_k: allHard(p, k) ? 0 : k } };
}

/**
 * The buffers of the options of a head call: the per-row margins (bound as the label kernel's
 * binding 5) and interTopK's per-row lists and cosine block (`du` when there is one).
 */
export function openInter(
  ctx: GpuContext,
  p: TopKStep,
  keep: (b: GPUBuffer) => GPUBuffer,
  chunk: number,
  du: GPUBuffer | null,
) {
  const { n } = p;
  const rowm = p.rowMargins
    ? { buffer: keep(ctx.upload(rowMarginPairs(p.rowMargins))), offset: 0, size: 48 * n }
    : null;
  const k = p.interTopK ?? 0;
  if (k === 0 || !p.nonTarget || p.face) return { rowm, top: null };
  if (p.c > MAX_TOPK_CLASSES) {
    throw new RangeError(
      `Expected at most ${MAX_TOPK_CLASSES} classes with options.interTopK on the WebGPU backend, got ${p.c}`,
    );
  }
  const all = allHard(p, k);
  const bytes = all ? 16 : n * (2 * k + 2) * 4;
  if (bytes > ctx.maxBinding) {
    throw new RangeError(
      `Expected options.interTopK's lists, N * (2k + 2) float32 (${bytes} bytes, k = ${k}), to fit one WebGPU storage binding (${ctx.maxBinding} bytes)`,
    );
  }
  const list = keep(ctx.buffer(bytes));
  const block = all ? null : (du ?? keep(ctx.buffer(n * chunk * 4)));
  return { rowm, top: { all, list, block } };
}
