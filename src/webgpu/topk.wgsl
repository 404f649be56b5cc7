// interTopK's per-row list of the k largest (value, class) pairs, shared by src/webgpu/cross_entropy.wgsl's
// `targets` and src/webgpu/margin_head_topk.wgsl's `topk_scan` (each includes this file after defining
// `tk_get(q) -> f32` and `tk_put(q, v)` on its own storage list). The list is a binary min-heap of `size`
// entries, values at vo + p and classes (as float32s: exact below 2^24) at co + p, under the order "worse":
// smaller value, or equal value and larger class. Its root (vo, co) is the k-th largest once full: a
// class offered in increasing order enters only above it (after its equals: ties to the smaller class),
// as src/kernels/head.ts's RowTopK keeps its sorted list; so the root is RowTopK's k-th, bit for bit.
// An offer costs at most log2(k) + 2 loop iterations (a sorted list's shift costs up to k: llvmpipe's
// loop limiter, docs/DEVELOPMENT.md).

fn tk_worse(av: f32, ac: f32, bv: f32, bc: f32) -> bool { return av < bv || (av == bv && ac > bc); }

// The value a new class must beat: the root while the list is full (size == kk), else -FLT_MAX.
fn tk_kth(vo: u32, size: u32, kk: u32) -> f32 { return select(NEG, tk_get(vo), size == kk); }

// Offers class j's value v (> tk_kth, not NaN) to the list of `size` < kk or full (== kk) entries; returns its size.
fn tk_offer(vo: u32, co: u32, size: u32, kk: u32, v: f32, j: f32) -> u32 {
  var p = 0u;
  if (size < kk) {
    // a new leaf, moved up past its worse parents
    p = size;
    loop {
      if (p == 0u) { break; }
      let up = (p - 1u) / 2u;
      if (!tk_worse(v, j, tk_get(vo + up), tk_get(co + up))) { break; }
      tk_put(vo + p, tk_get(vo + up));
      tk_put(co + p, tk_get(co + up));
      p = up;
    }
  } else {
    // the root (the k-th) replaced, moved down past its worse children
    loop {
      let l = 2u * p + 1u;
      if (l >= kk) { break; }
      var m = l;
      if (l + 1u < kk && tk_worse(tk_get(vo + l + 1u), tk_get(co + l + 1u), tk_get(vo + l), tk_get(co + l))) {
        m = l + 1u;
      }
      if (!tk_worse(tk_get(vo + m), tk_get(co + m), v, j)) { break; }
      tk_put(vo + p, tk_get(vo + m));
      tk_put(co + p, tk_get(co + m));
      p = m;
    }
  }
  tk_put(vo + p, v);
  tk_put(co + p, j);
  return min(size + 1u, kk);
}
