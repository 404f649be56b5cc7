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
import type { FaceTarget, HardLabelProblem, MarginSpec } from "../kernels/hard_label.ts";
import { columns, type Raw } from "../kernels/core.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import { F, type GpuContext, recordRows, type RowJob } from "./context.ts";
import { targetParams } from "./margin.ts";
import { type Buffers, fits, job, type Plan, solve } from "./passes.ts";

/** The kernel's `kind` of each loss. */
const KIND = { adaface: 0, curricularFace: 1, magface: 2 } as const;

/** The ArcFace target of no margin (the label's logit of the kinds whose target `face_rows` writes). */
const PLAIN: MarginSpec = { m1: 1, m2: 0, m3: 0, branch: "none" };

/** The uniform fields of a face kind (src/webgpu/face_params.wgsl and the label target's). */
export function faceUniforms(f: FaceTarget) {
  return {
    face: KIND[f.kind],
    st_gpu: onDevice(f.state) ? 1 : 0,
    ...f.params,
    ...targetParams({ kind: "margin", phi: f.phi ?? PLAIN, constant: f.constant }),
  };
}

/** The number of values of a face kind's state (0: none). */
export const stateSize = (f: FaceTarget): number => f.kind === "adaface" ? 2 : f.kind === "curricularFace" ? 1 : 0;

/** The state input to bind: the host's numbers as pairs (hi, lo), or the caller's float32 GPU matrix in place. */
export function stateValues(f: FaceTarget): Float32Array | null {
  if (f.state === null) return null;
  if (onDevice(f.state)) return f.state as Float32Array;
  const x = f.state as readonly number[];
  return Float32Array.from(
    { length: 2 * x.length },
    (_, k) => (k & 1 ? x[k >> 1] - Math.fround(x[k >> 1]) : x[k >> 1]),
  );
}

/** The face rows, then the cross-entropy row kernel `ce` (its per-row inputs written by them), on the GPU. */
export function faceRows(ctx: GpuContext, p: HardLabelProblem, ce: RowJob<"cross_entropy">): Raw | Promise<Raw> {
  return solve(ctx, p, (ctx, p, bufs) => planFace(ctx, p, bufs, ce));
}

function planFace(ctx: GpuContext, p: HardLabelProblem, bufs: Buffers, ce: RowJob<"cross_entropy">): Plan {
  ctx.check();
  const f = p.face!, { n, c } = p, rs = ce.rsIn!;
  fits(ctx, "cos", n * c);
  const stateK = stateSize(f);
  const st = stateValues(f);
  const rowIn = bufs.input(ce.rowIn!)!;
  const out = bufs.scratch((8 + 4 * n) * 4);
  const normsGrad = f.kind === "magface" && p.grad;
  const gn = normsGrad ? ctx.buffer(n * 4) : null;
  const stOut = stateK > 0 && ctx.recording ? ctx.buffer(stateK * 4) : null;
  const params = {
    n,
    c,
    flags: p.grad ? F.GRAD : 0,
    rs,
    zero: 0,
    scale: p.scale,
    ...faceUniforms(f),
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
