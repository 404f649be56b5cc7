// Kernel of `accuracy`: a row is a hit when fewer than k logits are strictly
// greater than the label's logit (ties count in the label's favour).

/** Number of hits among the rows of z [rows, c] whose label (labels [rows], -1 = ignored) is set. */
export function topk_hits(z: usize, rows: i32, c: i32, labels: usize, k: i32): i32 {
  let hits = 0;
  for (let i = 0; i < rows; i++) {
    const y = load<i32>(labels + (<usize>i << 2));
    if (y < 0) continue;
    const row = z + ((<usize>i * <usize>c) << 2);
    const zy = load<f32>(row + (<usize>y << 2));
    const vy = f32x4.splat(zy);
    // Lanes of f32x4.gt are 0 or -1: subtracting them counts.
    let count = i32x4.splat(0);
    let j = 0;
    for (; j + 4 <= c; j += 4) count = i32x4.sub(count, f32x4.gt(v128.load(row + (<usize>j << 2)), vy));
    let n = i32x4.extract_lane(count, 0) + i32x4.extract_lane(count, 1) + i32x4.extract_lane(count, 2) + i32x4.extract_lane(count, 3);
    for (; j < c; j++) if (load<f32>(row + (<usize>j << 2)) > zy) n++;
    if (n < k) hits++;
  }
  return hits;
}
