/**
 * WebGPU glue of the `softmax` and `logSoftmax` transforms: src/webgpu/softmax.wgsl.
 *
 * @module
 */
import type { SoftmaxProblem } from "../kernels/softmax.ts";
import { F, type GpuContext, runRows } from "./context.ts";
import { then } from "../kernels/core.ts";

/** The transform's output, or its vector-Jacobian product with `p.up`. */
export function softmaxTransform(ctx: GpuContext, p: SoftmaxProblem): Float32Array | Promise<Float32Array> {
  return then(
    runRows(ctx, {
      kernel: "softmax",
      n: p.n,
      c: p.c,
      params: { flags: (p.up ? F.GRAD : 0) | (p.log ? F.LOG : 0) },
      ins: p.up ? [p.x, p.up] : [p.x],
      outs: [{ name: p.up ? "x" : "output", out: p.out }],
      rsOut: 1,
    }),
    ({ outs }) => outs[0],
  );
}
