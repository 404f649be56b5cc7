/**
 * WebGPU glue of the fused softmax cross-entropy kernel (`crossEntropy`, `focal`, the
 * margin losses on cosines): src/webgpu/cross_entropy.wgsl. Rows longer than one storage binding
 * run in segments of columns, merged with the (max, sum-exp) combine.
 *
 * @module
 */
import type { HardLabelProblem } from "../kernels/hard_label.ts";
import { columns, type Raw, then } from "../kernels/core.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import { checkOut, F, type GpuContext, type Params, type RowJob, runRows } from "./context.ts";
import { rowMarginPairs, targetParams } from "./margin.ts";
import { faceRows } from "./face_margin.ts";
import { topKWindow } from "./loops.ts";

/**
 * Row losses and gradient of a hard-label problem on the GPU, in one submission: the
 * margin losses' label targets are evaluated by the kernel (src/webgpu/margin.wgsl).
 */
export function hardLabel(ctx: GpuContext, p: HardLabelProblem): Raw | Promise<Raw> {
  // (sub-centres: a row is c = C K columns, the kernel's classes C)
  const sub = p.subcenters ?? 1, n = p.n, c = p.c * sub;
  const zLoss = p.zLoss ?? 0;
  // The face margin losses: label targets from the host (no target spec), or from the face kernel on
  // GPU-resident cosines (`face`), and the non-target transform.
  const host = (p.target !== null || p.face !== undefined) && p.margin === undefined, nt = p.nonTarget;
  // (a per-row margin on GPU-resident cosines: each row's target constants as pairs, columns 6 .. 17)
  const rowm = p.margin && p.rowMargins ? rowMarginPairs(p.rowMargins) : null;
  // (interTopK on GPU-resident cosines: each row's threshold and tie found by `targets`, h's columns 2, 3)
  const topK = p.margin && nt ? p.interTopK ?? 0 : 0;
  const hs = topK ? 4 + 2 * topK : 2;
  if (n * hs * 4 > ctx.maxBinding) {
    throw new RangeError(
      `Expected options.interTopK's lists, N * (2k + 4) float32 (${
        n * hs * 4
      } bytes, k = ${topK}), to fit one WebGPU storage binding (${ctx.maxBinding} bytes)`,
    );
  }
  const rs = rowm ? 18 : host || nt ? 6 : zLoss ? 2 : 1;
  // Per row: the gradient scale (and the z term's; the host's target, the transform's threshold and tie), in
  // and out: the row loss (and the z term).
  const rowIn = new Float32Array(n * rs);
  for (let i = 0; i < n; i++) {
    if (p.grad) rowIn[i * rs] = p.scales[i];
    if (p.grad && zLoss) rowIn[i * rs + 1] = p.zScales![i];
    if (host && p.target) rowIn.set(p.target.subarray(2 * i, 2 * i + 2), i * rs + 2);
    if (nt) {
      rowIn[i * rs + 4] = nt.rows ? Math.min(nt.rows[2 * i], 3.4028234e38) : 3.4028234e38;
      rowIn[i * rs + 5] = nt.rows ? nt.rows[2 * i + 1] : -1;
    }
    if (rowm) rowIn.set(rowm.subarray(12 * i, 12 * i + 12), i * rs + 6);
  }
  let wsum = p.c;
  if (p.weight) {
    wsum = 0;
    for (let j = 0; j < p.c; j++) wsum += p.weight[j];
  }
  const flags = (p.grad ? F.GRAD : 0) | (p.clamp ? F.CLAMP : 0) | (p.weight ? F.WEIGHT : 0) |
    (host ? F.HOST_TG : 0) | (nt ? F.NT : 0) | (rowm ? F.ROW_TG : 0) | (topK ? F.TOPK : 0);
  const params: Params<"cross_entropy"> = {
    flags,
    eps: p.smoothing,
    gamma: p.gamma,
    scale: p.scale,
    wsum,
    softcap: p.softcap ?? 0,
    zloss: zLoss,
    sub,
    ...(nt
      ? {
        nt_lo: nt.lo,
        nt_hi: nt.hi,
        nt_a: nt.a,
        nt_b: nt.b,
        nt_g: nt.g,
        nt_cut: Math.min(nt.cut, 3.4028234e38),
        nt_k: topK,
      }
      : {}),
    ...targetParams(p.margin),
  };
  const name = p.margin || host ? "cos" : "logits";
  if (c > ctx.segment) {
    if (host || nt || rowm || sub > 1) {
      throw new RangeError(
        `Expected C*K to be at most ${ctx.segment} columns for the face margin losses and subcenters on WebGPU (one storage binding per row), got ${c}`,
      );
    }
    if (ctx.recording) {
      throw new RangeError(
        `Expected a row of ${name} (${c} float32 values) to fit one WebGPU storage binding (${ctx.segment} values) with options.readback false, got ${c}`,
      );
    }
    return longRows(ctx, p, params, rowIn, rs, name);
  }
  const job: RowJob<"cross_entropy"> = {
    kernel: "cross_entropy",
    n,
    c,
    params,
    ins: [p.logits],
    outs: [p.grad ? { name, out: p.out } : null],
    labels: p.labels,
    rowIn,
    rsIn: rs,
    cls: p.weight,
    rsOut: rs,
    first: p.margin
      ? { entry: "targets", perRow: hs, passes: topK ? topKPasses(p.c, sub, topK) : undefined }
      : undefined,
  };
  if (p.face && p.target === null) return faceRows(ctx, p, job);
  return then(
    runRows(ctx, job),
    ({ rows, outs }): Raw => ({ rows: columns(rows, n, rs), grads: p.grad ? { logits: outs[0] } : {} }),
  );
}

/**
 * Rows longer than one binding: per row and segment the segment's statistics
 * (`seg_stats`), per row their merge into the loss and the gradient's coefficients
 * (`seg_finish`), per row and segment the gradient (`seg_grad`).
 */
async function longRows(
  ctx: GpuContext,
  p: HardLabelProblem,
  params: Params<"cross_entropy">,
  rowIn: Float32Array,
  rs: number,
  name: string,
): Promise<Raw> {
  ctx.check();
  const { n, c } = p;
  const seg = ctx.segment, nseg = Math.ceil(c / seg);
  const resident = onDevice(p.logits);
  checkOut(name, p.out as { buffer?: unknown } | null, resident);
  const temps: GPUBuffer[] = [];
  const keep = (b: GPUBuffer) => (temps.push(b), b);
  try {
    const labels = keep(ctx.upload(p.labels)), rows = keep(ctx.upload(rowIn));
    const cls = p.weight ? keep(ctx.upload(p.weight)) : null;
    // coef: per row (loss, m, ga, gu, the label's gradient, z term)
    const stats = keep(ctx.buffer(n * nseg * 16)), coef = keep(ctx.buffer(n * 24));
    const upload = resident ? null : keep(ctx.buffer(seg * 4));
    const grad = !p.grad
      ? null
      : resident
      ? ((p.out as unknown as { buffer?: GPUBuffer })?.buffer ?? ctx.buffer(n * c * 4))
      : keep(ctx.buffer(seg * 4));
    const staging = keep(ctx.staging(Math.max(seg * 4, n * 24)));
    const host = resident ? null : (p.out?.data ?? (p.grad ? new Float32Array(n * c) : null));
    const [stat, fin, back] = await Promise.all([
      ctx.pipeline("cross_entropy", "rrwwrrrw", "seg_stats"),
      ctx.pipeline("cross_entropy", "rrwwrrrw", "seg_finish"),
      ctx.pipeline("cross_entropy", "rrwwrrrw", "seg_grad"),
    ]);
    const all = { ...params, nseg, row_c: c, k: seg, rs_in: rs };
    // The input's segment s of row i: bound in place (resident) or uploaded.
    const input = (i: number, s: number, len: number): [GPUBufferBinding, number] => {
      if (upload === null) return ctx.range((p.logits as unknown as DeviceValues).buffer, i * c + s * seg, len);
      const d = p.logits;
      ctx.device.queue.writeBuffer(upload, 0, d.buffer as ArrayBuffer, d.byteOffset + (i * c + s * seg) * 4, len * 4);
      return [{ buffer: upload, offset: 0, size: len * 4 }, 0];
    };
    for (let i = 0; i < n; i++) {
      for (let s = 0; s < nseg; s++) {
        const len = Math.min(seg, c - s * seg);
        const [a, a_off] = input(i, s, len);
        const u = keep(ctx.params("cross_entropy", { ...all, n: 1, c: len, row0: i, a_off, col0: s * seg, seg: s }));
        await ctx.submit((enc) => {
          const pass = enc.beginComputePass();
          pass.setPipeline(stat);
          pass.setBindGroup(0, ctx.bind(stat, u, [a, null, null, null, labels, rows, cls, stats]));
          pass.dispatchWorkgroups(1);
          pass.end();
        });
      }
    }
    for (let r0 = 0; r0 < n; r0 += 64 * ctx.maxGroups) {
      const count = Math.min(64 * ctx.maxGroups, n - r0);
      const u = keep(ctx.params("cross_entropy", { ...all, n: count, row0: r0 }));
      await ctx.submit((enc) => {
        const pass = enc.beginComputePass();
        pass.setPipeline(fin);
        pass.setBindGroup(0, ctx.bind(fin, u, [null, stats, null, null, labels, rows, cls, coef]));
        pass.dispatchWorkgroups(Math.ceil(count / 64));
        pass.end();
        enc.copyBufferToBuffer(coef, 0, staging, 0, n * 24);
      });
    }
    const out = new Float32Array(await ctx.read(staging, 0, n * 24));
    const [loss, , , , , z] = columns(out, n, 6);
    const rowValues = rs === 2 ? [loss, z] : [loss];
    if (grad === null) return { rows: rowValues, grads: {} };
    for (let i = 0; i < n; i++) {
      for (let s = 0; s < nseg; s++) {
        const len = Math.min(seg, c - s * seg);
        const [a, a_off] = input(i, s, len);
        const [gb, g_off] = resident
          ? ctx.range(grad, i * c + s * seg, len)
          : [{ buffer: grad, offset: 0, size: len * 4 }, 0];
        const u = keep(
          ctx.params("cross_entropy", { ...all, n: 1, c: len, row0: i, a_off, g_off, col0: s * seg, seg: s }),
        );
        await ctx.submit((enc) => {
          const pass = enc.beginComputePass();
          pass.setPipeline(back);
          pass.setBindGroup(0, ctx.bind(back, u, [a, coef, gb, null, labels, rows, cls, null]));
          pass.dispatchWorkgroups(1);
          pass.end();
          if (host) enc.copyBufferToBuffer(grad, 0, staging, 0, len * 4);
        });
        if (host) host.set(new Float32Array(await ctx.read(staging, 0, len * 4)), i * c + s * seg);
      }
    }
    const g = host ?? (new DeviceValues(grad, [n, c]) as unknown as Float32Array);
    return { rows: rowValues, grads: { logits: g } };
  } finally {
    for (const b of temps) b.destroy();
  }
}

/** interTopK's scan by windows of classes, one `targets` dispatch each (src/webgpu/loops.ts). */
function topKPasses(classes: number, sub: number, k: number): Partial<Params<"cross_entropy">>[] {
  const size = topKWindow(sub, k);
  return Array.from({ length: Math.ceil(classes / size) }, (_, w) => ({ tq0: w * size, tql: size }));
}
