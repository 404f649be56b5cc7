/**
 * WebGPU glue of the face margin losses on GPU-resident cosines (`adaface`,
 * `curricularFace`, `magface`; SPEC §7): src/webgpu/face_margin.wgsl's `rows` computes the
 * batch statistic, the next state and every row's label target into the cross-entropy
 * kernel's per-row inputs on the GPU, src/webgpu/cross_entropy.wgsl runs as for every margin
 * loss, and `post` gathers the row losses and MagFace's norms gradient: one pass each, one
 * submission, nothing read back between them (rules of docs/DEVELOPMENT.md: a `Planner`
 * job whose `after` records the row kernel and the second pass).
 *
 * @module
 */
import type { HardLabelProblem } from "../kernels/hard_label.ts";
import { columns, type Raw } from "../kernels/core.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import { F, type GpuContext, recordRows, type RowJob } from "./context.ts";
import { targetParams } from "./margin.ts";
import { type Buffers, fits, job, type Plan, solve } from "./passes.ts";

/** The kernel's `kind` of each loss. */
const KIND = { adaface: 0, curricularFace: 1, magface: 2 } as const;

/** The face rows, then the cross-entropy row kernel `ce` (its per-row inputs written by them), on the GPU. */
export function faceRows(ctx: GpuContext, p: HardLabelProblem, ce: RowJob<"cross_entropy">): Raw | Promise<Raw> {
  return solve(ctx, p, (ctx, p, bufs) => planFace(ctx, p, bufs, ce));
}

function planFace(ctx: GpuContext, p: HardLabelProblem, bufs: Buffers, ce: RowJob<"cross_entropy">): Plan {
  ctx.check();
  const f = p.face!, { n, c } = p, rs = ce.rsIn!;
  fits(ctx, "cos", n * c);
  const stateK = f.kind === "adaface" ? 2 : f.kind === "curricularFace" ? 1 : 0;
  const stGpu = onDevice(f.state);
  // The state as pairs (hi, lo) from the host, or the caller's float32 matrix in place.
  const st = f.state === null
    ? null
    : stGpu
    ? f.state as Float32Array
    : Float32Array.from({ length: 2 * stateK }, (_, k) => {
      const x = (f.state as readonly number[])[k >> 1], hi = Math.fround(x);
      return k & 1 ? x - hi : hi;
    });
  const rowIn = bufs.input(ce.rowIn!)!;
  const out = bufs.scratch((8 + 4 * n) * 4);
  const normsGrad = f.kind === "magface" && p.grad;
  const gn = normsGrad ? ctx.buffer(n * 4) : null;
  const stOut = stateK > 0 && ctx.recording ? ctx.buffer(stateK * 4) : null;
  const params = {
    n,
    c,
    face: KIND[f.kind],
    flags: p.grad ? F.GRAD : 0,
    rs,
    zero: 0,
    st_gpu: stGpu ? 1 : 0,
    scale: p.scale,
    ...f.params,
    ...(f.phi ? targetParams({ kind: "margin", phi: f.phi, constant: f.constant }) : { tg_const: f.constant ? 1 : 0 }),
  };
  const bindings = [
    bufs.input(p.logits),
    bufs.input(p.labels),
    bufs.input(f.norms),
    bufs.input(st),
    rowIn,
    out,
    null,
    gn,
  ];
  let grad: Float32Array | undefined;
  const pass = job({
    kernel: "face_margin",
    params,
    layout: "rrrrwwrw",
    bindings,
    dispatches: [["rows", 1]],
    reads: [[out, (8 + 4 * n) * 4]],
    after: (enc) => {
      const r = recordRows(ctx, { ...ce, rowIn: new DeviceValues(rowIn, [n, rs]) as unknown as Float32Array });
      grad = r.outs[0];
      const post = ctx.pipelineNow("face_margin", "rrrrwwrw", "post");
      const u = ctx.temp(ctx.params("face_margin", params));
      const cp = enc.beginComputePass();
      cp.setPipeline(post);
      cp.setBindGroup(0, ctx.bind(post, u, [...bindings.slice(0, 6), (r.rows as unknown as DeviceValues).buffer, gn]));
      cp.dispatchWorkgroups(1);
      cp.end();
      if (stOut) enc.copyBufferToBuffer(out, 16, stOut, 0, stateK * 4);
    },
  });
  return {
    jobs: [pass],
    values: {},
    finish: ([[v]]: Float32Array[][]): Raw => {
      const [ce, g] = columns(v, n, 4, 8);
      const state = stOut
        ? new DeviceValues(stOut, [1, stateK]) as unknown as Float32Array
        : Float64Array.from({ length: stateK }, (_, k) => v[2 * k] + v[2 * k + 1]) as unknown as Float32Array;
      const grads: Record<string, Float32Array> = {};
      if (p.grad) grads.logits = grad!;
      if (gn) grads.norms = new DeviceValues(gn, [n, 1]) as unknown as Float32Array;
      return { rows: [ce, g], grads, outputs: stateK > 0 ? { state } : {} };
    },
  };
}
