/**
 * Helpers for the real-kernel tests: a disposable pair of network namespaces joined by a veth, and
 * awaited subprocesses (one-shot and long-running) inside them. Needs root, `ip`, `nft`.
 *
 * Layout (A is the host under test, B its peer):
 *
 * | | A | B |
 * |---|---|---|
 * | overlay v4 | 100.64.0.1/16 | 100.64.0.2/16 |
 * | overlay v6 | fd00:64::1/64 | fd00:64::2/64 |
 * | other v4 | 10.99.0.1/24 | 10.99.0.2/24 |
 * | other v6 | fd99::1/64 | fd99::2/64 |
 *
 * nftables in A turns conntrack on and marks new TCP connections to port 9010 (any address) and to
 * 10.99.0.2:9011 with NetBird's inbound data-plane mark 0x1bd10.
 */

/** NetBird's inbound data-plane mark, set by the nft rules in A. */
export const MARK_IN = 0x1bd10;
/** TCP destination port marked with {@linkcode MARK_IN} for any address. */
export const MARKED_PORT = 9010;
/** TCP destination port marked with {@linkcode MARK_IN} when the destination is 10.99.0.2. */
export const MARKED_OTHER_PORT = 9011;

/** The addresses of the namespace pair. */
export const ADDR = {
  a4: "100.64.0.1",
  b4: "100.64.0.2",
  a6: "fd00:64::1",
  b6: "fd00:64::2",
  aOther4: "10.99.0.1",
  bOther4: "10.99.0.2",
  aOther6: "fd99::1",
  bOther6: "fd99::2",
} as const;

/** Result of a finished command. */
export interface CommandResult {
  /** Exit code. */
  code: number;
  /** Signal that ended it, if any. */
  signal: Deno.Signal | null;
  /** Standard output, decoded. */
  stdout: string;
  /** Standard error, decoded. */
  stderr: string;
}

/** Options of {@linkcode run} and {@linkcode spawn}. */
export interface RunOptions {
  /** Environment; with `clearEnv`, the only variables. */
  env?: Record<string, string>;
  /** Start from an empty environment. */
  clearEnv?: boolean;
  /** Working directory. */
  cwd?: string;
}

const decoder = new TextDecoder();

/** The argv that runs `args` inside the `ip netns` namespace `ns`. */
export function inNetns(ns: string, args: readonly string[]): string[] {
  return ["ip", "netns", "exec", ns, ...args];
}

function command(args: readonly string[], options: RunOptions): Deno.Command {
  const [cmd, ...rest] = args;
  if (cmd === undefined) throw new Error("empty command");
  return new Deno.Command(cmd, {
    args: rest,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(options.env !== undefined ? { env: options.env } : {}),
    ...(options.clearEnv ? { clearEnv: true } : {}),
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
  });
}

/**
 * Runs a command to completion.
 *
 * @param args argv.
 * @param options Environment and working directory.
 * @returns Exit status and output.
 */
export async function run(
  args: readonly string[],
  options: RunOptions = {},
): Promise<CommandResult> {
  const out = await command(args, options).output();
  return {
    code: out.code,
    signal: out.signal,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
}

/**
 * Runs a command and throws when it fails.
 *
 * @param args argv.
 * @param options Environment and working directory.
 * @returns Its standard output.
 */
export async function check(args: readonly string[], options: RunOptions = {}): Promise<string> {
  const r = await run(args, options);
  if (r.code !== 0) {
    throw new Error(`${args.join(" ")} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r.stdout;
}

/**
 * Runs a command inside a namespace to completion.
 *
 * @param ns `ip netns` name.
 * @param args argv.
 * @param options Environment and working directory.
 * @returns Exit status and output.
 */
export function runIn(
  ns: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<CommandResult> {
  return run(inNetns(ns, args), options);
}

/**
 * Runs a command inside a namespace and throws when it fails.
 *
 * @param ns `ip netns` name.
 * @param args argv.
 * @returns Its standard output.
 */
export function checkIn(ns: string, args: readonly string[]): Promise<string> {
  return check(inNetns(ns, args));
}

/** Polls `cond` every `intervalMs` until it holds; throws after `timeoutMs` with `what`. */
export async function waitUntil(
  what: string | (() => string),
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  intervalMs = 25,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) {
      throw new Error(
        `Timed out after ${timeoutMs} ms waiting for ${typeof what === "string" ? what : what()}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * A long-running subprocess whose output is collected as it arrives. Disposing it kills it (if it
 * still runs) and awaits its exit and its output streams, so no resource leaks.
 */
export class Proc implements AsyncDisposable {
  /** The command line, for messages. */
  readonly label: string;
  /** Everything written to stdout so far. */
  stdout = "";
  /** Everything written to stderr so far. */
  stderr = "";
  #child: Deno.ChildProcess;
  #pumps: Promise<void>;
  #status: Promise<Deno.CommandStatus>;
  #exited: Deno.CommandStatus | undefined;

  /**
   * @param args argv.
   * @param options Environment and working directory.
   */
  constructor(args: readonly string[], options: RunOptions = {}) {
    this.label = args.join(" ");
    this.#child = command(args, options).spawn();
    this.#status = this.#child.status.then((s) => (this.#exited = s));
    this.#pumps = Promise.all([
      this.#pump(this.#child.stdout, (t) => (this.stdout += t)),
      this.#pump(this.#child.stderr, (t) => (this.stderr += t)),
    ]).then(() => {});
  }

  async #pump(stream: ReadableStream<Uint8Array>, add: (text: string) => void): Promise<void> {
    const dec = new TextDecoder();
    for await (const chunk of stream) add(dec.decode(chunk, { stream: true }));
    add(dec.decode());
  }

  /** The exit status once it exited, else `undefined`. */
  get exited(): Deno.CommandStatus | undefined {
    return this.#exited;
  }

  /**
   * Waits until the output contains `text` (stdout, or stderr with `stream`).
   *
   * @param text Substring to wait for.
   * @param stream Which stream.
   * @param timeoutMs Deadline.
   */
  async waitFor(
    text: string,
    stream: "stdout" | "stderr" = "stdout",
    timeoutMs = 10_000,
  ): Promise<void> {
    await waitUntil(
      () => `"${text}" from ${this.label} (stdout: ${this.stdout}, stderr: ${this.stderr})`,
      () => {
        if (this[stream].includes(text)) return true;
        if (this.#exited !== undefined) {
          throw new Error(
            `${this.label} exited ${this.#exited.code} before printing "${text}": ${this.stderr}`,
          );
        }
        return false;
      },
      timeoutMs,
    );
  }

  /**
   * Sends a signal (ignored when it already exited).
   *
   * @param signal The signal.
   */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    if (this.#exited !== undefined) return;
    try {
      this.#child.kill(signal);
    } catch (err) {
      if (!(err instanceof TypeError)) throw err; // already exited
    }
  }

  /**
   * Waits for the exit and the end of the output.
   *
   * @param timeoutMs Deadline; then the process is killed and an error thrown.
   * @returns The exit status.
   */
  async wait(timeoutMs = 15_000): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((
      r,
    ) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
    try {
      const first = await Promise.race([this.#status, timeout]);
      if (first === "timeout") {
        this.kill("SIGKILL");
        await this.#status;
        await this.#pumps;
        throw new Error(`${this.label} did not exit within ${timeoutMs} ms: ${this.stderr}`);
      }
      await this.#pumps;
      return first;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits for a successful exit; throws with stderr otherwise. */
  async success(timeoutMs = 15_000): Promise<void> {
    const s = await this.wait(timeoutMs);
    if (s.code !== 0) throw new Error(`${this.label} exited ${s.code}: ${this.stderr}`);
  }

  /** Kills it if needed and awaits everything. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    await this.#status;
    await this.#pumps;
  }
}

/**
 * Starts a long-running command inside a namespace.
 *
 * @param ns `ip netns` name.
 * @param args argv.
 * @param options Environment and working directory.
 * @returns The process.
 */
export function spawnIn(ns: string, args: readonly string[], options: RunOptions = {}): Proc {
  return new Proc(inNetns(ns, args), options);
}

/** Two namespaces joined by a veth. Dispose deletes both (and with them the veth). */
export interface NetnsPair extends AsyncDisposable {
  /** The namespace under test. */
  readonly a: string;
  /** Its peer. */
  readonly b: string;
}

const NFT_RULESET = `
table inet nbct {
  chain output {
    type filter hook output priority 0; policy accept;
    ct state new counter
    ct state new tcp dport ${MARKED_PORT} ct mark set ${MARK_IN}
    ct state new ip daddr ${ADDR.bOther4} tcp dport ${MARKED_OTHER_PORT} ct mark set ${MARK_IN}
  }
  chain input {
    type filter hook input priority 0; policy accept;
    ct state new counter
  }
}
`;

async function nft(ns: string, ruleset: string): Promise<void> {
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", ns, "nft", "-f", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(ruleset));
  await writer.close();
  const out = await child.output();
  if (out.code !== 0) throw new Error(`nft -f failed in ${ns}: ${decoder.decode(out.stderr)}`);
}

/**
 * Creates a uniquely named namespace pair with the layout described in the module doc. On any
 * failure the namespaces created so far are deleted before the error is rethrown.
 *
 * @returns The pair; `await using` it.
 */
export async function createNetnsPair(): Promise<NetnsPair> {
  const tag = `nbct-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const a = `${tag}-a`;
  const b = `${tag}-b`;
  const created: string[] = [];
  const dispose = async (): Promise<void> => {
    const errors: string[] = [];
    for (const ns of created.splice(0).reverse()) {
      const r = await run(["ip", "netns", "delete", ns]);
      if (r.code !== 0) errors.push(`${ns}: ${r.stderr.trim()}`);
    }
    if (errors.length > 0) throw new Error(`Cannot delete namespaces: ${errors.join("; ")}`);
  };
  try {
    for (const ns of [a, b]) {
      await check(["ip", "netns", "add", ns]);
      created.push(ns);
    }
    await check([
      "ip",
      "link",
      "add",
      "veth-a",
      "netns",
      a,
      "type",
      "veth",
      "peer",
      "name",
      "veth-b",
      "netns",
      b,
    ]);
    const setup: [string, string, string, string, string][] = [
      [a, "veth-a", "100.64.0.1/16", "fd00:64::1/64", "10.99.0.1/24"],
      [b, "veth-b", "100.64.0.2/16", "fd00:64::2/64", "10.99.0.2/24"],
    ];
    for (const [ns, dev, v4, v6, other4] of setup) {
      const other6 = ns === a ? "fd99::1/64" : "fd99::2/64";
      await check(["ip", "-n", ns, "link", "set", "lo", "up"]);
      await check(["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
      await check(["ip", "-n", ns, "addr", "add", other4, "dev", dev]);
      await check(["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
      await check(["ip", "-n", ns, "addr", "add", other6, "dev", dev, "nodad"]);
      await check(["ip", "-n", ns, "link", "set", dev, "up"]);
    }
    await nft(a, NFT_RULESET);
  } catch (err) {
    await dispose().catch(() => {});
    throw err;
  }
  return { a, b, [Symbol.asyncDispose]: dispose };
}
