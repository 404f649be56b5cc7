// The thread pool's check, run from the built package by a page (tests/runtimes/browser/page.js)
// and by Node and Bun (tests/runtimes/main.ts): init({ threads: 2 }) and its note, then
// crossEntropy (601 x 700 in WebAssembly memory, rows split) and marginHead (64 x 64 x 3100,
// classes split) on 2 threads against 1: the row loss must give the same bits, the head agree
// within 1e-5.

/** Runs the check with the package's `init` and `alloc`; resolves to what it found. */
export async function threadsCheck(init, alloc) {
  let seed = 1;
  const random = (len) =>
    Float32Array.from({ length: len }, () => ((seed = (seed * 48271) % 2147483647) / 2147483647) * 4 - 2);
  const labelsOf = (n, c) => Int32Array.from({ length: n }, (_, i) => (i * 7919) % c);
  const n = 601, c = 700, hn = 64, hd = 64, hc = 3100;
  const logits = alloc([n, c]), grad = alloc([n, c]), labels = labelsOf(n, c);
  logits.data.set(random(n * c));
  const x = { data: random(hn * hd), shape: [hn, hd] }, W = { data: random(hc * hd), shape: [hc, hd] };
  const hl = labelsOf(hn, hc);
  const run = async (l) => ({
    ce: { ...(await l.crossEntropy.valueAndGrad({ logits, labels }, { out: { logits: grad } })), g: grad.data.slice() },
    head: await l.marginHead.valueAndGrad({ x, W, labels: hl }),
  });
  const a = await run(await init({ backend: "wasm", threads: 1 }));
  const many = await init({ backend: "wasm", threads: 2 });
  const b = await run(many);
  const rel = (u, v) =>
    u.reduce((m, e, i) => Math.max(m, Math.abs(e - v[i])), 0) / v.reduce((m, e) => Math.max(m, Math.abs(e)), 0);
  return {
    threads: many.threads,
    note: many.note,
    sameBits: a.ce.loss === b.ce.loss &&
      a.ce.g.every((v, i) => Object.is(v, b.ce.g[i])),
    headLoss: Math.abs(a.head.loss - b.head.loss) / Math.abs(a.head.loss),
    headGrad: Math.max(rel(b.head.grads.x.data, a.head.grads.x.data), rel(b.head.grads.W.data, a.head.grads.W.data)),
  };
}
