// `marginHead`'s sub-centres (`subcenters` K > 1; src/webgpu/margin_head_sub.wgsl): the gather of
// the label's row of W (src/webgpu/margin_head_rows.wgsl's `gather` for K = 1), one
// workgroup per row, for the rows whose label's K rows lie in the window [g_off, g_off + k) of W bound:
//   pick: the sub-centre of the label's class whose cosine x_i . W_r / (max(||x_i||, 1e-12)
//         max(||W_r||, 1e-12)), clamped to [-1, 1], is the largest (ties to the smaller row; in
//         float pairs, as the host's float64 `labelStats` in src/losses/margin_head.ts): its row
//         into wy [N, D] (the label's target is taken from it by `label`) and its index in W
//         into row_v[N MH_RS + MH_SUB_AT + i] (bitcast u32), where grad_sub puts the label's du.
// bcls [window, 4]: ||W_r|| as a pair at 2, 3 (from `cls`, dispatched before).

// #include "margin_head_params.wgsl"
// #include "wg_sum2.wgsl"

@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> ws: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<i32>;
@group(0) @binding(4) var<storage, read> bcls: array<f32>;
@group(0) @binding(5) var<storage, read_write> wy: array<f32>;
@group(0) @binding(6) var<storage, read_write> row_v: array<f32>;

// A workgroup per row (grid: rows, offset by a_off): each dot product's columns spread over the
// workgroup and summed in pairs (wg_sum2), so no invocation loops over K D (src/webgpu/loops.ts).
@compute @workgroup_size(256)
fn pick(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let i = wid.x + P.a_off;
  if (i >= P.n) { return; }
  let y = uniform_i32(labels[i], t);
  if (y < 0 || u32(y) >= P.c / P.subs) { return; } // (ignored, or on another shard)
  let r0 = u32(y) * P.subs;
  if (r0 < P.g_off || r0 >= P.g_off + P.k) { return; }
  let d = P.d;
  var xx = vec2<f32>(0.0);
  for (var k = t; k < d; k += WG) { xx = dot_acc(xx, xs[i * d + k], xs[i * d + k]); }
  let sx = wg_sum2(xx, t);
  let nx = df_max(df_sqrt(two_sum(sx.x, sx.y)), df(1e-12));
  var best = 0u;
  var top = df(0.0);
  var nan = false;
  for (var q = 0u; q < P.subs; q++) {
    let r = r0 + q - P.g_off;
    var xw = vec2<f32>(0.0);
    for (var k = t; k < d; k += WG) { xw = dot_acc(xw, xs[i * d + k], ws[r * d + k]); }
    let sw = wg_sum2(xw, t);
    let nw = df_max(vec2<f32>(bcls[4u * r + 2u], bcls[4u * r + 3u]), df(1e-12));
    var c = df_div(two_sum(sw.x, sw.y), df_mul(nx, nw));
    // the first NaN wins (src/kernels/hard_label.ts's `subcenter`; tested before the clamp, which a
    // compiler may make a min and max)
    let cn = is_nan(c.x);
    if (df_gt(c, df(1.0))) { c = df(1.0); }
    if (df_gt(df(-1.0), c)) { c = df(-1.0); }
    if (q == 0u || (!nan && (df_gt(c, top) || cn))) {
      top = c;
      nan = cn;
      best = q;
    }
  }
  let o = (r0 + best - P.g_off) * d;
  for (var k = t; k < d; k += WG) { wy[i * d + k] = ws[o + k]; }
  if (t == 0u) { row_v[P.n * MH_RS + MH_SUB_AT + i] = bitcast<f32>(r0 + best); }
}
