/**
 * WebGPU glue of the `paired` family (`clip`, `siglip`; src/webgpu/clip.wgsl): the N x N
 * similarities in strips of 256 rows (the WebAssembly kernel's block rows: 256 N floats, 32 MiB
 * at N = 32,768, the only scratch beyond O(N) statistics), one job per strip (clip: a pass of
 * statistics over every strip, then a pass of gradients), all in one submission with one
 * readback of the per-index loss terms and number-gradient terms (and of host gradients);
 * with `readback: false` those stay on the GPU and are summed there (src/kernels/deferred.ts).
 * GPU-resident inputs are bound in place and their gradients stay on the GPU.
 *
 * @module
 */
import { columns, type Raw } from "../kernels/core.ts";
import { lin, one, total } from "../kernels/deferred.ts";
import { PAIRED_BLOCK as BLOCK, type PairedProblem } from "../kernels/paired.ts";
import { onDevice } from "../validate.ts";
import { checkOut, F, type GpuContext } from "./context.ts";
import { type Dispatch, fits, gradOf, job, type PassJob, type Planner, solve } from "./passes.ts";
import type { KernelName } from "./context.ts";

/** `clip` or `siglip` on the GPU. */
export const paired = (ctx: GpuContext, p: PairedProblem): Raw | Promise<Raw> => solve(ctx, p, planPaired);

/** Plans `clip` / `siglip`: one job per strip (and pass). */
export const planPaired: Planner<PairedProblem> = (ctx, p, bufs) => {
  ctx.check();
  const { n, d } = p;
  fits(ctx, "a", n * d);
  const per = Math.min(n, BLOCK);
  fits(ctx, "a strip of 256 rows of the N x N similarities", per * n);
  const resident = onDevice(p.a) || onDevice(p.b);
  checkOut("a", p.outA as { buffer?: unknown } | null, resident);
  checkOut("b", p.outB as { buffer?: unknown } | null, resident);
  const A = bufs.input(p.a), B = bufs.input(p.b);
  const S = bufs.scratch(per * n * 4), stats = bufs.scratch(6 * n * 4), rowOut = bufs.scratch(3 * n * 4);
  const ga = p.grad ? bufs.output(resident, p.outA as { buffer?: GPUBuffer } | null, n * d * 4) : null;
  const gb = p.grad ? bufs.output(resident, p.outB as { buffer?: GPUBuffer } | null, n * d * 4) : null;
  const clip = p.kind === "clip";
  const tiles = (x: number) => Math.ceil(x / 64);
  const jobs: PassJob<KernelName>[] = [];
  const pass = (entries: (rows: number, last: boolean) => Dispatch[]) => {
    for (let i0 = 0; i0 < n; i0 += per) {
      const rows = Math.min(per, n - i0);
      jobs.push(job({
        kernel: "clip",
        params: {
          n,
          d,
          i0,
          rows,
          flags: p.grad ? F.GRAD : 0,
          first: i0 === 0 ? 1 : 0,
          scale: p.scale,
          bias: p.bias,
          c: p.upstream / (clip ? 2 * n : n),
        },
        layout: "rrwwwww",
        bindings: [A, B, S, stats, rowOut, ga, gb],
        dispatches: [["sims", tiles(rows), tiles(n)], ...entries(rows, i0 + rows === n)],
        reads: [],
      }));
    }
  };
  const grads = (rows: number): Dispatch[] =>
    p.grad ? [["grad_a", tiles(rows), tiles(d)], ["grad_b", tiles(n), tiles(d)]] : [];
  if (clip) {
    pass((rows, last) =>
      [["clip_rows", rows], ["clip_cols", tiles(n)], ...(last ? [["clip_finish", tiles(n)]] : [])] as Dispatch[]
    );
    if (p.grad) pass((rows) => [["clip_grad", rows], ...grads(rows)]);
  } else pass((rows) => [["siglip_rows", rows], ...grads(rows)]);
  const host = p.grad && !resident ? n * d * 4 : 0;
  jobs[jobs.length - 1].reads = [[rowOut, 3 * n * 4], [ga ?? rowOut, host], [gb ?? rowOut, host]];
  return {
    jobs,
    values: {},
    finish: (reads) => {
      const [ro, hostA, hostB] = reads[reads.length - 1];
      // Per index: its loss terms, sum G S (scale's gradient) and sum G (siglip's bias's).
      const [terms, ds, db] = columns(ro, n, 3);
      const raw: Raw = { rows: [one(lin(0, [total(terms), 1 / (clip ? 2 * n : n)]))], grads: {} };
      if (p.grad) {
        raw.grads = {
          a: gradOf(resident, ga!, [n, d], hostA, p.outA),
          b: gradOf(resident, gb!, [n, d], hostB, p.outB),
        };
        raw.numbers = clip ? { scale: total(ds) } : { scale: total(ds), bias: total(db) };
      }
      return raw;
    },
  };
};
