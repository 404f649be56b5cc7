/**
 * Kernel of the `combine` family on the host (the reference and WebAssembly backends, and
 * WebGPU for host arrays): in-place sums and the gated ensemble's vector-Jacobian
 * product (`src/losses/combine.ts`), with float64 dots.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { CombineProblem } from "../kernels/combine.ts";

/** `into += from` for each pair; `into[e] += gating[:, e] dFine`, `grads.gating[i, e] = <z_e[i], dFine[i]>`. */
export function combine(p: CombineProblem): Raw {
  for (const [into, from] of p.sums) for (let i = 0; i < into.length; i++) into[i] += from[i];
  const q = p.gated;
  if (!q) return { rows: [], grads: {} };
  const { b, c, e } = q;
  const gating = q.out?.data ?? new Float32Array(b * e);
  for (let k = 0; k < e; k++) {
    const z = q.logits[k], into = q.into[k];
    for (let i = 0; i < b; i++) {
      const w = q.gating[i * e + k];
      let dot = 0;
      for (let j = 0; j < c; j++) {
        const t = q.dFine[i * c + j];
        dot += z[i * c + j] * t;
        into[i * c + j] += w * t;
      }
      gating[i * e + k] = dot;
    }
  }
  return { rows: [], grads: { gating } };
}
