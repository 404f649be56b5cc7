/**
 * WebAssembly glue of the `paired` family (`clip`, `siglip`; `assembly/clip.ts`): the
 * inputs in WebAssembly memory (in place when they are there already), one block of the
 * N x N similarities and the transpose of its rows of b as scratch, and O(N) statistics.
 * Peak extra memory beyond the inputs and the gradients: `(BK^2 + 4 + D BK + 2 BK) * 4`
 * bytes for the block (BK = 256: 768 KiB at D = 512) and `28 N` bytes of row and column
 * statistics (clip; 896 KiB at N = 32,768).
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import { PAIRED_BLOCK as BK, type PairedProblem } from "../kernels/paired.ts";
import { Frame, NONE } from "./frame.ts";

/** `clip` or `siglip` on the WebAssembly backend. */
export function paired(p: PairedProblem): Raw {
  const { n, d } = p;
  const f = new Frame();
  const A = f.input(p.a), B = f.input(p.b);
  const GA = p.grad ? f.output(p.outA?.data ?? null, n * d) : NONE;
  const GB = p.grad ? f.output(p.outB?.data ?? null, n * d) : NONE;
  // S: one block, and 4 floats that a row's last vector may read past its end.
  const S = f.scratch((BK * BK + 4) * 4), BT = f.scratch(d * BK * 4);
  const clip = p.kind === "clip";
  const rm = f.scratch(clip ? n * 4 : 0), cm = f.scratch(clip ? n * 4 : 0);
  const rs = f.scratch(clip ? n * 8 : 0), cs = f.scratch(clip ? n * 8 : 0);
  const sd = f.scratch(clip ? n * 4 : 0), cmb = f.scratch(clip ? BK * 4 : 0), csb = f.scratch(clip ? BK * 4 : 0);
  const nums = f.scratch(16);
  f.place();
  const k = f.rt.k, a = f.ptr(A), b = f.ptr(B);
  const raw: Raw = { rows: [new Float64Array(1)], grads: {} };
  if (clip) {
    raw.rows[0][0] = k.clip_stats(
      a,
      b,
      n,
      d,
      p.scale,
      f.ptr(S),
      f.ptr(BT),
      f.ptr(rm),
      f.ptr(rs),
      f.ptr(cm),
      f.ptr(cs),
      f.ptr(sd),
      f.ptr(cmb),
      f.ptr(csb),
    );
    if (!p.grad) return raw;
    const ds = k.clip_grad(
      a,
      b,
      n,
      d,
      p.scale,
      p.upstream,
      f.ptr(S),
      f.ptr(BT),
      f.ptr(rm),
      f.ptr(rs),
      f.ptr(cm),
      f.ptr(cs),
      f.ptr(sd),
      f.ptr(GA),
      f.ptr(GB),
    );
    raw.numbers = { scale: ds };
  } else {
    raw.rows[0][0] = k.siglip(
      a,
      b,
      n,
      d,
      p.scale,
      p.bias,
      p.upstream,
      f.ptr(S),
      f.ptr(BT),
      f.ptr(GA),
      f.ptr(GB),
      f.ptr(nums),
    );
    if (!p.grad) return raw;
    const [dt, db] = f.f64(nums, 2);
    raw.numbers = { scale: dt, bias: db };
  }
  raw.grads = { a: f.take(GA), b: f.take(GB) };
  return raw;
}
