/**
 * Ingest rate of `netbird-ct collect` (the Flow API receiver), memory store and Redis store, against
 * the Redis server's own pipelined write rate, in one run. Run: `deno task bench:collect` (through
 * `scripts/bench-collect.sh`, which also removes whatever is left if this process crashes).
 *
 * Per store: a fresh receiver subprocess (`deno run main.ts collect`, Redis: a throwaway
 * `redis-server --save "" --appendonly no` on a free loopback port), and a load generator
 * subprocess (this file with `--generate`; h2c on loopback, a valid token from `mintToken`, one
 * connection per stream). `--generator h2` (default): raw HTTP/2 frames written by this file
 * with `lib/flowapi/h2/` (pre-encoded messages, one DATA frame each, many frames per socket
 * write, within the receiver's flow-control windows), a few µs of CPU per event, so that the
 * receiver is what is measured; `--generator grpc-js`: `@grpc/grpc-js` on Deno's `node:http2`
 * (as before; costs more CPU per event than the receiver now does):
 *
 * 1. warm-up: `--warmup` events (JIT, connections), not timed;
 * 2. load: `--streams` concurrent Events streams, `--events` pre-encoded `FlowEvent`s in all, each
 *    with a unique `event_id`, pipelined with at most `--window` un-acked events per stream;
 *    stops sending after `--seconds`. Rate = acked events / (last ack − first send); ack latency
 *    = time from `write()` to the ack, for every event;
 * 3. idle latency: one stream, one event at a time (`--idle` events);
 * 4. check: every event sent was acked, once; the store holds exactly the acked events (query API
 *    `total_records`; for Redis also `ZCARD` of the time index and the number of event keys).
 *
 * CPU use of the receiver, Redis, the generator and everything else on the machine (other work
 * skews the figures) is read from /proc over the load phase. Then `redis-benchmark -t set -n
 * 200000 -P 16 -q` on the same Redis, and the receiver's own per-event write (`SET NX` of an
 * event-sized value + `ZADD NX`, atomic, as `EVAL`) the same way. Every process and file it made
 * is removed at the end, on error and on SIGINT/SIGTERM; a watchdog ends the run after
 * `--max-seconds`.
 *
 *   deno task bench:collect [--events 300000] [--streams 4] [--window 1000] [--seconds 15]
 *                           [--warmup 10000] [--idle 1000] [--max-seconds 110]
 *                           [--generator h2|grpc-js]
 *                           [--profile DIR]   # + a V8 CPU profile of each receiver's load phase
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { Buffer } from "node:buffer";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { EVENTS_METHOD } from "../lib/flowapi/client.ts";
import {
  decodeFlowEventAck,
  encodeFlowEvent,
  type FlowEventMessage,
  ProtoDirection,
  ProtoType,
} from "../lib/flowapi/proto.ts";
import {
  CONNECTION_PREFACE,
  Flag,
  FrameReader,
  FrameType,
  OutBuffer,
  Setting,
} from "../lib/flowapi/h2/frames.ts";
import { HpackDecoder, HpackEncoder } from "../lib/flowapi/h2/hpack.ts";
import { mintToken } from "../lib/flowapi/token.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);
const TIME_KEY = "netbird-ct:flow:by_time";
const EVENT_KEY_PATTERN = "netbird-ct:flow:event:*";

// --- options --------------------------------------------------------------------------------

const { values: flags } = parseArgs({
  args: Deno.args,
  strict: true,
  options: {
    events: { type: "string", default: "300000" },
    streams: { type: "string", default: "4" },
    window: { type: "string", default: "1000" },
    seconds: { type: "string", default: "15" },
    warmup: { type: "string", default: "10000" },
    idle: { type: "string", default: "1000" },
    "max-seconds": { type: "string", default: "110" },
    profile: { type: "string" },
    generator: { type: "string", default: "h2" },
    // Internal: run as the load generator against --target (token in NBCT_BENCH_TOKEN).
    generate: { type: "boolean", default: false },
    target: { type: "string" },
  },
});
function positive(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} "${text}": want an integer ≥ 0`);
  return n;
}
const EVENTS = positive("events", flags.events);
const STREAMS = Math.max(1, Math.min(positive("streams", flags.streams), 64));
const WINDOW = Math.max(1, positive("window", flags.window));
const SECONDS = positive("seconds", flags.seconds);
const WARMUP = positive("warmup", flags.warmup);
const IDLE = positive("idle", flags.idle);
const MAX_SECONDS = positive("max-seconds", flags["max-seconds"]);
const PROFILE_DIR = flags.profile;
if (flags.generator !== "h2" && flags.generator !== "grpc-js") {
  throw new Error(`--generator "${flags.generator}": want h2 or grpc-js`);
}
const GENERATOR: "h2" | "grpc-js" = flags.generator;

// --- cleanup --------------------------------------------------------------------------------

const cleanups: (() => Promise<void> | void)[] = [];
let cleaning: Promise<void> | undefined;

/** Runs every registered cleanup, newest first, once. */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    while (cleanups.length > 0) {
      try {
        await cleanups.pop()!();
      } catch (err) {
        console.error(`bench: cleanup: ${err instanceof Error ? err.message : err}`);
      }
    }
  })();
  return cleaning;
}

let aborting = false;

async function abort(why: string, code: number): Promise<never> {
  aborting = true;
  console.error(`bench: ${why}; cleaning up`);
  await cleanup();
  Deno.exit(code);
}

// --- child processes ------------------------------------------------------------------------

/** A child process that is killed at cleanup time if still running; its output is kept. */
class Child {
  readonly name: string;
  readonly pid: number;
  readonly lines: string[] = [];
  readonly status: Promise<Deno.CommandStatus>;
  #child: Deno.ChildProcess;
  #exited = false;
  #waiters = new Set<() => void>();
  #reading: Promise<void>[] = [];

  #stdin: WritableStreamDefaultWriter<Uint8Array> | undefined;

  constructor(name: string, command: string, args: string[], env: Record<string, string> = {}) {
    this.name = name;
    this.#child = new Deno.Command(command, {
      args,
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...env },
    }).spawn();
    this.#stdin = this.#child.stdin.getWriter();
    this.pid = this.#child.pid;
    this.status = this.#child.status.then((s) => {
      this.#exited = true;
      this.#notify();
      return s;
    });
    this.#reading = [this.#read(this.#child.stdout), this.#read(this.#child.stderr)];
    cleanups.push(async () => void await this.stop("SIGKILL", 0));
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    let buffer = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let i;
      while ((i = buffer.indexOf("\n")) >= 0) {
        this.lines.push(buffer.slice(0, i));
        buffer = buffer.slice(i + 1);
      }
      this.#notify();
    }
    if (buffer !== "") this.lines.push(buffer);
  }

  #notify(): void {
    for (const w of this.#waiters) w();
  }

  /** Waits for an output line matching `re`. */
  async waitFor(re: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const line of this.lines) {
        const m = re.exec(line);
        if (m !== null) return m;
      }
      const left = deadline - Date.now();
      if (this.#exited || left <= 0) {
        throw new Error(
          `${this.name} ${this.#exited ? "exited" : "timed out"} before printing ${re}:\n` +
            this.lines.slice(-20).join("\n"),
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      let wake = (): void => {};
      await new Promise<void>((resolve) => {
        wake = resolve;
        this.#waiters.add(wake);
        timer = setTimeout(resolve, Math.min(left, 500));
      });
      clearTimeout(timer);
      this.#waiters.delete(wake);
    }
  }

  /** Writes a line to its stdin. */
  async writeLine(line: string): Promise<void> {
    await this.#stdin?.write(new TextEncoder().encode(line + "\n"));
  }

  /** CPU seconds used so far (user + system), from /proc. */
  cpuSeconds(): number {
    return procCpuSeconds(this.pid);
  }

  /**
   * Closes its stdin, sends `signal` (none: lets it exit by itself), waits up to `graceMs`, then
   * SIGKILL; returns the exit status.
   */
  async stop(signal: Deno.Signal | undefined, graceMs: number): Promise<Deno.CommandStatus> {
    const stdin = this.#stdin;
    this.#stdin = undefined;
    await stdin?.close().catch(() => {});
    if (!this.#exited) {
      try {
        if (signal !== undefined) this.#child.kill(signal);
      } catch { /* exited meanwhile */ }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const exited = await Promise.race([
        this.status.then(() => true),
        new Promise<boolean>((r) => timer = setTimeout(() => r(false), graceMs)),
      ]);
      clearTimeout(timer);
      if (!exited) {
        try {
          this.#child.kill("SIGKILL");
        } catch { /* exited meanwhile */ }
      }
    }
    const status = await this.status;
    await Promise.all(this.#reading);
    return status;
  }
}

function procCpuSeconds(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields 14 and 15 of proc_pid_stat(5) (utime, stime, in ticks of 1/100 s on Linux), counted
    // after the ")" that ends the name field.
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/** CPU seconds the whole machine spent busy so far (all CPUs), from /proc/stat. */
function machineBusySeconds(): number {
  const line = Deno.readTextFileSync("/proc/stat").split("\n")[0]!;
  // cpu user nice system idle iowait irq softirq steal ... (ticks of 1/100 s)
  const [user, nice, system, , , irq, softirq, steal] = line.split(/\s+/).slice(1).map(Number);
  return (user! + nice! + system! + irq! + softirq! + steal!) / 100;
}

async function output(command: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `${command} ${args.join(" ")} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return text;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

// --- Redis ----------------------------------------------------------------------------------

class Redis {
  readonly port: number;
  readonly child: Child;

  private constructor(port: number, child: Child) {
    this.port = port;
    this.child = child;
  }

  static async start(dir: string): Promise<Redis> {
    const port = freePort();
    const child = new Child("redis-server", "redis-server", [
      "--dir",
      dir,
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--maxmemory-policy",
      "noeviction",
    ]);
    const r = new Redis(port, child);
    await child.waitFor(/Ready to accept connections/, 10_000);
    return r;
  }

  cli(...args: string[]): Promise<string> {
    return output("redis-cli", ["-h", "127.0.0.1", "-p", String(this.port), ...args]);
  }

  async count(): Promise<{ zcard: number; keys: number }> {
    const zcard = Number((await this.cli("ZCARD", TIME_KEY)).trim());
    // EVAL: count the event keys inside Redis (the bench has at most a few 100k).
    const keys = Number(
      (await this.cli(
        "EVAL",
        "local n, c = 0, '0' repeat local r = redis.call('SCAN', c, 'MATCH', ARGV[1], 'COUNT', 10000) " +
          "c = r[1] n = n + #r[2] until c == '0' return n",
        "0",
        EVENT_KEY_PATTERN,
      )).trim(),
    );
    return { zcard, keys };
  }

  /** `redis-benchmark -q ARGS` against this server: requests per second. */
  async benchmark(args: string[]): Promise<number> {
    const text = await output("redis-benchmark", [
      "-h",
      "127.0.0.1",
      "-p",
      String(this.port),
      ...args,
    ]);
    // -q prints progress lines ending in \r, then "NAME: 123456.78 requests per second, ...".
    const m = [...text.matchAll(/: ([0-9.]+) requests per second/g)].pop();
    if (m === undefined) throw new Error(`cannot parse redis-benchmark output: ${text}`);
    return Number(m[1]);
  }
}

// --- the receiver -------------------------------------------------------------------------------

class Receiver {
  readonly child: Child;
  readonly target: string;
  readonly httpBase: string;

  private constructor(child: Child, target: string, httpBase: string) {
    this.child = child;
    this.target = target;
    this.httpBase = httpBase;
  }

  static async start(secretFile: string, store: string, inspect: boolean): Promise<Receiver> {
    const child = new Child("netbird-ct collect", Deno.execPath(), [
      "run",
      "--allow-all",
      ...(inspect ? [`--inspect=127.0.0.1:${freePort()}`] : []),
      `${ROOT}main.ts`,
      "collect",
      "--listen",
      "127.0.0.1:0",
      "--http-listen",
      "127.0.0.1:0",
      "--stats-interval",
      "0",
      "--token-secret-file",
      secretFile,
      "--store",
      store,
    ]);
    const m = await child.waitFor(
      /Receiving flow events on ([0-9.]+:[0-9]+) .* query API (http:\/\/[0-9.]+:[0-9]+)\//,
      30_000,
    );
    return new Receiver(child, m[1]!, m[2]!);
  }

  /** The inspector's WebSocket URL (started with `inspect`). */
  async inspectorUrl(): Promise<string> {
    return (await this.child.waitFor(/Debugger listening on (ws:\/\/\S+)/, 5000))[1]!;
  }

  async totalRecords(): Promise<number> {
    const res = await fetch(`${this.httpBase}/api/events/network-traffic?page_size=1`);
    const body = await res.json() as { total_records?: number; message?: string };
    if (res.status !== 200 || typeof body.total_records !== "number") {
      throw new Error(`query API: ${res.status} ${JSON.stringify(body)}`);
    }
    return body.total_records;
  }

  /** SIGTERM (a clean stop: acks what is in flight, closes the store); the summary line. */
  async stop(): Promise<string> {
    const status = await this.child.stop("SIGTERM", 10_000);
    const summary = this.child.lines.find((l) => l.includes("Stopped. Summary:")) ?? "";
    if (status.code !== 0) {
      throw new Error(
        `netbird-ct collect exited with ${status.code}:\n${this.child.lines.slice(-20).join("\n")}`,
      );
    }
    return summary.replace(/^.*Summary: /, "");
  }
}

// --- the load generator -----------------------------------------------------------------------

const PUBLIC_KEY = crypto.getRandomValues(new Uint8Array(32));
const BASE_MS = Date.UTC(2026, 4, 1);
let eventSeq = 0;

/**
 * Pre-encoded events for one stream: event_id = 10 random bytes of the phase, the stream number
 * (2 bytes), the sequence number in the stream (4 bytes, big-endian), so an ack maps to its event
 * without a lookup.
 */
function makeEvents(prefix: Uint8Array, total: number, streams: number): Buffer[][] {
  const counts = Array.from(
    { length: streams },
    (_, s) => Math.floor(total / streams) + (s < total % streams ? 1 : 0),
  );
  const base = eventSeq;
  eventSeq += total;
  return counts.map((count, stream) => makeStreamEvents(prefix, stream, streams, count, base));
}

function makeStreamEvents(
  prefix: Uint8Array,
  stream: number,
  streams: number,
  count: number,
  base: number,
): Buffer[] {
  const out: Buffer[] = new Array(count);
  const flowId = new Uint8Array(16);
  const ruleId = new TextEncoder().encode("d0kcfq3l0ubs73d4ahn0");
  const resource = new TextEncoder().encode("cu9bno3l0ubs73fe3hpg");
  for (let i = 0; i < count; i++) {
    const eventId = new Uint8Array(16);
    eventId.set(prefix);
    const view = new DataView(eventId.buffer);
    view.setUint16(10, stream);
    view.setUint32(12, i);
    crypto.getRandomValues(flowId);
    // Streams interleave in time, as peers do: arrival is nearly in timestamp order.
    const n = base + i * streams + stream;
    const ts = new Date(BASE_MS + n);
    const e: FlowEventMessage = {
      eventId,
      timestamp: ts,
      publicKey: PUBLIC_KEY,
      isInitiator: false,
      flowFields: {
        flowId: flowId.slice(),
        type: n % 2 === 0 ? ProtoType.START : ProtoType.END,
        ruleId,
        direction: ProtoDirection.EGRESS,
        protocol: 6,
        sourceIp: new Uint8Array([100, 64, 0, 1]),
        destIp: new Uint8Array([100, 64, (n >> 8) & 255, n & 255]),
        portInfo: { sourcePort: 32768 + (n % 28000), destPort: 443 },
        rxPackets: 12n,
        txPackets: 10n,
        rxBytes: 8123n,
        txBytes: 1432n,
        sourceResourceId: new Uint8Array(0),
        destResourceId: resource,
        numOfStarts: 1n,
        numOfEnds: n % 2 === 0 ? 0n : 1n,
        numOfDrops: 0n,
      },
      windowStart: new Date(ts.getTime() - 60_000),
      windowEnd: ts,
    };
    const bytes = encodeFlowEvent(e);
    out[i] = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  return out;
}

interface LoadResult {
  sent: number;
  acked: number;
  /** ms from the first write to the last ack. */
  elapsedMs: number;
  /** Ack latency of every acked event, ms, sorted. */
  latencies: Float64Array;
  duplicateAcks: number;
  strayAcks: number;
  errors: string[];
}

const identity = (b: Buffer): Buffer => b;

/**
 * One channel (one connection) per stream, like separate peers, kept for all the phases. The
 * generator never closes them: it exits and the kernel closes the connections. Under Deno 2.9.6 a
 * GOAWAY on an HTTP/2 session that has carried finished streams can abort a process on
 * `node:http2` that receives it (nghttp2 assertion `stream->closed_next == NULL` in
 * `find_stream_on_goaway_func`, or a segfault; denoland/deno#36788). The receiver no longer runs
 * on `node:http2`, and sends no GOAWAY on idle connections when it stops, but the generator keeps
 * out of the way of that bug all the same.
 */
function openClients(target: string, n: number): { clients: grpc.Client[]; close(): void } {
  const clients = Array.from(
    { length: n },
    () =>
      new grpc.Client(target, grpc.credentials.createInsecure(), {
        "grpc.use_local_subchannel_pool": 1,
        "grpc.max_receive_message_length": 64 * 1024,
      }),
  );
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    for (const c of clients) c.close();
  };
  cleanups.push(close);
  return { clients, close };
}

/**
 * What {@linkcode runLoad} and {@linkcode runLoadH2} count over all their streams, and the course
 * of a run: every stream gets ready (`readies`), then all start sending (`starts`), then all end
 * (`dones`).
 */
class LoadRun {
  readonly latencies: Float64Array;
  nLat = 0;
  sent = 0;
  acked = 0;
  duplicateAcks = 0;
  strayAcks = 0;
  first = Infinity;
  last = -Infinity;
  readonly errors: string[] = [];
  readonly readies: Promise<void>[] = [];
  readonly starts: (() => void)[] = [];
  readonly dones: Promise<void>[] = [];

  constructor(perStream: Buffer[][]) {
    this.latencies = new Float64Array(perStream.reduce((a, s) => a + s.length, 0));
  }

  /** Counts an event sent at `now` (performance.now()). */
  countSent(now: number): void {
    this.sent++;
    if (now < this.first) this.first = now;
  }

  /**
   * Counts the ack of event `seq` of a stream that has sent `next` events, at `sendAt`; false
   * (counted too) for a stray or duplicate ack.
   */
  countAck(seq: number, next: number, sendAt: Float64Array, ackedFlags: Uint8Array): boolean {
    if (seq < 0 || seq >= next) {
      this.strayAcks++;
      return false;
    }
    if (ackedFlags[seq] === 1) {
      this.duplicateAcks++;
      return false;
    }
    ackedFlags[seq] = 1;
    const now = performance.now();
    this.latencies[this.nLat++] = now - sendAt[seq]!;
    this.last = now;
    this.acked++;
    return true;
  }

  /** Waits until every stream is ready, starts them all, and waits for their ends. */
  async finish(): Promise<LoadResult> {
    await Promise.all(this.readies);
    for (const start of this.starts) start();
    await Promise.all(this.dones);
    return {
      sent: this.sent,
      acked: this.acked,
      elapsedMs: this.acked > 0 ? this.last - this.first : 0,
      latencies: this.latencies.slice(0, this.nLat).sort(),
      duplicateAcks: this.duplicateAcks,
      strayAcks: this.strayAcks,
      errors: this.errors,
    };
  }
}

/**
 * Sends `perStream[i]` on a new stream of `clients[i]`, at most `window` un-acked events per
 * stream, until all are sent or `stopAt` (performance.now()) passes; half-closes, and waits for
 * the receiver's final status (it acks everything it read before ending the stream with OK).
 */
async function runLoad(
  clients: grpc.Client[],
  token: string,
  prefix: Uint8Array,
  perStream: Buffer[][],
  window: number,
  stopAt: number,
): Promise<LoadResult> {
  const run = new LoadRun(perStream);
  for (let s = 0; s < perStream.length; s++) {
    const events = perStream[s]!;
    const sendAt = new Float64Array(events.length);
    const ackedFlags = new Uint8Array(events.length);
    const client = clients[s]!;
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${token}`);
    const call = client.makeBidiStreamRequest(EVENTS_METHOD, identity, identity, metadata);
    const ready = Promise.withResolvers<void>();
    const done = Promise.withResolvers<void>();
    run.readies.push(ready.promise);
    run.dones.push(done.promise);
    let next = 0;
    let ackedHere = 0;
    let blocked = false;
    let started = false;
    let ended = false;
    const pump = (): void => {
      if (!started || ended) return;
      const limit = events.length;
      while (!blocked && next < limit && next - ackedHere < window) {
        if ((next & 255) === 0 && performance.now() >= stopAt) break;
        const seq = next++;
        const now = performance.now();
        run.countSent(now);
        sendAt[seq] = now;
        if (!call.write(events[seq]!)) blocked = true;
      }
      if (next >= limit || performance.now() >= stopAt) {
        ended = true;
        call.end();
      }
    };
    run.starts.push(() => {
      started = true;
      pump();
    });
    call.on("data", (b: Buffer) => {
      let seq = -1;
      if (b.length >= 18 && b[0] === 0x0a && b[1] === 16) {
        if (b.readUInt16BE(12) === s && b.compare(prefix, 0, 10, 2, 12) === 0) {
          seq = b.readUInt32BE(14);
        }
      } else {
        const ack = decodeFlowEventAck(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
        if (ack.isInitiator) {
          ready.resolve();
          return;
        }
      }
      if (!run.countAck(seq, next, sendAt, ackedFlags)) return;
      ackedHere++;
      pump();
    });
    call.on("drain", () => {
      blocked = false;
      pump();
    });
    call.on("error", (err: Error) => {
      run.errors.push(`stream ${s}: ${err.message}`);
      ready.resolve();
      done.resolve();
    });
    call.on("status", (st: grpc.StatusObject) => {
      if (st.code !== grpc.status.OK) {
        run.errors.push(`stream ${s}: status ${st.code} ${st.details}`);
      }
      ready.resolve();
      done.resolve();
    });
    // NetBird's client opens each stream with an initiator message.
    call.write(Buffer.from(encodeFlowEvent({
      eventId: new Uint8Array(0),
      publicKey: PUBLIC_KEY,
      isInitiator: true,
    })));
  }
  return await run.finish();
}

// --- the load generator on raw HTTP/2 (--generator h2) ----------------------------------------

/**
 * A minimal HTTP/2 client connection for the load generator: pre-encoded messages go out as one
 * DATA frame each, many frames per socket write (as Go's gRPC client writes them), within the
 * receiver's stream and connection windows; acks are read straight from the DATA frames. Its
 * own receive windows are opened wide once, so it never has to send WINDOW_UPDATEs. Costs a few
 * hundred nanoseconds per event, so that the receiver, not the generator, is measured.
 */
class H2Conn {
  #conn: Deno.Conn;
  #reader = new FrameReader(1 << 20);
  #out = new OutBuffer(256 * 1024);
  #encoder = new HpackEncoder();
  #decoder = new HpackDecoder();
  #sendWindow = 65_535;
  #peerInitialWindow = 65_535;
  #streams = new Map<number, H2ClientStream>();
  #nextId = 1;
  #writing = false;
  #flushQueued = false;
  #blocked = new Set<H2ClientStream>();
  #headerBlock: Uint8Array[] = [];
  #headerStream = 0;
  #headerEnd = false;
  closed = false;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  static async open(target: string): Promise<H2Conn> {
    const [host, port] = [
      target.slice(0, target.lastIndexOf(":")),
      target.slice(target.lastIndexOf(":") + 1),
    ];
    const conn = await Deno.connect({ hostname: host, port: Number(port) });
    conn.setNoDelay(true);
    const c = new H2Conn(conn);
    c.#out.append(CONNECTION_PREFACE);
    c.#out.settings([[Setting.ENABLE_PUSH, 0], [Setting.INITIAL_WINDOW_SIZE, 2 ** 31 - 1]]);
    c.#out.windowUpdate(0, 2 ** 31 - 1 - 65_535);
    c.#flush();
    void c.#read();
    cleanups.push(() => c.close());
    return c;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }

  openStream(headers: [string, string][], stream: H2ClientStream): void {
    const id = this.#nextId;
    this.#nextId += 2;
    stream.id = id;
    stream.sendWindow = this.#peerInitialWindow;
    this.#streams.set(id, stream);
    this.#out.headers(id, this.#encoder.encode(headers), false, 16_384);
    this.#queueFlush();
  }

  /** Sends one framed gRPC message now if the windows allow; `false`: wait for `stream.onWritable`. */
  send(stream: H2ClientStream, framed: Uint8Array): boolean {
    const n = framed.length;
    if (n > stream.sendWindow || n > this.#sendWindow) {
      this.#blocked.add(stream);
      return false;
    }
    stream.sendWindow -= n;
    this.#sendWindow -= n;
    this.#out.header(n, FrameType.DATA, 0, stream.id);
    this.#out.append(framed);
    this.#queueFlush();
    return true;
  }

  end(stream: H2ClientStream): void {
    this.#out.header(0, FrameType.DATA, Flag.END_STREAM, stream.id);
    this.#queueFlush();
  }

  #queueFlush(): void {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    queueMicrotask(() => {
      this.#flushQueued = false;
      this.#flush();
    });
  }

  #flush(): void {
    if (this.#writing || this.closed || this.#out.length === 0) return;
    this.#writing = true;
    void (async () => {
      try {
        while (this.#out.length > 0 && !this.closed) {
          const bytes = this.#out.take();
          let off = 0;
          while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
        }
      } catch (err) {
        this.#fail(`write: ${err instanceof Error ? err.message : err}`);
      } finally {
        this.#writing = false;
      }
    })();
  }

  #fail(why: string): void {
    for (const s of this.#streams.values()) s.onEnd(-1, why);
    this.#streams.clear();
    this.close();
  }

  async #read(): Promise<void> {
    const r = this.#reader;
    try {
      for (;;) {
        const n = await this.#conn.read(r.space());
        if (n === null) break;
        r.commit(n);
        while (r.next()) this.#onFrame(r.type, r.flags, r.streamId, r.payload);
        if (this.#blocked.size > 0) {
          const blocked = [...this.#blocked];
          this.#blocked.clear();
          for (const s of blocked) s.onWritable();
        }
      }
      if (!this.closed) this.#fail("the receiver closed the connection");
    } catch (err) {
      if (!this.closed) this.#fail(`read: ${err instanceof Error ? err.message : err}`);
    }
  }

  #onFrame(type: number, flags: number, id: number, payload: Uint8Array): void {
    const u32 = (p: number): number =>
      (payload[p]! << 24 | payload[p + 1]! << 16 | payload[p + 2]! << 8 | payload[p + 3]!) >>> 0;
    switch (type) {
      case FrameType.DATA: {
        const s = this.#streams.get(id);
        s?.onData(payload);
        if ((flags & Flag.END_STREAM) !== 0) s?.onEnd(-1, "END_STREAM on DATA");
        return;
      }
      case FrameType.HEADERS:
      case FrameType.CONTINUATION: {
        if (type === FrameType.HEADERS) {
          this.#headerBlock = [];
          this.#headerStream = id;
          this.#headerEnd = (flags & Flag.END_STREAM) !== 0;
          let start = 0;
          let end = payload.length;
          if ((flags & Flag.PADDED) !== 0) {
            start = 1;
            end -= payload[0]!;
          }
          if ((flags & Flag.PRIORITY) !== 0) start += 5;
          this.#headerBlock.push(payload.slice(start, end));
        } else this.#headerBlock.push(payload.slice());
        if ((flags & Flag.END_HEADERS) === 0) return;
        const len = this.#headerBlock.reduce((n, b) => n + b.length, 0);
        const block = new Uint8Array(len);
        let off = 0;
        for (const b of this.#headerBlock) {
          block.set(b, off);
          off += b.length;
        }
        const fields = new Map(this.#decoder.decode(block).headers);
        const s = this.#streams.get(this.#headerStream);
        if (this.#headerEnd && s !== undefined) {
          this.#streams.delete(s.id);
          s.onEnd(Number(fields.get("grpc-status") ?? -1), fields.get("grpc-message") ?? "");
        }
        return;
      }
      case FrameType.RST_STREAM: {
        const s = this.#streams.get(id);
        this.#streams.delete(id);
        if (u32(0) !== 0) s?.onEnd(-1, `RST_STREAM ${u32(0)}`);
        return;
      }
      case FrameType.SETTINGS: {
        if ((flags & Flag.ACK) !== 0) return;
        for (let i = 0; i + 6 <= payload.length; i += 6) {
          if ((payload[i]! << 8 | payload[i + 1]!) === Setting.INITIAL_WINDOW_SIZE) {
            const value = u32(i + 2);
            for (const s of this.#streams.values()) s.sendWindow += value - this.#peerInitialWindow;
            this.#peerInitialWindow = value;
          }
        }
        this.#out.settingsAck();
        this.#queueFlush();
        return;
      }
      case FrameType.PING:
        if ((flags & Flag.ACK) === 0) {
          this.#out.ping(true, payload);
          this.#queueFlush();
        }
        return;
      case FrameType.WINDOW_UPDATE: {
        const inc = u32(0) & 0x7fffffff;
        if (id === 0) {
          this.#sendWindow += inc;
          for (const s of this.#streams.values()) this.#blocked.add(s);
        } else {
          const s = this.#streams.get(id);
          if (s !== undefined) {
            s.sendWindow += inc;
            this.#blocked.add(s);
          }
        }
        return;
      }
      case FrameType.GOAWAY:
        this.#fail(`GOAWAY ${u32(4)}`);
        return;
      default:
        return;
    }
  }
}

/** The generator's side of one Events stream. */
class H2ClientStream {
  id = 0;
  sendWindow = 0;
  #partial = new Uint8Array(0);
  onMessage: (message: Uint8Array) => void = () => {};
  onEnd: (code: number, details: string) => void = () => {};
  onWritable: () => void = () => {};

  /** Splits DATA payloads into gRPC messages (acks are small; a split one is joined). */
  onData(payload: Uint8Array): void {
    let b = payload;
    if (this.#partial.length > 0) {
      const joined = new Uint8Array(this.#partial.length + payload.length);
      joined.set(this.#partial);
      joined.set(payload, this.#partial.length);
      b = joined;
      this.#partial = new Uint8Array(0);
    }
    let p = 0;
    while (p + 5 <= b.length) {
      const n = (b[p + 1]! << 24 | b[p + 2]! << 16 | b[p + 3]! << 8 | b[p + 4]!) >>> 0;
      if (p + 5 + n > b.length) break;
      this.onMessage(b.subarray(p + 5, p + 5 + n));
      p += 5 + n;
    }
    if (p < b.length) this.#partial = b.slice(p);
  }
}

/** Frames a message (5-byte gRPC prefix). */
function framed(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

/** As {@linkcode runLoad}, on raw HTTP/2 connections (one per stream). */
async function runLoadH2(
  conns: H2Conn[],
  token: string,
  prefix: Uint8Array,
  perStream: Buffer[][],
  window: number,
  stopAt: number,
): Promise<LoadResult> {
  const run = new LoadRun(perStream);
  for (let s = 0; s < perStream.length; s++) {
    const events = perStream[s]!.map((b) => framed(b));
    const sendAt = new Float64Array(events.length);
    const ackedFlags = new Uint8Array(events.length);
    const conn = conns[s]!;
    const stream = new H2ClientStream();
    const ready = Promise.withResolvers<void>();
    const done = Promise.withResolvers<void>();
    run.readies.push(ready.promise);
    run.dones.push(done.promise);
    let next = 0;
    let ackedHere = 0;
    let started = false;
    let ended = false;
    const pump = (): void => {
      if (!started || ended) return;
      const limit = events.length;
      while (next < limit && next - ackedHere < window) {
        if ((next & 255) === 0 && performance.now() >= stopAt) break;
        const now = performance.now();
        if (!conn.send(stream, events[next]!)) break; // resumed by onWritable
        run.countSent(now);
        sendAt[next++] = now;
      }
      if (next >= limit || performance.now() >= stopAt) {
        ended = true;
        conn.end(stream);
      }
    };
    run.starts.push(() => {
      started = true;
      pump();
    });
    stream.onWritable = pump;
    stream.onMessage = (b: Uint8Array): void => {
      let seq = -1;
      if (b.length >= 18 && b[0] === 0x0a && b[1] === 16) {
        let same = ((b[12]! << 8) | b[13]!) === s;
        for (let i = 0; same && i < 10; i++) same = b[2 + i] === prefix[i];
        if (same) seq = (b[14]! << 24 | b[15]! << 16 | b[16]! << 8 | b[17]!) >>> 0;
      } else {
        const ack = decodeFlowEventAck(b);
        if (ack.isInitiator) {
          ready.resolve();
          return;
        }
      }
      if (!run.countAck(seq, next, sendAt, ackedFlags)) return;
      ackedHere++;
      pump();
    };
    stream.onEnd = (code: number, details: string): void => {
      if (code !== 0) run.errors.push(`stream ${s}: status ${code} ${decodeURIComponent(details)}`);
      ready.resolve();
      done.resolve();
    };
    conn.openStream([
      [":method", "POST"],
      [":scheme", "http"],
      [":path", EVENTS_METHOD],
      [":authority", "127.0.0.1"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
      ["authorization", `Bearer ${token}`],
    ], stream);
    // NetBird's client opens each stream with an initiator message.
    conn.send(
      stream,
      framed(encodeFlowEvent({
        eventId: new Uint8Array(0),
        publicKey: PUBLIC_KEY,
        isInitiator: true,
      })),
    );
  }
  return await run.finish();
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

// --- CPU profile of the receiver (--profile) ---------------------------------------------------

/** A minimal Chrome DevTools Protocol client: V8's sampling profiler of the receiver. */
class Profiler {
  #ws: WebSocket;
  #seq = 0;
  #pending = new Map<number, PromiseWithResolvers<unknown>>();

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (m: MessageEvent): void => {
      const msg = JSON.parse(String(m.data)) as { id?: number; result?: unknown; error?: unknown };
      const p = msg.id === undefined ? undefined : this.#pending.get(msg.id);
      if (p === undefined) return;
      this.#pending.delete(msg.id!);
      if (msg.error !== undefined) p.reject(new Error(JSON.stringify(msg.error)));
      else p.resolve(msg.result);
    };
  }

  static async connect(url: string, poke: () => Promise<unknown>): Promise<Profiler> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = (): void => resolve();
      ws.onerror = (): void => reject(new Error(`cannot connect to the inspector at ${url}`));
    });
    const p = new Profiler(ws);
    cleanups.push(() => p.close());
    await p.send("Profiler.enable", {}, poke);
    await p.send("Profiler.setSamplingInterval", { interval: 250 }, poke);
    return p;
  }

  /**
   * Sends a command and waits for its answer. Deno's inspector may leave a command unanswered
   * while the receiver's event loop sleeps: `poke` (a query API request) wakes it.
   */
  async send(
    method: string,
    params: Record<string, unknown> = {},
    poke?: () => Promise<unknown>,
  ): Promise<unknown> {
    const id = ++this.#seq;
    const p = Promise.withResolvers<unknown>();
    this.#pending.set(id, p);
    this.#ws.send(JSON.stringify({ id, method, params }));
    let answered = false;
    const deadline = Date.now() + 30_000;
    void p.promise.finally(() => answered = true).catch(() => {});
    while (!answered && poke !== undefined) {
      if (Date.now() > deadline) throw new Error(`inspector: no answer to ${method}`);
      await poke().catch(() => {});
      await new Promise((r) => setTimeout(r, 50));
    }
    return await p.promise;
  }

  close(): void {
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.close();
  }
}

interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  samples: number[];
  timeDeltas: number[];
}

/** Where the receiver's samples fall: by file group, and the top functions by self time. */
function summarizeProfile(profile: CpuProfile): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0) || 1;
  const group = (url: string, name: string): string => {
    if (url === "") return name.startsWith("(") ? name : "(native/builtin)";
    if (url.includes("@grpc/grpc-js")) return "grpc-js";
    if (url.includes("@redis/") || url.includes("/redis@")) return "node-redis";
    if (url.includes("/lib/flowapi/")) return url.replace(/^.*\/lib\/flowapi\//, "flowapi/");
    if (url.startsWith("node:") || url.includes("ext:")) return "Deno runtime / node compat";
    return url.replace(/^.*\/node_modules\/\.deno\/([^/]+)\/.*$/, "$1");
  };
  const groups = new Map<string, number>();
  const fns = new Map<string, number>();
  for (const [id, us] of self) {
    const f = byId.get(id)!.callFrame;
    const g = group(f.url, f.functionName);
    groups.set(g, (groups.get(g) ?? 0) + us);
    const key = `${f.functionName || "(anonymous)"} ${g}:${f.lineNumber + 1}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
  }
  const pct = (us: number): string => `${(100 * us / total).toFixed(1).padStart(5)} %`;
  const lines = [`  self time by module (${(total / 1e6).toFixed(2)} s sampled):`];
  for (const [g, us] of [...groups].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
    lines.push(`    ${pct(us)}  ${g}`);
  }
  lines.push("  top functions by self time:");
  for (const [f, us] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
    lines.push(`    ${pct(us)}  ${f}`);
  }
  return lines.join("\n");
}

// --- one store --------------------------------------------------------------------------------

interface StoreResult {
  store: string;
  eventsPerSecond: number;
  acked: number;
  sent: number;
  seconds: number;
  p50: number;
  p99: number;
  idleP50: number;
  idleP99: number;
  stored: number;
  receiverCpu: number;
  redisCpu: number;
  generatorCpu: number;
  /** CPU used by everything else on the machine meanwhile (other work skews the figures). */
  otherCpu: number;
  summary: string;
}

/** What the generator reports of one phase (one `PHASE name {json}` line on its stdout). */
interface PhaseReport {
  sent: number;
  acked: number;
  elapsedMs: number;
  p50: number;
  p99: number;
  duplicateAcks: number;
  strayAcks: number;
  errors: string[];
}

function report(r: LoadResult): PhaseReport {
  return {
    sent: r.sent,
    acked: r.acked,
    elapsedMs: r.elapsedMs,
    p50: percentile(r.latencies, 0.5),
    p99: percentile(r.latencies, 0.99),
    duplicateAcks: r.duplicateAcks,
    strayAcks: r.strayAcks,
    errors: r.errors,
  };
}

/**
 * The load generator (a child process of the benchmark, `--generate`): warm-up, then `READY` and
 * the load once stdin says `go`, then the idle-latency phase. It exits without closing its
 * connections: the kernel closes them, no GOAWAY is sent (see {@linkcode openClients}).
 */
async function generatorMain(): Promise<never> {
  const target = flags.target;
  const token = Deno.env.get("NBCT_BENCH_TOKEN");
  if (target === undefined || token === undefined) {
    throw new Error("--generate needs --target and NBCT_BENCH_TOKEN");
  }
  const stdin = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
  let run: (
    prefix: Uint8Array,
    perStream: Buffer[][],
    window: number,
    stopAt: number,
  ) => Promise<LoadResult>;
  if (GENERATOR === "grpc-js") {
    const channels = openClients(target, STREAMS);
    run = (prefix, perStream, window, stopAt) =>
      runLoad(channels.clients, token, prefix, perStream, window, stopAt);
  } else {
    const conns = await Promise.all(Array.from({ length: STREAMS }, () => H2Conn.open(target)));
    run = (prefix, perStream, window, stopAt) =>
      runLoadH2(conns, token, prefix, perStream, window, stopAt);
  }
  const phase = (): Uint8Array => crypto.getRandomValues(new Uint8Array(10));
  const say = (line: string): void => console.log(line);
  if (WARMUP > 0) {
    const prefix = phase();
    const ev = makeEvents(prefix, WARMUP, STREAMS);
    say(
      `PHASE warm-up ${JSON.stringify(report(await run(prefix, ev, WINDOW, Infinity)))}`,
    );
  }
  const prefix = phase();
  const ev = makeEvents(prefix, EVENTS, STREAMS);
  say("READY");
  let input = "";
  while (!input.includes("go\n")) {
    const { value, done } = await stdin.read();
    if (done) Deno.exit(1); // the benchmark went away
    input += value;
  }
  const t0 = performance.now();
  const stopAt = SECONDS > 0 ? t0 + SECONDS * 1000 : Infinity;
  const load = await run(prefix, ev, WINDOW, stopAt);
  say(`PHASE load ${JSON.stringify(report(load))}`);
  if (IDLE > 0) {
    const prefix = phase();
    const ev = makeEvents(prefix, IDLE, 1);
    say(
      `PHASE idle ${JSON.stringify(report(await run(prefix, ev, 1, Infinity)))}`,
    );
  }
  say("DONE");
  Deno.exit(0);
}

async function benchStore(
  label: string,
  store: string,
  secretFile: string,
  token: string,
  redis: Redis | undefined,
): Promise<StoreResult> {
  console.error(`bench: ${label}: starting the receiver`);
  const receiver = await Receiver.start(secretFile, store, PROFILE_DIR !== undefined);
  const profiler = PROFILE_DIR === undefined
    ? undefined
    : await Profiler.connect(await receiver.inspectorUrl(), () => receiver.totalRecords());
  const generator = new Child("load generator", Deno.execPath(), [
    "run",
    "--allow-all",
    import.meta.filename ?? new URL(import.meta.url).pathname,
    "--generate",
    "--target",
    receiver.target,
    "--events",
    String(EVENTS),
    "--streams",
    String(STREAMS),
    "--window",
    String(WINDOW),
    "--seconds",
    String(SECONDS),
    "--warmup",
    String(WARMUP),
    "--idle",
    String(IDLE),
    "--generator",
    GENERATOR,
  ], { NBCT_BENCH_TOKEN: token });
  let expected = 0;
  const phaseTimeout = (SECONDS > 0 ? SECONDS : MAX_SECONDS) * 1000 + 30_000;
  const result = async (what: string): Promise<PhaseReport> => {
    const m = await generator.waitFor(new RegExp(`^PHASE ${what} (.*)$`), phaseTimeout);
    const r = JSON.parse(m[1]!) as PhaseReport;
    if (r.errors.length > 0) {
      throw new Error(
        `${label} ${what}: ${r.errors.join("; ")}\nreceiver log:\n` +
          receiver.child.lines.slice(-20).join("\n"),
      );
    }
    if (r.duplicateAcks > 0 || r.strayAcks > 0) {
      throw new Error(`${label} ${what}: ${r.duplicateAcks} duplicate, ${r.strayAcks} stray acks`);
    }
    if (r.acked !== r.sent) {
      throw new Error(`${label} ${what}: ${r.sent} sent but ${r.acked} acked after a clean close`);
    }
    expected += r.acked;
    return r;
  };

  if (WARMUP > 0) await result("warm-up");
  await generator.waitFor(/^READY$/, 60_000);
  console.error(`bench: ${label}: ${EVENTS} events on ${STREAMS} streams, window ${WINDOW}`);
  await profiler?.send("Profiler.start", {}, () => receiver.totalRecords());
  const cpu0 = {
    machine: machineBusySeconds(),
    receiver: receiver.child.cpuSeconds(),
    redis: redis?.child.cpuSeconds() ?? NaN,
    generator: generator.cpuSeconds(),
    at: performance.now(),
  };
  await generator.writeLine("go");
  const load = await result("load");
  const wall = (performance.now() - cpu0.at) / 1000;
  const cpu = {
    receiver: (receiver.child.cpuSeconds() - cpu0.receiver) / wall,
    redis: redis === undefined ? NaN : (redis.child.cpuSeconds() - cpu0.redis) / wall,
    generator: (generator.cpuSeconds() - cpu0.generator) / wall,
    machine: (machineBusySeconds() - cpu0.machine) / wall,
  };
  if (profiler !== undefined) {
    const { profile } = await profiler.send("Profiler.stop", {}, () => receiver.totalRecords()) as {
      profile: CpuProfile;
    };
    const file = `${PROFILE_DIR}/receiver-${label}.cpuprofile`;
    await Deno.writeTextFile(file, JSON.stringify(profile));
    console.error(`bench: ${label}: receiver CPU profile of the load phase in ${file}`);
    console.error(summarizeProfile(profile));
    profiler.close();
  }
  const idle = IDLE > 0 ? await result("idle") : undefined;
  await generator.waitFor(/^DONE$/, 30_000);
  const status = await generator.stop(undefined, 10_000);
  if (status.code !== 0) {
    throw new Error(`the load generator exited with ${status.code}: ${generator.lines.slice(-5)}`);
  }

  // The store must hold exactly the acked events.
  const stored = await receiver.totalRecords();
  if (stored !== expected) {
    throw new Error(`${label}: the query API reports ${stored} events, ${expected} were acked`);
  }
  if (redis !== undefined) {
    const { zcard, keys } = await redis.count();
    if (zcard !== expected || keys !== expected) {
      throw new Error(
        `${label}: Redis holds ${zcard} index entries and ${keys} event keys, ${expected} were acked`,
      );
    }
  }
  const summary = await receiver.stop();
  return {
    store: label,
    eventsPerSecond: load.acked / (load.elapsedMs / 1000),
    acked: load.acked,
    sent: load.sent,
    seconds: load.elapsedMs / 1000,
    p50: load.p50,
    p99: load.p99,
    idleP50: idle?.p50 ?? NaN,
    idleP99: idle?.p99 ?? NaN,
    stored,
    receiverCpu: cpu.receiver,
    redisCpu: cpu.redis,
    generatorCpu: cpu.generator,
    // Per-process and machine ticks are read at slightly different times: ±3 % of noise.
    otherCpu: Math.max(
      0,
      cpu.machine - cpu.receiver - (Number.isNaN(cpu.redis) ? 0 : cpu.redis) - cpu.generator,
    ),
    summary,
  };
}

// --- main -----------------------------------------------------------------------------------------

const fmt = (n: number, digits = 0): string =>
  Number.isNaN(n)
    ? "-"
    : n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

async function main(): Promise<void> {
  for (const tool of ["redis-server", "redis-benchmark", "redis-cli"]) {
    try {
      await output(tool, ["--version"]);
    } catch {
      throw new Error(`${tool} not found (apt-get install redis-server redis-tools)`);
    }
  }
  const started = performance.now();
  const dir = await Deno.makeTempDir({ prefix: "netbird-ct-bench-collect-" });
  cleanups.push(() => Deno.remove(dir, { recursive: true }));
  const secret = new TextEncoder().encode(
    btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32)))),
  );
  const secretFile = `${dir}/secret`;
  await Deno.writeFile(secretFile, secret, { mode: 0o600 });
  const token = mintToken(secret, { ttlMs: 3_600_000 });

  const memory = await benchStore("memory", "memory", secretFile, token, undefined);

  console.error("bench: starting redis-server");
  const redis = await Redis.start(dir);
  cleanups.push(() => redis.cli("SHUTDOWN", "NOSAVE").then(() => {}, () => {}));
  const redisStore = await benchStore(
    "redis",
    `redis://127.0.0.1:${redis.port}/0`,
    secretFile,
    token,
    redis,
  );

  console.error("bench: redis-benchmark");
  await redis.cli("FLUSHALL");
  const setRate = await redis.benchmark(["-t", "set", "-n", "200000", "-P", "16", "-q"]);
  // The receiver's write per event, atomic like its MULTI: SET NX of an event-sized value, ZADD NX.
  const value = "x".repeat(700);
  const evalRate = await redis.benchmark([
    "-n",
    "100000",
    "-P",
    "16",
    "-r",
    "100000000",
    "-q",
    "EVAL",
    "redis.call('SET', KEYS[1], ARGV[1], 'NX') return redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[3])",
    "2",
    "bench:event:__rand_int__",
    "bench:by_time",
    value,
    "__rand_int__",
    "__rand_int__",
  ]);
  await redis.cli("FLUSHALL");

  const total = (performance.now() - started) / 1000;
  const ratio = redisStore.eventsPerSecond / setRate;
  const ratioEval = redisStore.eventsPerSecond / evalRate;
  console.log("");
  console.log(
    `netbird-ct collect ingest, ${STREAMS} streams x window ${WINDOW}, ${EVENTS} events per store ` +
      `(time box ${SECONDS} s), loopback h2c, generator ${GENERATOR}, ` +
      `${navigator.hardwareConcurrency} CPUs`,
  );
  const row = (cells: string[]): string => cells.join(" | ");
  console.log(row([
    "store  ",
    "events/s",
    " acked",
    "    s",
    "ack p50/p99 ms",
    "idle p50/p99 ms",
    "CPU receiver/redis/generator/other",
  ]));
  for (const r of [memory, redisStore]) {
    console.log(row([
      r.store.padEnd(7),
      fmt(r.eventsPerSecond).padStart(8),
      String(r.acked).padStart(6),
      fmt(r.seconds, 2).padStart(5),
      `${fmt(r.p50, 1)}/${fmt(r.p99, 1)}`.padEnd(14),
      `${fmt(r.idleP50, 2)}/${fmt(r.idleP99, 2)}`.padEnd(15),
      [r.receiverCpu, r.redisCpu, r.generatorCpu, r.otherCpu].map((c) => `${fmt(100 * c)}%`)
        .join("/"),
    ]));
  }
  console.log(`redis-benchmark SET -P 16:                      ${fmt(setRate)} requests/s`);
  console.log(`redis-benchmark EVAL SET NX 700 B + ZADD NX -P 16: ${fmt(evalRate)} requests/s`);
  console.log(
    `ratio receiver(redis) / redis-benchmark SET: ${fmt(100 * ratio, 1)} % (target ≥ 50 %: ${
      ratio >= 0.5 ? "met" : "missed"
    }); / EVAL equivalent: ${fmt(100 * ratioEval, 1)} %`,
  );
  console.log(
    `store check: memory ${memory.stored}, redis ${redisStore.stored} events = acked (ok)`,
  );
  console.log(`receiver summaries: memory: ${memory.summary}`);
  console.log(`                    redis:  ${redisStore.summary}`);
  console.log(`total ${fmt(total, 1)} s`);
  console.log(
    `RESULT memory_eps=${Math.round(memory.eventsPerSecond)} redis_eps=${
      Math.round(redisStore.eventsPerSecond)
    } redis_set_rps=${Math.round(setRate)} redis_eval_rps=${Math.round(evalRate)} ratio=${
      ratio.toFixed(4)
    } memory_p50_ms=${memory.p50.toFixed(2)} memory_p99_ms=${memory.p99.toFixed(2)} redis_p50_ms=${
      redisStore.p50.toFixed(2)
    } redis_p99_ms=${redisStore.p99.toFixed(2)} memory_idle_p50_ms=${memory.idleP50.toFixed(3)} ` +
      `redis_idle_p50_ms=${redisStore.idleP50.toFixed(3)} ` +
      `other_cpu_pct=${Math.round(100 * memory.otherCpu)},${Math.round(100 * redisStore.otherCpu)}`,
  );
}

if (flags.generate) await generatorMain();
const onSignal = (): void => void abort("interrupted", 130);
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);
const watchdog = setTimeout(
  () => void abort(`still running after ${MAX_SECONDS} s (--max-seconds)`, 1),
  MAX_SECONDS * 1000,
);
let code = 0;
try {
  await main();
} catch (err) {
  // After a signal or the watchdog, the failures that follow the cleanup are not news.
  if (!aborting) console.error(`bench: ${err instanceof Error ? err.message : err}`);
  code = 1;
} finally {
  clearTimeout(watchdog);
  await cleanup();
}
Deno.exit(code);
