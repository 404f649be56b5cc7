/**
 * PyTorch beside the benchmarks: a contender whose calls run in one persistent Python
 * process (`bench/torch_runner.py`, Debian's `python3-torch` at `/usr/bin/python3`, or
 * `$TORCH_PYTHON`), in float32 with `threads` intra-op threads, timed inside that process
 * (the pipe's latency is not in its figures) and interleaved with the other contenders'
 * rounds like any of them. Without PyTorch its cells say why (n/a) and the rest runs.
 * Its memory is not probed (it is another process). Install: `apt-get install -y
 * python3-torch libopenblas0-pthread` (without OpenBLAS Debian's PyTorch multiplies with the
 * reference BLAS); the header line says which BLAS library it loaded.
 *
 * @module
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cleanups, type Contender, envNotes, type Out, type Runner } from "./engine.ts";

/** An input as the runner loads it: its data and shape. */
export type TorchInput = { data: Float32Array | Int32Array; shape: readonly number[] };

type Reply = { error?: string; loss?: number; seconds?: number } & Record<string, unknown>;

let proc: { child: ChildProcessWithoutNullStreams; pending: ((r: Reply) => void)[]; dir: string } | null = null;
let failure: string | null = null;
const files = new WeakMap<object, string>();

function start(): typeof proc {
  if (proc || failure) return proc;
  const python = process.env.TORCH_PYTHON ?? "/usr/bin/python3";
  const child = spawn(python, [new URL("./torch_runner.py", import.meta.url).pathname], { stdio: "pipe" });
  const p = { child, pending: [] as ((r: Reply) => void)[], dir: mkdtempSync(join(tmpdir(), "softmargin-torch-")) };
  let buffer = "", stderr = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    buffer += chunk;
    for (let i; (i = buffer.indexOf("\n")) >= 0;) {
      const line = buffer.slice(0, i);
      buffer = buffer.slice(i + 1);
      p.pending.shift()?.(JSON.parse(line));
    }
  });
  child.stderr.on("data", (chunk) => (stderr = (stderr + chunk).slice(-2000)));
  const fail = (why: string) => {
    failure = `PyTorch unavailable: ${why}`;
    for (const r of p.pending.splice(0)) r({ error: failure });
  };
  child.on("error", (e) => fail(e.message));
  child.on("exit", (code) => fail(stderr.trim().split("\n").at(-1) || `${python} exited with status ${code}`));
  cleanups.push(() => {
    child.kill();
    rmSync(p.dir, { recursive: true, force: true });
  });
  return proc = p;
}

function request(req: Record<string, unknown>): Promise<Reply> {
  const p = start();
  if (!p || failure) return Promise.resolve({ error: failure ?? "PyTorch unavailable" });
  return new Promise((resolve) => {
    p.pending.push(resolve);
    p.child.stdin.write(JSON.stringify(req) + "\n");
  });
}

/** The PyTorch version and the BLAS library it loaded, for the header (once). */
export async function torchInfo(): Promise<string> {
  const r = await request({ op: "info" });
  const line = r.error ?? `PyTorch ${r.torch} (BLAS ${r.blas}), run beside this process: ${r.cpu}`;
  if (!envNotes.includes(line)) envNotes.push(line);
  return line;
}

/** A file holding `data` for the runner, written once per array. */
function fileOf(data: Float32Array | Int32Array): string {
  if (!files.has(data)) {
    const file = join(proc!.dir, `${Math.random().toString(36).slice(2)}.bin`);
    writeFileSync(file, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    files.set(data, file);
  }
  return files.get(data)!;
}

/**
 * A PyTorch contender: `case` is a function of `bench/torch_runner.py` (`crossEntropy`,
 * `marginHead` (ArcFace), `linearCrossEntropy`, `clip`, `siglip`) on `inputs(ctx)` with
 * `options(ctx)`; modes `valueAndGrad` and `forward`; its value is checked as any contender's.
 */
export function torchContender<X>(
  name: string,
  o: {
    case: string;
    threads: number;
    inputs: (ctx: X) => Record<string, TorchInput>;
    options?: (ctx: X) => Record<string, unknown>;
    group?: string;
    ratioTo?: string;
  },
): Contender<X> {
  return {
    name,
    group: o.group,
    ratioTo: o.ratioTo,
    external: true,
    async setup(ctx, mode): Promise<Runner | string> {
      if (mode !== "valueAndGrad" && mode !== "forward") return `PyTorch: no ${mode} mode`;
      await torchInfo();
      if (failure) return failure;
      const inputs = Object.fromEntries(
        Object.entries(o.inputs(ctx)).map(([k, { data, shape }]) => [
          k,
          { file: fileOf(data), shape, dtype: data instanceof Int32Array ? "int32" : "float32" },
        ]),
      );
      const r = await request({
        op: "setup",
        case: o.case,
        mode,
        threads: o.threads,
        inputs,
        options: o.options?.(ctx),
      });
      if (r.error) throw new Error(r.error);
      const timed = async (reps: number): Promise<{ seconds: number; out: Out }> => {
        const t = await request({ op: "time", reps });
        if (t.error) throw new Error(t.error);
        return { seconds: t.seconds!, out: { loss: t.loss } };
      };
      return { run: async () => (await timed(1)).out, timed };
    },
  };
}
