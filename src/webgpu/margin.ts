/**
 * The label targets' uniform fields (src/webgpu/margin_params.wgsl) from a loss's target as
 * data: src/webgpu/margin.wgsl evaluates the target in float pairs from the host's float64
 * constants.
 *
 * @module
 */
import type { MarginSpec, MarginTarget } from "../kernels/hard_label.ts";
import type { TargetSpec } from "../kernels/head.ts";
import type { ParamName } from "./context.ts";
import { TG } from "./generated.ts";

/** The target fields (the same in every struct that includes src/webgpu/margin_params.wgsl). */
type TargetField = Extract<ParamName<"cross_entropy">, `tg${string}`>;

/** The uniform fields of a target (none: the label's logit is like the others). */
export function targetParams(t: MarginTarget | TargetSpec | undefined): Partial<Record<TargetField, number>> {
  if (t === undefined) return { tg: TG.NONE };
  if (t.kind === "host") {
    throw new TypeError(
      "Expected a label target the WebGPU kernels evaluate, got the face kinds' host-side one (their rows are written by src/webgpu/margin_head_face.wgsl or, on shards, by src/webgpu/sharded.ts)",
    );
  }
  if (t.kind !== "margin") {
    return {
      tg: t.kind === "sphereface" ? TG.SPHERE : TG.LSOFTMAX,
      tg_m: t.m,
      tg_a: t.weight,
      tg_inv: 1 / (1 + t.weight),
    };
  }
  const { m1, m2, m3, branch } = t.phi;
  return {
    // m1 = 1 (ArcFace, CosFace, NormFace): from cos and sin, no angle needed.
    tg: m1 === 1 ? TG.COS : TG.ANGLE,
    tg_branch: branch === "threshold" ? TG.B_THRESHOLD : branch === "easy" ? TG.B_EASY : TG.B_NONE,
    tg_const: t.constant ? 1 : 0,
    tg_m1: m1,
    tg_m2: m2,
    tg_m3: m3,
    tg_cm: Math.cos(m2),
    tg_sm: Math.sin(m2),
    tg_th: Math.cos(Math.PI - m2),
    tg_mm: Math.sin(Math.PI - m2) * m2,
  };
}

/**
 * Each row's target constants `[N, 12]`, the pairs (float32 hi, lo) of m2, m3, cos m2, sin m2,
 * cos(pi - m2), m2 sin(pi - m2) from the host's float64 values (a per-row margin: src/webgpu/margin.wgsl's
 * `TgM`, read by the head's label kernel and the cosine losses' `targets`).
 */
export function rowMarginPairs(rows: readonly MarginSpec[]): Float32Array {
  const out = new Float32Array(12 * rows.length);
  rows.forEach(({ m2, m3 }, i) => {
    [m2, m3, Math.cos(m2), Math.sin(m2), Math.cos(Math.PI - m2), Math.sin(Math.PI - m2) * m2].forEach((v, q) => {
      const hi = Math.fround(v);
      out[12 * i + 2 * q] = hi;
      out[12 * i + 2 * q + 1] = v - hi;
    });
  });
  return out;
}
