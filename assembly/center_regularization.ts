// Kernel of `centerRegularization`: with c^ = normalize(centers) row-wise and A the
// row-normalised rule (zero diagonal),
//   L_center = mean_i (1 - f_i . c^_{y_i}),   L_proto = mean_c (1 - c^_c . (A c^)_c).
// Since sum_c c^_c . (A c^)_c = sum_c c^_c . (M c^)_c with M = (A + A^T) / 2, one product
// V = M c^ (the heads' GEMM, run by the host: src/wasm/center_regularization.ts) serves
// the value and the gradient
//   d/df_i  = -u/B c^_{y_i}
//   d/dc^_c = -u/B sum_{i: y_i = c} f_i - (2 u w / C) V_c      (w = prototypeWeight)
// which goes through the normalisation by metric_backward (a projection in float64), the sums
// in float64. Where V_c is nearly parallel to c^_c (centres about one direction: V_c is then
// about (sum_j M_cj) c^_c, and the projection keeps 1/100 to 1/1000 of it) its part is formed
// relative to c^_c, sum_j M_cj (c^_j - c^_c), by metric_relative (assembly/metric.ts).
import { rowDot, normalize_rows } from "./vectors";
import { NEAR, metric_backward, metric_relative } from "./metric";

/** ch [c, d] = normalize(centers), inv64 [c] float64 the factors 1 / max(||c_j||, 1e-12). */
export function center_reg_prep(centers: usize, c: i32, d: i32, ch: usize, inv64: usize): void {
  normalize_rows(centers, c, d, ch, 0, inv64);
}

/**
 * f [b, d], centers [c, d], ch [c, d] (normalised), v [c, d] = M ch with M [c, c] (float32),
 * labels [b]; rows [2] float64 out (L_center, L_proto); gf [b, d] and gc [c, d] gradient outs
 * (gf = 0: no gradient); inv64 [c] from center_reg_prep. Scratch acc [c, d], w [c] float64,
 * near [c] int32.
 */
export function center_reg(
  f: usize, b: i32, d: i32, centers: usize, ch: usize, v: usize, c: i32, labels: usize, upstream: f64,
  weight: f64, rows: usize, gf: usize, gc: usize, inv64: usize, M: usize, acc: usize, w: usize, near: usize,
): void {
  const rowBytes = (<usize>d) << 2;
  let center: f64 = 0, proto: f64 = 0;
  for (let i = 0; i < b; i++) {
    const y = load<i32>(labels + ((<usize>i) << 2));
    center += 1 - rowDot(f + <usize>i * rowBytes, ch + <usize>y * rowBytes, d);
  }
  for (let j = 0; j < c; j++) proto += 1 - rowDot(ch + <usize>j * rowBytes, v + <usize>j * rowBytes, d);
  store<f64>(rows, center / <f64>b);
  store<f64>(rows + 8, proto / <f64>c);
  if (!gf) return;
  const a = -upstream / <f64>b;
  // acc = -(2 u w / C) V - u/B sum_{i: y_i = c} f_i (V's part of the flagged centres left to
  // metric_relative), then through the normalisation.
  const k = -2 * upstream * weight / <f64>c;
  for (let j = 0; j < c; j++) {
    const vj = v + <usize>j * rowBytes, cj = centers + <usize>j * rowBytes, out = acc + ((<usize>j * <usize>d) << 3);
    // |V_j - (h_j . V_j) h_j|^2 < NEAR |V_j|^2 for h_j = c^_j in float64.
    const vv = rowDot(vj, vj, d), dot = rowDot(vj, cj, d) * load<f64>(inv64 + ((<usize>j) << 3));
    const flag = vv > 0 && vv - dot * dot < NEAR * vv;
    store<i32>(near + ((<usize>j) << 2), flag ? 1 : 0);
    for (let q = 0; q < d; q++) store<f64>(out + ((<usize>q) << 3), flag ? 0 : k * <f64>load<f32>(vj + ((<usize>q) << 2)));
  }
  for (let i = 0; i < b; i++) {
    const y = load<i32>(labels + ((<usize>i) << 2));
    const fi = f + <usize>i * rowBytes, cy = ch + <usize>y * rowBytes, gi = gf + <usize>i * rowBytes;
    const gy = acc + ((<usize>y * <usize>d) << 3);
    for (let q = 0; q < d; q++) {
      store<f32>(gi + ((<usize>q) << 2), <f32>(a * <f64>load<f32>(cy + ((<usize>q) << 2))));
      const o = gy + ((<usize>q) << 3);
      store<f64>(o, load<f64>(o) + a * <f64>load<f32>(fi + ((<usize>q) << 2)));
    }
  }
  metric_relative(M, c, 1, 0, c, c, centers, inv64, centers, inv64, d, near, 0, acc, 1, w, k);
  metric_backward(0, acc, centers, inv64, c, d, gc);
}
