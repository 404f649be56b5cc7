// A consumer of the WebGPU types: tests/runtimes/main.ts type-checks it with tsc against
// the installed tarball, once with @webgpu/types (Node) and once with the `dom` lib
// (a browser project). The GPU types it uses are the real ones, merged with the package's
// empty fallbacks: `size` and `destroy` exist only on the real GPUBuffer.
import { type GpuMatrix, init, isGpuMatrix } from "@softmargin/softmargin";

/** ArcFace on cosines already on the GPU; the gradient stays there. */
export async function arcfaceOnGpu(device: GPUDevice, buffer: GPUBuffer): Promise<number> {
  const losses = await init({ backend: "webgpu", device });
  const cos: GpuMatrix = { buffer, shape: [2, 3] };
  const { loss, grads } = await losses.arcface.valueAndGrad({ cos, labels: [0, 1] });
  const onDevice: boolean = isGpuMatrix(grads.cos);
  const bytes: number = grads.cos.buffer.size;
  grads.cos.buffer.destroy();
  losses.dispose();
  return onDevice ? loss + bytes : loss;
}
