/**
 * WebGPU glue of `softCrossEntropy` (src/webgpu/soft_cross_entropy.wgsl) and `klDiv`
 * (src/webgpu/kl_div.wgsl): two `[N, C]` inputs, two gradients.
 *
 * @module
 */
import { columns, type Raw, then } from "../kernels/core.ts";
import type { PairProblem } from "../kernels/soft_target.ts";
import type { KlProblem } from "../kernels/soft_target.ts";
import { F, type GpuContext, runRows } from "./context.ts";

/** Runs a pair kernel: row losses, and both gradients when wanted. */
function pair(
  ctx: GpuContext,
  p: PairProblem,
  kernel: "soft_cross_entropy" | "kl_div",
  names: [string, string],
  flags: number,
): Raw | Promise<Raw> {
  return then(
    runRows(ctx, {
      kernel,
      n: p.n,
      c: p.c,
      params: { flags: flags | (p.grad ? F.GRAD : 0) },
      ins: [p.a, p.b],
      outs: p.grad ? [{ name: names[0], out: p.outA }, { name: names[1], out: p.outB }] : [],
      rowIn: p.grad ? Float32Array.from(p.scales) : null,
      rsIn: 1,
      rsOut: 1,
    }),
    ({ rows, outs }): Raw => ({ rows: columns(rows, p.n, 1), grads: p.grad ? { a: outs[0], b: outs[1] } : {} }),
  );
}

/** `softCrossEntropy` on the GPU. */
export function softTarget(ctx: GpuContext, p: PairProblem): Raw | Promise<Raw> {
  return pair(ctx, p, "soft_cross_entropy", ["logits", "target"], 0);
}

/** `klDiv` on the GPU. */
export function klDiv(ctx: GpuContext, p: KlProblem): Raw | Promise<Raw> {
  return pair(ctx, p, "kl_div", ["logInput", "target"], p.logTarget ? F.LOG : 0);
}
