/**
 * WebGPU glue of the fused softmax cross-entropy kernel (`crossEntropy`, `focal`, the
 * margin losses on cosines): gpu/hard_label.wgsl.
 *
 * @module
 */
import type { HardLabelProblem } from "../src/losses/cross_entropy.ts";
import type { Raw } from "../src/loss.ts";
import { F, type GpuContext, runRows } from "./context.ts";

/** Row losses and gradient of a hard-label problem on the GPU. */
export async function hardLabel(ctx: GpuContext, p: HardLabelProblem): Promise<Raw> {
  const { n, c } = p;
  let target = p.target;
  if (target === null && p.targetFrom) {
    // GPU-resident cosines: gather each row's label cosine (N floats) for the host's phi.
    const { rows } = await runRows(ctx, {
      kernel: "gather",
      n,
      c,
      params: {},
      ins: [p.logits],
      outs: [],
      labels: p.labels,
      rsOut: 1,
    });
    target = p.targetFrom((i) => rows[i]);
  }
  // Per row: the gradient scale, the label's logit and its derivative.
  const rowIn = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) {
    rowIn[3 * i] = p.grad ? p.scales[i] : 0;
    if (target) {
      rowIn[3 * i + 1] = target[2 * i];
      rowIn[3 * i + 2] = target[2 * i + 1];
    }
  }
  let wsum = c;
  if (p.weight) {
    wsum = 0;
    for (let j = 0; j < c; j++) wsum += p.weight[j];
  }
  const flags = (p.grad ? F.GRAD : 0) | (p.clamp ? F.CLAMP : 0) | (p.weight ? F.WEIGHT : 0) | (target ? F.TARGET : 0);
  const { rows, outs } = await runRows(ctx, {
    kernel: "hard_label",
    n,
    c,
    params: { flags, eps: p.smoothing, gamma: p.gamma, scale: p.scale, wsum },
    ins: [p.logits],
    outs: [p.grad ? { name: p.target || p.targetFrom ? "cos" : "logits", out: p.out } : null],
    labels: p.labels,
    rowIn,
    rsIn: 3,
    cls: p.weight,
    rsOut: 1,
  });
  return { rows: [Float64Array.from(rows)], grads: p.grad ? { logits: outs[0] } : {} };
}
