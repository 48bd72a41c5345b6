/**
 * Shared helpers of the real-kernel integration tests: the root/netfilter gate, paths, running
 * the CLI and the traffic peer (`_peer.ts`) inside a namespace of a {@linkcode createNetnsPair}
 * pair, reading its output, and parsing the kernel's own view (`conntrack -E` / `conntrack -L`
 * with `-o id,extended`) and the CLI's exit summary.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ADDR, checkIn, type Proc, spawnIn, waitUntil } from "./_netns.ts";

// ---------------------------------------------------------------------------------------------
// Gate: root and a kernel with netfilter. Anything else missing is a failure, not a skip.

/**
 * Whether the real-kernel tests cannot run here: not root, or no netfilter in this kernel.
 *
 * @returns `true` when they must be skipped.
 */
export function kernelUnavailable(): boolean {
  try {
    if (Deno.uid() !== 0) return true;
    return !Deno.statSync("/proc/sys/net/netfilter").isDirectory;
  } catch {
    return true; // no permission to ask, or no /proc/sys/net/netfilter
  }
}

/** `ignore` for every real-kernel `Deno.test`: see {@linkcode kernelUnavailable}. */
export const ignore: boolean = kernelUnavailable();

/** The repository root, with a trailing slash. */
export const ROOT: string = decodeURIComponent(new URL("../../", import.meta.url).pathname);
/** The CLI entry point. */
export const MAIN: string = `${ROOT}main.ts`;
/** The traffic peer, see `_peer.ts`. */
export const PEER: string = `${ROOT}tests/integration/_peer.ts`;
/** The Deno binary running the tests. */
export const DENO: string = Deno.execPath();
/** The log line (stderr) the CLI writes once it listens for events. */
export const READY: string = "Listening for conntrack NEW/DESTROY events";

// ---------------------------------------------------------------------------------------------
// Processes in a namespace.

/**
 * Starts `deno run -A ARGS` inside a namespace, from the repository root, without colors.
 *
 * @param ns `ip netns` name.
 * @param args Script and its arguments.
 * @returns The process; `await using` it.
 */
export function spawnDeno(ns: string, args: readonly string[]): Proc {
  return spawnIn(ns, [DENO, "run", "-A", ...args], { cwd: ROOT, env: { NO_COLOR: "1" } });
}

/** The overlay flags for A of the namespace pair: both overlay prefixes, both own addresses. */
export const OVERLAY_FLAGS: readonly string[] = [
  "-n",
  "100.64.0.0/16",
  "-n",
  "fd00:64::/64",
  "-a",
  ADDR.a4,
  "-a",
  ADDR.a6,
];

/**
 * Starts the CLI inside a namespace: `main.ts OVERLAY... EXTRA... -o OUTPUT`.
 *
 * @param ns `ip netns` name.
 * @param output The `-o` path.
 * @param extra Flags after the overlay flags.
 * @param overlay The overlay flags (default {@linkcode OVERLAY_FLAGS}).
 * @returns The process; wait for {@linkcode READY} on its stderr before making traffic.
 */
export function startCli(
  ns: string,
  output: string,
  extra: readonly string[] = [],
  overlay: readonly string[] = OVERLAY_FLAGS,
): Proc {
  return spawnDeno(ns, [MAIN, ...overlay, ...extra, "-o", output]);
}

/**
 * Starts the traffic peer inside a namespace: `_peer.ts MODE HOST PORT N EXTRA...`.
 *
 * @param ns `ip netns` name.
 * @param mode A mode of `_peer.ts`.
 * @param host Address literal.
 * @param port Port (the first one for `udp-burst`).
 * @param n The mode's count (connections, bytes, datagrams or chunks).
 * @param extra Further arguments of the mode.
 * @returns The process; servers print "ready", every mode prints "done".
 */
export function peer(
  ns: string,
  mode: string,
  host: string,
  port: number,
  n: number,
  ...extra: number[]
): Proc {
  return spawnDeno(ns, [PEER, mode, host, String(port), String(n), ...extra.map(String)]);
}

/**
 * Stops the CLI with SIGINT.
 *
 * @param cli The CLI process.
 * @param timeoutMs How long it may take to exit.
 * @returns Its exit code.
 */
export async function interrupt(cli: Proc, timeoutMs = 15_000): Promise<number> {
  cli.kill("SIGINT");
  return (await cli.wait(timeoutMs)).code;
}

/**
 * Flushes the conntrack table of a namespace (`conntrack -F`): every entry is DESTROYed.
 *
 * @param ns `ip netns` name.
 */
export async function flush(ns: string): Promise<void> {
  await checkIn(ns, ["conntrack", "-F"]);
}

/**
 * Pings once from a namespace and throws when no answer comes.
 *
 * @param ns `ip netns` name.
 * @param host Address literal.
 */
export async function ping(ns: string, host: string): Promise<void> {
  await checkIn(ns, ["ping", "-n", "-q", "-c", "1", "-W", "2", host]);
}

// ---------------------------------------------------------------------------------------------
// The CLI's output.

/** An output record as written (snake_case); the optional keys depend on type and flags. */
export interface RecordLine {
  "event_id": string;
  timestamp: string;
  "flow_id": string;
  type: "start" | "end" | "update" | "window";
  direction: string;
  protocol: number;
  "source_ip": string;
  "dest_ip": string;
  "source_port": number;
  "dest_port": number;
  "icmp_type": number;
  "icmp_code": number;
  "rx_packets": number;
  "tx_packets": number;
  "rx_bytes": number;
  "tx_bytes": number;
  "conntrack_id": number;
  "source_resource_id"?: string | null;
  "dest_resource_id"?: string | null;
  reason?: string;
  "window_start"?: string;
  "window_end"?: string;
  "num_of_starts"?: number;
  "num_of_ends"?: number;
  "num_of_drops"?: number;
  "num_of_updates"?: number;
}

/**
 * Reads the output file's records.
 *
 * @param path The `-o` path.
 * @param options `complete`: the file must exist and end with a complete line (asserted), for
 *   reading after the CLI exited. Otherwise a missing file has no records and an incomplete last
 *   line (the writer may be mid-write while we poll) is left out.
 * @returns The records, in file order.
 */
export function readRecords<T = RecordLine>(
  path: string,
  options: { complete?: boolean } = {},
): T[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound && !options.complete) return [];
    throw err;
  }
  const lines = text.split("\n");
  const last = lines.pop();
  if (options.complete) assert.equal(last, "", "the output ends with a complete line");
  return lines.map((l) => JSON.parse(l) as T);
}

/**
 * A file's size.
 *
 * @param path The file.
 * @returns Its size in bytes, 0 when it does not exist yet.
 */
export function fileSize(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return 0;
    throw err;
  }
}

/**
 * A file's newline count.
 *
 * @param path The file.
 * @returns Its number of lines, 0 when it does not exist yet.
 */
export function lineCount(path: string): number {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return 0;
    throw err;
  }
  let n = 0;
  for (let i = bytes.indexOf(10); i >= 0; i = bytes.indexOf(10, i + 1)) n++;
  return n;
}

/** Options of {@linkcode waitOutput}. */
export interface WaitOutputOptions {
  /** For the timeout message. */
  what: string | (() => string);
  /** The output is complete once this holds and the file has been quiet (default: always). */
  ready?: () => boolean;
  /** The output is complete as soon as this holds, quiet or not (default: never). */
  done?: () => boolean;
  /** How long the file must not grow (default 250 ms). */
  quietMs?: number;
  /** Deadline (default 10 s). */
  timeoutMs?: number;
  /** Poll interval (default 25 ms). */
  intervalMs?: number;
}

/**
 * Polls the output file until `done` holds, or `ready` holds and the file has not grown for
 * `quietMs` ("output settled"). Throws at the deadline.
 *
 * @param path The `-o` path.
 * @param options Conditions and timing.
 */
export async function waitOutput(path: string, options: WaitOutputOptions): Promise<void> {
  const quietMs = options.quietMs ?? 250;
  let size = -1;
  let since = Date.now();
  await waitUntil(
    options.what,
    () => {
      if (options.done?.() ?? false) return true;
      const now = fileSize(path);
      if (now !== size) {
        size = now;
        since = Date.now();
      }
      return (options.ready?.() ?? true) && Date.now() - since >= quietMs;
    },
    options.timeoutMs ?? 10_000,
    options.intervalMs ?? 25,
  );
}

/** The exit summary: `Stopped. Summary: events=N written=N ... reopens=N rss_mb=..`. */
export type Summary = Record<string, number>;

/**
 * Parses the exit summary the CLI logs on stderr; asserts that there is one.
 *
 * @param stderr The CLI's stderr.
 * @returns Its `key=number` pairs.
 */
export function parseSummary(stderr: string): Summary {
  const m = /Stopped\. Summary: (.*)$/m.exec(stderr);
  assert.ok(m !== null, `exit summary logged:\n${stderr}`);
  const summary: Summary = {};
  for (const [, key, value] of m[1]!.matchAll(/(\w+)=([\d.]+)/g)) summary[key!] = Number(value);
  return summary;
}

// ---------------------------------------------------------------------------------------------
// The kernel's view: `conntrack -E -o id,extended` / `conntrack -L -o id,extended` lines.

/** One line of `conntrack -E` / `conntrack -L` with `-o id,extended` (original tuple). */
export interface KernelEvent {
  /** Event type; `LIST` for a table dump line. */
  type: "NEW" | "DESTROY" | "LIST";
  /** Conntrack id. */
  id: number;
  /** IANA protocol number. */
  protocol: number;
  /** Original source. */
  source: string;
  /** Original destination. */
  dest: string;
  /** Original source port, 0 without ports. */
  sourcePort: number;
  /** Original destination port, 0 without ports. */
  destPort: number;
  /** ICMP type, else 0. */
  icmpType: number;
  /** ICMP code, else 0. */
  icmpCode: number;
  /** Connection mark. */
  mark: number;
  /** Original-direction counters, when accounting was on. */
  orig: { packets: number; bytes: number } | undefined;
  /** Reply-direction counters, when accounting was on. */
  reply: { packets: number; bytes: number } | undefined;
}

/**
 * Parses one line such as `[DESTROY] ipv4 2 tcp 6 119 TIME_WAIT src=… packets=6 … id=123`.
 *
 * @param line One output line.
 * @returns The event, or `undefined` for anything else.
 */
export function parseKernelLine(line: string): KernelEvent | undefined {
  const m = /^\s*(?:\[(NEW|DESTROY)\]\s+)?ipv[46]\s+\d+\s+\S+\s+(\d+)\s+(.*)$/.exec(line);
  if (m === null) return undefined;
  const ev: KernelEvent = {
    type: (m[1] ?? "LIST") as KernelEvent["type"],
    id: -1,
    protocol: Number(m[2]),
    source: "",
    dest: "",
    sourcePort: 0,
    destPort: 0,
    icmpType: 0,
    icmpCode: 0,
    mark: 0,
    orig: undefined,
    reply: undefined,
  };
  let segment = 0; // 1: original tuple, 2: reply tuple and what follows
  for (const token of m[3]!.split(/\s+/)) {
    const eq = token.indexOf("=");
    if (eq < 0) continue;
    const key = token.slice(0, eq);
    const value = token.slice(eq + 1);
    if (key === "src") segment++;
    if (key === "id") ev.id = Number(value); // the last id= is the conntrack id
    if (key === "mark") ev.mark = Number(value);
    if (key === "packets" || key === "bytes") {
      const side = segment === 1 ? "orig" : "reply";
      ev[side] ??= { packets: 0, bytes: 0 };
      ev[side][key] = Number(value);
    }
    if (segment !== 1) continue;
    if (key === "src") ev.source = value;
    if (key === "dst") ev.dest = value;
    if (key === "sport") ev.sourcePort = Number(value);
    if (key === "dport") ev.destPort = Number(value);
    if (key === "type") ev.icmpType = Number(value);
    if (key === "code") ev.icmpCode = Number(value);
  }
  return ev.id >= 0 ? ev : undefined;
}

/**
 * Parses `conntrack` output.
 *
 * @param text Lines of `conntrack -E` or `conntrack -L` with `-o id,extended`.
 * @returns The events of the lines that are events.
 */
export function parseKernel(text: string): KernelEvent[] {
  return text.split("\n").map(parseKernelLine).filter((e) => e !== undefined);
}
