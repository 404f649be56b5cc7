/**
 * WebAssembly glue of `softCrossEntropy` and `klDiv`: two `[N, C]` inputs, two gradients.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { PairProblem } from "../kernels/soft_target.ts";
import type { KlProblem } from "../kernels/soft_target.ts";
import { Layout, runtime } from "./runtime.ts";
import { type Chunk, streamRows } from "./stream.ts";

type PairKernel = (ch: Chunk, scales: number, rowLoss: number) => void;

/** Lays out a pair problem's per-row buffers and streams its rows through `kernel`. */
function pair(p: PairProblem, kernel: PairKernel): Raw {
  const rt = runtime();
  const { n, c } = p;
  const lay = new Layout();
  const scales = p.grad ? lay.add(n * 8) : -1;
  const rowLoss = lay.add(n * 8);
  let base = 0;
  const grads = streamRows(rt, lay, n, c, [p.a, p.b], p.grad ? [p.outA, p.outB] : [], false, (b) => {
    base = b;
    if (p.grad) rt.put(b + scales, p.scales);
  }, (ch) => kernel(ch, p.grad ? base + scales + ch.r0 * 8 : 0, base + rowLoss + ch.r0 * 8));
  return { rows: [rt.f64(base + rowLoss, n)], grads: p.grad ? { a: grads[0], b: grads[1] } : {} };
}

/** `softCrossEntropy` on the WebAssembly backend. */
export function softTarget(p: PairProblem): Raw {
  return pair(p, (ch, scales, rowLoss) => {
    ch.k.soft_target(ch.ins[0], ch.ins[1], ch.outs[0] ?? 0, ch.outs[1] ?? 0, ch.rows, p.c, scales, rowLoss);
  });
}

/** `klDiv` on the WebAssembly backend. */
export function klDiv(p: KlProblem): Raw {
  return pair(p, (ch, scales, rowLoss) => {
    ch.k.kl_div(
      ch.ins[0],
      ch.ins[1],
      ch.outs[0] ?? 0,
      ch.outs[1] ?? 0,
      ch.rows,
      p.c,
      p.logTarget ? 1 : 0,
      scales,
      rowLoss,
    );
  });
}
