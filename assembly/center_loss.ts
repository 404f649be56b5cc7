// Kernel of `centerLoss` (Wen et al. 2016, "A Discriminative Feature Learning Approach
// for Deep Face Recognition"): per row i with label y,
//   loss_i = ||x_i - c_y||^2
//   dx_i   = 2 s_i (x_i - c_y)
//   dc_j   = -sum_{i: y_i = j} 2 s_i (x_i - c_j)
// with s_i = scales[i] (upstream and reduction folded in by the host). The distances
// and the centre sums are taken in float64 (the differences of float32 values are
// exact there): the rows are visited grouped by class (a counting sort of the labels),
// so each class's sum is accumulated in one float64 row and written once.
import { rowSqDist } from "./vectors";

/**
 * x [n, d], centers [c, d], labels [n]; scales [n] float64 or 0 (no gradient);
 * rowLoss [n] float64 out; gx [n, d], gc [c, d] gradient outs; scratch: order [n] int32,
 * count [c + 1] int32, acc [d] float64.
 */
export function center_loss(
  x: usize, centers: usize, labels: usize, n: i32, c: i32, d: i32, scales: usize, rowLoss: usize,
  gx: usize, gc: usize, order: usize, count: usize, acc: usize,
): void {
  const rowBytes = (<usize>d) << 2;
  for (let i = 0; i < n; i++) {
    const y = load<i32>(labels + ((<usize>i) << 2));
    const xi = x + <usize>i * rowBytes, cy = centers + <usize>y * rowBytes;
    store<f64>(rowLoss + ((<usize>i) << 3), rowSqDist(xi, cy, d));
    if (!scales) continue;
    const s = 2 * load<f64>(scales + ((<usize>i) << 3));
    const g = gx + <usize>i * rowBytes;
    for (let k = 0; k < d; k++) {
      const o = (<usize>k) << 2;
      store<f32>(g + o, <f32>(s * (<f64>load<f32>(xi + o) - <f64>load<f32>(cy + o))));
    }
  }
  if (!scales) return;
  // Counting sort: after it, rows of class j are order[count[j - 1] .. count[j]) (count[-1] = 0).
  memory.fill(count, 0, (<usize>c + 1) << 2);
  for (let i = 0; i < n; i++) {
    const p = count + ((<usize>load<i32>(labels + ((<usize>i) << 2)) + 1) << 2);
    store<i32>(p, load<i32>(p) + 1);
  }
  for (let j = 0; j < c; j++) {
    const p = count + ((<usize>j + 1) << 2);
    store<i32>(p, load<i32>(p) + load<i32>(p - 4));
  }
  for (let i = 0; i < n; i++) {
    const p = count + ((<usize>load<i32>(labels + ((<usize>i) << 2))) << 2);
    const at = load<i32>(p);
    store<i32>(order + ((<usize>at) << 2), i);
    store<i32>(p, at + 1);
  }
  for (let j = 0; j < c; j++) {
    const from = j > 0 ? load<i32>(count + ((<usize>j - 1) << 2)) : 0, to = load<i32>(count + ((<usize>j) << 2));
    const cj = centers + <usize>j * rowBytes, g = gc + <usize>j * rowBytes;
    if (from == to) {
      memory.fill(g, 0, rowBytes);
      continue;
    }
    memory.fill(acc, 0, (<usize>d) << 3);
    for (let t = from; t < to; t++) {
      const i = load<i32>(order + ((<usize>t) << 2));
      const s = 2 * load<f64>(scales + ((<usize>i) << 3));
      const xi = x + <usize>i * rowBytes;
      for (let k = 0; k < d; k++) {
        const a = acc + ((<usize>k) << 3);
        store<f64>(a, load<f64>(a) - s * (<f64>load<f32>(xi + ((<usize>k) << 2)) - <f64>load<f32>(cj + ((<usize>k) << 2))));
      }
    }
    for (let k = 0; k < d; k++) store<f32>(g + ((<usize>k) << 2), <f32>load<f64>(acc + ((<usize>k) << 3)));
  }
}
