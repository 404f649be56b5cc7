// Kernel of `hnmContrastive`: each embedding against its class prototype and the
// prototypes of its k mined hard negatives. With f^ and p^ normalised (F.normalize),
// l_0 = f^_i . p^_{y_i} / t, l_j = f^_i . p^_{hard_ij} / t (j = 1..k), m = max_j l_j:
//   loss_i = (m - l_0) + log(e^(l_0 - m) + (1/k) sum_{j >= 1} e^(l_j - m))
//   dl_0   = s_i (p_0 - 1) = -s_i (the negatives' share),  dl_j = s_i p_j / k
// (p the weights e^(l - lse)). The cosines come from the heads' GEMM, f^ P^T over the
// distinct classes the batch uses (`hnm_prep` lists them). With a small temperature
// (1/t > 64) a float32 cosine's rounding, times 1/t, would move the logits by more than
// SPEC allows near ties: the logits are then float64 dot products ("precise").
// The gradient touches k + 1 prototypes per row: it is formed directly in float64,
//   d/df_i = (v - f^ (f^ . v)) / ||f_i||,  v = sum_j (dl_j / t) p^_j,
// since the projection cancels most of v where f_i is close to its class's prototype
// (the loss is then near 0), which float32 rounding of v would not survive.
import { rowDot } from "./vectors";

/**
 * Lists the distinct classes of labels [b] and hard [b, k] in `list` (first-seen order;
 * map [c] int32 scratch) and writes idx [b, k + 1]: each row's label and hard negatives
 * as positions in the list; writes finv64 [b], pinv64 [u] (float64 1 / max(||v||, 1e-12)
 * of the rows of f and of the listed prototypes) and, with fh (not 0), f^ [b, d] and
 * p^'s transpose pt [d, u] in float32 for the GEMM. Returns u, the number of classes.
 */
export function hnm_prep(
  f: usize, b: i32, d: i32, prototypes: usize, c: i32, labels: usize, hard: usize, k: i32, map: usize,
  list: usize, idx: usize, finv64: usize, pinv64: usize, fh: usize, pt: usize,
): i32 {
  memory.fill(map, 0xff, (<usize>c) << 2);
  let u = 0;
  for (let i = 0; i < b; i++) {
    for (let j = 0; j <= k; j++) {
      const cls = j == 0 ? load<i32>(labels + ((<usize>i) << 2)) : load<i32>(hard + ((<usize>(i * k + j - 1)) << 2));
      const mp = map + ((<usize>cls) << 2);
      let at = load<i32>(mp);
      if (at < 0) {
        at = u++;
        store<i32>(mp, at);
        store<i32>(list + ((<usize>at) << 2), cls);
      }
      store<i32>(idx + ((<usize>(i * (k + 1) + j)) << 2), at);
    }
  }
  const rowBytes = (<usize>d) << 2;
  for (let i = 0; i < b; i++) {
    const src = f + <usize>i * rowBytes;
    const inv = 1 / max(Math.sqrt(rowDot(src, src, d)), 1e-12);
    store<f64>(finv64 + ((<usize>i) << 3), inv);
    if (fh) for (let q = 0; q < d; q++) store<f32>(fh + <usize>i * rowBytes + ((<usize>q) << 2), <f32>(<f64>load<f32>(src + ((<usize>q) << 2)) * inv));
  }
  for (let t = 0; t < u; t++) {
    const src = prototypes + <usize>load<i32>(list + ((<usize>t) << 2)) * rowBytes;
    const inv = 1 / max(Math.sqrt(rowDot(src, src, d)), 1e-12);
    store<f64>(pinv64 + ((<usize>t) << 3), inv);
    if (fh) for (let q = 0; q < d; q++) store<f32>(pt + ((<usize>(q * u + t)) << 2), <f32>(<f64>load<f32>(src + ((<usize>q) << 2)) * inv));
  }
  return u;
}

/**
 * Row losses and, with scales (not 0), the coefficients coef [b, k + 1] float64 (dl_j / t
 * at each row's slots). cos [b, u]: the GEMM's f^ . p^, or 0 for precise logits from f,
 * prototypes, list, finv64 and pinv64 (see hnm_prep); invT = 1/t; scales [b] float64;
 * rowLoss [b] float64 out; scratch l [k + 1] float64.
 */
export function hnm_rows(
  cos: usize, u: i32, b: i32, k: i32, idx: usize, invT: f64, f: usize, d: i32, prototypes: usize, list: usize,
  finv64: usize, pinv64: usize, scales: usize, rowLoss: usize, coef: usize, l: usize,
): void {
  const rowBytes = (<usize>d) << 2;
  for (let i = 0; i < b; i++) {
    const ix = idx + ((<usize>(i * (k + 1))) << 2);
    let m: f64 = -Infinity;
    for (let j = 0; j <= k; j++) {
      const at = load<i32>(ix + ((<usize>j) << 2));
      let cs: f64;
      if (cos) cs = <f64>load<f32>(cos + ((<usize>(i * u + at)) << 2));
      else {
        const p = prototypes + <usize>load<i32>(list + ((<usize>at) << 2)) * rowBytes;
        cs = rowDot(f + <usize>i * rowBytes, p, d) * load<f64>(finv64 + ((<usize>i) << 3)) * load<f64>(pinv64 + ((<usize>at) << 3));
      }
      const lj = cs * invT;
      store<f64>(l + ((<usize>j) << 3), lj);
      m = max(m, lj);
    }
    const l0 = load<f64>(l);
    let s: f64 = 0;
    for (let j = 1; j <= k; j++) s += Math.exp(load<f64>(l + ((<usize>j) << 3)) - m);
    const neg = s / <f64>k, den = Math.exp(l0 - m) + neg;
    // with l_0 the maximum, e^(l_0 - m) = 1 and the log is log1p of the negatives' share
    store<f64>(rowLoss + ((<usize>i) << 3), (m - l0) + (l0 == m ? Math.log1p(neg) : Math.log(den)));
    if (!scales) continue;
    const si = load<f64>(scales + ((<usize>i) << 3)) * invT;
    const row = coef + ((<usize>(i * (k + 1))) << 3);
    store<f64>(row, -si * neg / den);
    for (let j = 1; j <= k; j++) {
      store<f64>(row + ((<usize>j) << 3), si * Math.exp(load<f64>(l + ((<usize>j) << 3)) - m) / den / <f64>k);
    }
  }
}

/**
 * The gradient w.r.t. f [b, d] into g [b, d] from coef (hnm_rows), in float64 until it is
 * final: v = sum_j coef_ij p_j / max(||p_j||, 1e-12), then through the normalisation of f_i
 * (below a norm of 1e-12, v * 1e12: the clamp passes no gradient to the norm, as PyTorch).
 * Scratch v [d] float64.
 */
export function hnm_grad(
  f: usize, b: i32, d: i32, prototypes: usize, list: usize, idx: usize, k: i32, finv64: usize, pinv64: usize,
  coef: usize, g: usize, v: usize,
): void {
  const rowBytes = (<usize>d) << 2;
  for (let i = 0; i < b; i++) {
    memory.fill(v, 0, (<usize>d) << 3);
    for (let j = 0; j <= k; j++) {
      const at = load<i32>(idx + ((<usize>(i * (k + 1) + j)) << 2));
      const p = prototypes + <usize>load<i32>(list + ((<usize>at) << 2)) * rowBytes;
      const a = load<f64>(coef + ((<usize>(i * (k + 1) + j)) << 3)) * load<f64>(pinv64 + ((<usize>at) << 3));
      for (let q = 0; q < d; q++) {
        const o = v + ((<usize>q) << 3);
        store<f64>(o, load<f64>(o) + a * <f64>load<f32>(p + ((<usize>q) << 2)));
      }
    }
    const fi = f + <usize>i * rowBytes, inv = load<f64>(finv64 + ((<usize>i) << 3));
    // f^ . v, with f^ = f inv; no projection where the norm was clamped
    let dot: f64 = 0;
    if (inv < 1e12) for (let q = 0; q < d; q++) dot += <f64>load<f32>(fi + ((<usize>q) << 2)) * inv * load<f64>(v + ((<usize>q) << 3));
    const gi = g + <usize>i * rowBytes;
    for (let q = 0; q < d; q++) {
      const fh = <f64>load<f32>(fi + ((<usize>q) << 2)) * inv;
      store<f32>(gi + ((<usize>q) << 2), <f32>((load<f64>(v + ((<usize>q) << 3)) - fh * dot) * inv));
    }
  }
}
