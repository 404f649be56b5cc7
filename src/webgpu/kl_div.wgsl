// `klDiv` (torch.nn.functional.kl_div), x = logInput (a), t = target (b), one
// workgroup per row; the math is assembly/kl_div.ts's:
//   F_LOG off: loss_i = sum_c t_c (log t_c - x_c)  (0 where t_c = 0)
//              dx_c = -s_i t_c,  dt_c = s_i (log t_c + 1 - x_c)  (0 where t_c = 0)
//   F_LOG on:  loss_i = sum_c e^t_c (t_c - x_c)
//              dx_c = -s_i e^t_c,  dt_c = s_i e^t_c (t_c - x_c + 1)
// row_in: [N, rs_in] = (gradient scale s_i). row_out: [N, rs_out] = (row loss).

struct KlDivParams {
  // #include "row_params.wgsl"
}
@group(0) @binding(0) var<uniform> P: KlDivParams;

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> h: array<f32>;
@group(0) @binding(6) var<storage, read> row_in: array<f32>;
@group(0) @binding(8) var<storage, read_write> row_out: array<f32>;

// log t for t > 0; NaN below 0 (as log); t = 0 is masked by the caller.
fn log_target(t: f32) -> f32 {
  if (t > 0.0) { return log_(t); }
  if (t == 0.0) { return 0.0; }
  return bitcast<f32>(0x7fc00000u | (P.flags & 0u)); // a runtime NaN (a constant one is an error)
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let r = wid.x;
  let i = P.row0 + r;
  let c = P.c;
  let xa = P.a_off + r * c;
  let tb = P.b_off + r * c;
  let xg = P.g_off + r * c;
  let xh = P.h_off + r * c;
  let grad = (P.flags & F_GRAD) != 0u;
  let logTarget = (P.flags & F_LOG) != 0u;
  var s = 0.0;
  if (grad) { s = row_in[i * P.rs_in]; }
  var acc = 0.0;
  for (var j = t; j < c; j += WG) {
    let x = a[xa + j];
    let tj = b[tb + j];
    var p: f32;
    var lp: f32;
    var f: f32;
    var live: bool;
    if (logTarget) {
      p = exp(clamp(tj, -87.0, 88.0));
      lp = tj;
      f = p;
      live = true;
    } else {
      p = tj;
      lp = log_target(tj);
      f = 1.0;
      live = tj != 0.0;
    }
    let d = lp - x;
    if (live) { acc += p * d; }
    if (grad) {
      h[xh + j] = select(0.0, s * (f * (d + 1.0)), live);
      g[xg + j] = -(s * p);
    }
  }
  let total = wg_sum(acc, t);
  if (t == 0u) { row_out[i * P.rs_out] = total; }
}
