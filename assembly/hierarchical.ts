// Kernel of `hierarchical`: per row i with fine label y and coarse label g = fineToCoarse[y],
//   coarse_i = CE(coarse_i, g)                      (the fused cross-entropy kernel)
//   fine_i   = CE over only the children of g       (a log-softmax over that subset)
// The children of g (ascending, from the host) are gathered into a short row, the fused
// cross-entropy kernel runs on it (label kept out of its float32 sums, as everywhere),
// and its gradient is scattered back: the other fine classes are never read by the
// softmax, and their gradient is exactly 0.
import { hard_label } from "./cross_entropy";

/**
 * coarse [b, k], fine [b, c]; gcoarse [b, k], gfine [b, c] gradient outs (written when
 * scales is not 0); labels, coarseLabels [b] int32; children [c] int32 and start [k + 1]
 * int32: the children of coarse class g are children[start[g] .. start[g + 1]);
 * scales [b] float64 or 0; coarseRows, fineRows [b] float64 out; scratch: sub [c]
 * float32, at [1] int32.
 */
export function hierarchical(
  coarse: usize, gcoarse: usize, b: i32, k: i32, fine: usize, gfine: usize, c: i32, labels: usize,
  coarseLabels: usize, children: usize, start: usize, scales: usize, coarseRows: usize, fineRows: usize,
  sub: usize, at: usize,
): void {
  hard_label(coarse, gcoarse, b, k, coarseLabels, 0, 0, 0, scales, coarseRows, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0);
  for (let i = 0; i < b; i++) {
    const y = load<i32>(labels + ((<usize>i) << 2));
    const g = load<i32>(coarseLabels + ((<usize>i) << 2));
    const from = load<i32>(start + ((<usize>g) << 2)), n = load<i32>(start + ((<usize>g + 1) << 2)) - from;
    const row = fine + ((<usize>i * <usize>c) << 2), kids = children + ((<usize>from) << 2);
    for (let t = 0; t < n; t++) {
      const j = load<i32>(kids + ((<usize>t) << 2));
      store<f32>(sub + ((<usize>t) << 2), load<f32>(row + ((<usize>j) << 2)));
      if (j == y) store<i32>(at, t);
    }
    const s = scales ? scales + ((<usize>i) << 3) : 0;
    // The gradient overwrites the gathered row (hard_label allows g = z).
    hard_label(sub, sub, 1, n, at, 0, 0, 0, s, fineRows + ((<usize>i) << 3), 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0);
    if (!scales) continue;
    const out = gfine + ((<usize>i * <usize>c) << 2);
    memory.fill(out, 0, (<usize>c) << 2);
    for (let t = 0; t < n; t++) {
      store<f32>(out + ((<usize>load<i32>(kids + ((<usize>t) << 2))) << 2), load<f32>(sub + ((<usize>t) << 2)));
    }
  }
}
