/**
 * WebGPU glue of `centerRegularization`: src/webgpu/center_regularization.wgsl, one pass (the
 * normalised centres, the rows, then each class's prototype term and the centres'
 * gradient by windows of terms, and their sums), one submission and one readback.
 *
 * @module
 */
import { columns, type Raw } from "../kernels/core.ts";
import { lin, one, total } from "../kernels/deferred.ts";
import type { CenterRegProblem } from "../kernels/center_reg.ts";
import { onDevice } from "../validate.ts";
import { checkOut, F, type GpuContext } from "./context.ts";
import { byClass, fits, gradOf, job, type Planner, solve } from "./passes.ts";
import { checkLoops, LOOP_BUDGET } from "./loops.ts";

/** M = A + A^T ([c, c], float32), the rule's matrix of the centres' gradient and value. */
const symmetric = (A: Float64Array, c: number): Float32Array => {
  const m = new Float32Array(c * c);
  for (let j = 0; j < c; j++) for (let l = 0; l < c; l++) m[j * c + l] = A[j * c + l] + A[l * c + j];
  return m;
};

/** `centerRegularization` on the GPU. */
export const centerReg = (ctx: GpuContext, p: CenterRegProblem): Raw | Promise<Raw> => solve(ctx, p, planCenterReg);

/** Plans `centerRegularization` (one job). */
export const planCenterReg: Planner<CenterRegProblem> = (ctx, p, bufs, force) => {
  ctx.check();
  const { b, c, d } = p;
  // `parts` goes through a class's C rule terms and its rows in windows of LOOP_BUDGET terms, one
  // workgroup per class, block of 256 columns and window (src/webgpu/loops.ts); `classes` sums the
  // windows per column.
  const { ints, most } = byClass(p.labels, c);
  const nw = Math.ceil((c + most) / LOOP_BUDGET), nd = Math.ceil(d / 256);
  fits(ctx, "f", b * d);
  fits(ctx, "the normalised centers", 2 * c * d + c + (p.grad ? (nw - 1) * c * d : 0));
  fits(ctx, "rule", c * c);
  fits(ctx, "the values", b + c + nw * c * d);
  const groups = [["rows of f", b], ["classes", c], ["blocks of 256 columns of D times windows", nd * nw]] as const;
  for (const [what, count] of groups) {
    if (count > ctx.maxGroups) {
      throw new RangeError(`Expected at most ${ctx.maxGroups} ${what} on this WebGPU device, got ${count}`);
    }
  }
  // What one invocation still goes through: D (`classes`: each column once per window, and twice;
  // D above about 4 million).
  checkLoops(
    ctx,
    nd * (nw + 3) + 24,
    `ceil(D / 256) (D = ${d}) times 3 + the windows of C + the most rows of one class (${nw + 3})`,
  );
  const resident = force || onDevice(p.f) || onDevice(p.centers);
  checkOut("f", p.outF as { buffer?: unknown } | null, resident);
  checkOut("centers", p.outCenters as { buffer?: unknown } | null, resident);
  const vals = bufs.scratch((b + c + nw * c * d) * 4);
  const gf = p.grad ? bufs.output(resident, p.outF as { buffer?: GPUBuffer } | null, Math.max(4, b * d * 4)) : null;
  const gc = p.grad
    ? bufs.output(resident, p.outCenters as { buffer?: GPUBuffer } | null, Math.max(4, c * d * 4))
    : null;
  const host = p.grad && !resident;
  const pass = job({
    kernel: "center_regularization",
    params: {
      b,
      c,
      d,
      flags: p.grad ? F.GRAD : 0,
      u_b: p.upstream / b,
      uw_c: (p.upstream * p.prototypeWeight) / c,
      zero: 0,
      win: LOOP_BUDGET,
      nw,
    },
    layout: "rrrrwwww",
    bindings: [
      bufs.input(p.f),
      bufs.input(p.centers),
      bufs.input(ints),
      bufs.input(symmetric(p.A, c)),
      bufs.scratch((2 * c * d + c + (p.grad ? (nw - 1) * c * d : 0)) * 4),
      vals,
      gf,
      gc,
    ],
    dispatches: [["norms", c], ["rows", b], ["parts", c, nd * nw], ["classes", c]],
    reads: [[vals, (b + c) * 4], [gf ?? vals, host ? b * d * 4 : 0], [gc ?? vals, host ? c * d * 4 : 0]],
  });
  const grads = (hf?: Float32Array, hc?: Float32Array): Record<string, Float32Array> =>
    !gf || !gc
      ? {}
      : { f: gradOf(resident, gf, [b, d], hf, p.outF), centers: gradOf(resident, gc, [c, d], hc, p.outCenters) };
  return {
    jobs: [pass],
    values: resident ? grads() : {},
    finish: ([[v, hf, hc]]) => {
      // The means over the rows and over the classes, as one value each.
      const mean = (count: number, from: number) => one(lin(0, [total(columns(v, count, 1, from)[0]), 1 / count]));
      return { rows: [mean(b, 0), mean(c, b)], grads: grads(hf, hc) };
    },
  };
};
