/**
 * WebAssembly glue of the `softmax` and `logSoftmax` transforms.
 *
 * @module
 */
import type { SoftmaxProblem } from "../kernels/softmax.ts";
import { Layout, runtime } from "./runtime.ts";
import { streamRows } from "./stream.ts";

/** The transform's output, or its vector-Jacobian product with `p.up`. */
export function softmaxTransform(p: SoftmaxProblem): Float32Array {
  const rt = runtime();
  const { n, c } = p;
  const log = p.log ? 1 : 0;
  const inputs = p.up ? [p.x, p.up] : [p.x];
  // The output may overwrite x's copied chunk (each row reads x before writing), never up.
  const [out] = streamRows(rt, new Layout(), n, c, inputs, [p.out], true, () => {}, ({ rows, ins, outs, k }) => {
    if (p.up) k.softmax_vjp(ins[0], ins[1], outs[0], rows, c, log);
    else k.softmax_rows(ins[0], outs[0], rows, c, log);
  });
  return out;
}
