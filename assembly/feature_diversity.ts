// Kernel of `featureDiversity`: per sample i, the sum over ordered pairs of experts
// e != e' of ||f_e[i] - f_e'[i]|| (each unordered pair counted twice), and the gradient
//   d/df_e[i] = 2 s sum_{e' != e} (f_e[i] - f_e'[i]) / ||f_e[i] - f_e'[i]||
// with s the value's factor times the upstream (host). A distance of exactly 0 has an
// unbounded derivative; its pair contributes 0 (SPEC). Distances in float64.
import { rowAddDiff, rowSqDist } from "./vectors";

/**
 * ftab [e] int32: the address of each expert's features [b, d]; gtab [e] int32: the
 * address of each gradient [b, d], or 0 for no gradient; rows [b] float64 out.
 */
export function diversity(ftab: usize, gtab: usize, e: i32, b: i32, d: i32, scale: f64, rows: usize): void {
  const rowBytes = (<usize>d) << 2;
  for (let i = 0; i < b; i++) {
    const off = <usize>i * rowBytes;
    if (gtab) for (let k = 0; k < e; k++) memory.fill(<usize>load<i32>(gtab + ((<usize>k) << 2)) + off, 0, rowBytes);
    let total: f64 = 0;
    for (let s = 0; s < e; s++) {
      const fs = <usize>load<i32>(ftab + ((<usize>s) << 2)) + off;
      for (let t = s + 1; t < e; t++) {
        const ft = <usize>load<i32>(ftab + ((<usize>t) << 2)) + off;
        const dist = Math.sqrt(rowSqDist(fs, ft, d));
        total += 2 * dist;
        if (!gtab || dist == 0) continue;
        const u = <f32>(2 * scale / dist);
        rowAddDiff(<usize>load<i32>(gtab + ((<usize>s) << 2)) + off, fs, ft, d, u);
        rowAddDiff(<usize>load<i32>(gtab + ((<usize>t) << 2)) + off, fs, ft, d, -u);
      }
    }
    store<f64>(rows + ((<usize>i) << 3), total);
  }
}
