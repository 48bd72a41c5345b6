// deno-lint-ignore-file camelcase -- the JSON of _flow_client.py and of the query API is snake_case
/**
 * Helpers of the `netbird-ct collect` integration tests: real peers started by the tests. A
 * Python gRPC sender (`_flow_client.py`, stubs generated from FLOW_PROTO with grpc_tools), the
 * receiver as a subprocess (`deno run -A main.ts collect`), and a throwaway `redis-server`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { FLOW_PROTO } from "../../lib/flowapi/proto.ts";

/** The Python with grpcio and grpc_tools (Debian: python3-grpcio, python3-grpc-tools). */
export const PYTHON = "/usr/bin/python3";
/** The repository root, with a trailing slash. */
export const ROOT: string = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const CLIENT = `${ROOT}tests/integration/_flow_client.py`;

// --- lines from a child process ------------------------------------------------------------

/** Collects the lines of a stream as they arrive, and lets a test wait for one. */
export class Lines {
  /** Every line so far. */
  readonly lines: string[] = [];
  /** Resolves when the stream has ended. */
  readonly done: Promise<void>;
  #ended = false;
  #waiters = new Set<() => void>();

  /**
   * Starts reading.
   *
   * @param stream The child's stdout or stderr.
   */
  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
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
      this.#ended = true;
      this.#notify();
    })();
  }

  #notify(): void {
    for (const w of this.#waiters) w();
  }

  /**
   * Waits until `find` returns something for the lines so far.
   *
   * @param find Looks at every line so far; `undefined` = keep waiting.
   * @param timeoutMs How long to wait.
   * @param what For the failure message.
   * @returns What `find` returned.
   */
  async waitFor<T>(
    find: (lines: string[]) => T | undefined,
    timeoutMs: number,
    what: string,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = find(this.lines);
      if (found !== undefined) return found;
      const left = deadline - Date.now();
      if (this.#ended || left <= 0) {
        throw new Error(
          `${
            this.#ended ? "Stream ended" : `Timed out after ${timeoutMs} ms`
          } waiting for ${what}; ` +
            `lines:\n${this.lines.slice(-30).join("\n")}`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      let wake: () => void = () => {};
      await new Promise<void>((resolve) => {
        wake = resolve;
        this.#waiters.add(wake);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#waiters.delete(wake);
    }
  }

  /**
   * Waits for a line matching a regular expression.
   *
   * @param re The pattern.
   * @param timeoutMs How long to wait.
   * @returns The match.
   */
  waitForMatch(re: RegExp, timeoutMs = 10_000): Promise<RegExpExecArray> {
    return this.waitFor(
      (lines) => {
        for (const line of lines) {
          const m = re.exec(line);
          if (m !== null) return m;
        }
        return undefined;
      },
      timeoutMs,
      String(re),
    );
  }
}

// --- Python stubs and sender ------------------------------------------------------------------

let stubs: Promise<string> | undefined;

/**
 * Generates `flow_pb2.py` and `flow_pb2_grpc.py` from FLOW_PROTO into a temporary directory
 * (once per test process).
 *
 * @returns The directory.
 */
export function pythonStubs(): Promise<string> {
  stubs ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "netbird-ct-collect-stubs-" });
    await Deno.writeTextFile(`${dir}/flow.proto`, FLOW_PROTO);
    const out = await new Deno.Command(PYTHON, {
      args: [
        "-m",
        "grpc_tools.protoc",
        `-I${dir}`,
        `--python_out=${dir}`,
        `--grpc_python_out=${dir}`,
        `${dir}/flow.proto`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(
      out.success,
      `grpc_tools.protoc failed (needs python3-grpc-tools): ${
        new TextDecoder().decode(out.stderr)
      }`,
    );
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch { /* already gone */ }
    });
    return dir;
  })();
  return stubs;
}

/** A `FlowEvent` as `_flow_client.py` takes it (see its docstring). */
export interface PyEvent {
  /** 32 hex digits. */
  event_id: string;
  /** [seconds, nanos]. */
  timestamp?: [number, number] | null;
  /** Hex. */
  public_key?: string;
  /** The client's initiator flag. */
  is_initiator?: boolean;
  /** [seconds, nanos]. */
  window_start?: [number, number] | null;
  /** [seconds, nanos]. */
  window_end?: [number, number] | null;
  /** The flow, or null for none. */
  flow_fields?: PyFlowFields | null;
}

/** `FlowFields` as `_flow_client.py` takes it. */
export interface PyFlowFields {
  flow_id?: string;
  type?: number;
  rule_id?: string;
  direction?: number;
  protocol?: number;
  source_ip?: string;
  dest_ip?: string;
  port_info?: [number, number] | null;
  icmp_info?: [number, number] | null;
  rx_packets?: string;
  tx_packets?: string;
  rx_bytes?: string;
  tx_bytes?: string;
  source_resource_id?: string;
  dest_resource_id?: string;
  num_of_starts?: string;
  num_of_ends?: string;
  num_of_drops?: string;
}

/** One line of `_flow_client.py`'s output. */
export type PyMessage =
  | { type: "sent"; n: number }
  | { type: "ack"; event_id: string; is_initiator: boolean }
  | { type: "status"; code: number; details: string };

/** Options of {@linkcode PyClient.start}. */
export interface PyClientOptions {
  /** The full `authorization` metadata value, e.g. `Bearer <token>`. */
  authorization?: string;
  /** Trust this PEM CA and use TLS. */
  caFile?: string;
  /** Do not send the initiator message first. */
  noInitiator?: boolean;
}

/** A Python sender with one open Events stream. */
export class PyClient implements AsyncDisposable {
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #stdinClosed = false;
  /** Its stdout. */
  readonly out: Lines;
  /** Its stderr. */
  readonly err: Lines;

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#stdin = child.stdin.getWriter();
    this.out = new Lines(child.stdout);
    this.err = new Lines(child.stderr);
  }

  /**
   * Starts a sender.
   *
   * @param target `host:port`.
   * @param options Authorization, TLS.
   * @returns The sender.
   */
  static async start(target: string, options: PyClientOptions = {}): Promise<PyClient> {
    const args = [CLIENT, await pythonStubs(), target];
    if (options.authorization !== undefined) args.push("--authorization", options.authorization);
    if (options.caFile !== undefined) args.push("--ca-file", options.caFile);
    if (options.noInitiator) args.push("--no-initiator");
    const child = new Deno.Command(PYTHON, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { PYTHONUNBUFFERED: "1" },
    }).spawn();
    return new PyClient(child);
  }

  /** Parsed output lines so far. */
  messages(): PyMessage[] {
    return this.out.lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  }

  /** Event IDs (hex) acked so far, in order, initiator acks excluded. */
  acks(): string[] {
    return this.messages().flatMap((m) => m.type === "ack" && !m.is_initiator ? [m.event_id] : []);
  }

  async #write(cmd: unknown): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(JSON.stringify(cmd) + "\n"));
  }

  /**
   * Sends events.
   *
   * @param events The events.
   */
  async send(...events: PyEvent[]): Promise<void> {
    for (const event of events) await this.#write({ cmd: "send", event });
  }

  /**
   * Sends raw bytes as one message.
   *
   * @param hex The bytes.
   */
  async raw(hex: string): Promise<void> {
    await this.#write({ cmd: "raw", hex });
  }

  /**
   * Waits until every given event ID has been acked at least once.
   *
   * @param ids Hex event IDs.
   * @param timeoutMs How long to wait.
   */
  async waitForAcks(ids: readonly string[], timeoutMs = 10_000): Promise<void> {
    await this.out.waitFor(
      () => {
        const acked = new Set(this.acks());
        return ids.every((id) => acked.has(id)) ? true : undefined;
      },
      timeoutMs,
      `acks of ${ids.join(", ")}`,
    );
  }

  /**
   * Waits for the stream's end.
   *
   * @param timeoutMs How long to wait.
   * @returns The gRPC status.
   */
  status(timeoutMs = 10_000): Promise<{ code: number; details: string }> {
    return this.out.waitFor(
      (lines) => {
        for (const l of lines) {
          if (!l.startsWith("{")) continue;
          const m = JSON.parse(l) as PyMessage;
          if (m.type === "status") return { code: m.code, details: m.details };
        }
        return undefined;
      },
      timeoutMs,
      "the stream's status",
    );
  }

  /** Half-closes the stream (the receiver then ends it with OK once everything is acked). */
  async close(): Promise<void> {
    if (this.#stdinClosed) return;
    this.#stdinClosed = true;
    await this.#write({ cmd: "close" }).catch(() => {});
    await this.#stdin.close().catch(() => {});
  }

  /** Ends the sender and waits for it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      this.#child.status.then(() => true),
      new Promise<boolean>((r) => timer = setTimeout(() => r(false), 5000)),
    ]);
    clearTimeout(timer);
    if (!exited) {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* exited meanwhile */ }
      await this.#child.status;
    }
    await Promise.all([this.out.done, this.err.done]);
  }
}

// --- the receiver -----------------------------------------------------------------------------

/** A `netbird-ct collect` subprocess. */
export class Collect implements AsyncDisposable {
  #child: Deno.ChildProcess;
  #exit: Promise<Deno.CommandStatus>;
  #hasExited = false;
  /** Its stderr (the log). */
  readonly log: Lines;
  #stdout: Lines;
  /** `127.0.0.1:PORT` of the gRPC listener. */
  target = "";
  /** `http://127.0.0.1:PORT` of the query API. */
  httpBase = "";

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#exit = child.status.then((s) => {
      this.#hasExited = true;
      return s;
    });
    this.log = new Lines(child.stderr);
    this.#stdout = new Lines(child.stdout);
  }

  /**
   * Starts `main.ts collect` on free ports and waits until it listens.
   *
   * @param args Extra arguments (at least `--token-secret-file`).
   * @returns The running receiver.
   */
  static async start(args: readonly string[]): Promise<Collect> {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${ROOT}main.ts`,
        "collect",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--stats-interval",
        "0",
        ...args,
      ],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const c = new Collect(child);
    const m = await c.log.waitForMatch(
      /Receiving flow events on ([0-9.]+:[0-9]+) .* query API (http:\/\/[0-9.]+:[0-9]+)\//,
      20_000,
    );
    c.target = m[1]!;
    c.httpBase = m[2]!;
    return c;
  }

  /**
   * Starts `main.ts collect` expecting it to fail at startup.
   *
   * @param args Arguments after `collect`.
   * @returns Exit code and stderr.
   */
  static async fail(args: readonly string[]): Promise<{ code: number; stderr: string }> {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}main.ts`, "collect", ...args],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  }

  /** Whether the process has exited. */
  get exited(): boolean {
    return this.#hasExited;
  }

  /**
   * Sends a signal and waits for the exit.
   *
   * @param signal The signal.
   * @returns The exit code and the whole log.
   */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<{ code: number; log: string }> {
    try {
      this.#child.kill(signal);
    } catch { /* already exited */ }
    const status = await this.#exit;
    await Promise.all([this.log.done, this.#stdout.done]);
    return { code: status.code, log: this.log.lines.join("\n") };
  }

  /**
   * `GET /api/events/network-traffic?QUERY`, counters parsed exactly (as decimal strings).
   *
   * @param query The query string.
   * @returns Status and parsed body.
   */
  async query(query = ""): Promise<{ status: number; body: QueryBody }> {
    const res = await fetch(`${this.httpBase}/api/events/network-traffic?${query}`);
    const text = await res.text();
    return { status: res.status, body: parseExact(text) as QueryBody };
  }

  /** Kills the process if a test left it running. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#hasExited) await this.stop("SIGKILL");
    await Promise.all([this.log.done, this.#stdout.done]);
  }
}

/** The query API's answer (or `{message}` on errors). */
export interface QueryBody {
  /** Events. */
  data: Record<string, unknown>[];
  /** Page. */
  page: number;
  /** Page size. */
  page_size: number;
  /** Matches. */
  total_records: number;
  /** Pages. */
  total_pages: number;
  /** Error message. */
  message?: string;
}

const COUNTERS = new Set([
  "rx_packets",
  "tx_packets",
  "rx_bytes",
  "tx_bytes",
  "num_of_starts",
  "num_of_ends",
  "num_of_drops",
]);

/**
 * `JSON.parse` keeping every digit of uint64 counters (as decimal strings).
 *
 * @param text JSON.
 * @returns The value.
 */
export function parseExact(text: string): unknown {
  // The reviver's third argument (the source text) is in V8 but not yet in TypeScript's lib.
  const reviver = (key: string, value: unknown, context?: { source?: string }): unknown =>
    COUNTERS.has(key) && typeof value === "number" ? context?.source ?? String(value) : value;
  return JSON.parse(text, reviver as (key: string, value: unknown) => unknown);
}

// --- Redis ------------------------------------------------------------------------------------

/**
 * A free TCP port on 127.0.0.1 (free when asked; good enough for a test).
 *
 * @returns The port.
 */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A throwaway `redis-server` without persistence on 127.0.0.1. */
export class RedisServer implements AsyncDisposable {
  /** Its port. */
  readonly port: number;
  #child: Deno.ChildProcess | undefined;

  /**
   * Creates the server (not started).
   *
   * @param port The port (default: a free one).
   */
  constructor(port = freePort()) {
    this.port = port;
  }

  /** `redis://127.0.0.1:PORT/DB`. */
  url(db = 0): string {
    return `redis://127.0.0.1:${this.port}/${db}`;
  }

  /** Starts it and waits until it answers PING. */
  async start(): Promise<void> {
    assert.equal(this.#child, undefined, "already running");
    this.#child = new Deno.Command("redis-server", {
      args: [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const deadline = Date.now() + 10_000;
    while ((await this.cli("PING")).trim() !== "PONG") {
      if (Date.now() > deadline) throw new Error(`redis-server on ${this.port} did not start`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Kills it (SIGKILL: an outage, not a shutdown) and waits for the exit. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    this.#child = undefined;
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
  }

  /**
   * Runs `redis-cli -p PORT ARGS`.
   *
   * @param args The command.
   * @returns Its stdout (empty when the server is down).
   */
  async cli(...args: string[]): Promise<string> {
    const out = await new Deno.Command("redis-cli", {
      args: ["-p", String(this.port), ...args],
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(out.stdout);
  }

  /** Stops it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

// --- events -----------------------------------------------------------------------------------

/**
 * A 16-byte ID as 32 hex digits, from a number.
 *
 * @param n The number.
 * @param prefix Up to 8 hex digits in front (to tell test runs apart).
 * @returns The hex.
 */
export function hexId(n: number, prefix = "0a0b0c0d"): string {
  return prefix.padEnd(8, "0") + "00004000" + "8000" + n.toString(16).padStart(12, "0");
}

/**
 * The UUID text of a 32-hex-digit ID.
 *
 * @param hex The ID.
 * @returns `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
 */
export function uuidOf(hex: string): string {
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
    hex.slice(20)
  }`;
}

/**
 * Base64 of hex bytes.
 *
 * @param hex The bytes.
 * @returns Standard base64.
 */
export function base64OfHex(hex: string): string {
  let s = "";
  for (let i = 0; i < hex.length; i += 2) {
    s += String.fromCharCode(parseInt(hex.slice(i, i + 2), 16));
  }
  return btoa(s);
}

/**
 * Text of hex bytes (resource and rule IDs are text in the API).
 *
 * @param hex The bytes.
 * @returns UTF-8 text.
 */
export function textOfHex(hex: string): string {
  const b = new Uint8Array(hex.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return new TextDecoder().decode(b);
}

/**
 * Hex of text.
 *
 * @param text The text.
 * @returns UTF-8 bytes as hex.
 */
export function hexOfText(text: string): string {
  return [...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * A simple TCP start event.
 *
 * @param n Event number.
 * @param over Overrides.
 * @returns The event.
 */
export function tcpEvent(n: number, over: Partial<PyEvent> = {}): PyEvent {
  return {
    event_id: hexId(n),
    timestamp: [1_790_000_000 + n, 0],
    public_key: "07".repeat(32),
    flow_fields: {
      flow_id: hexId(n, "f1"),
      type: 1,
      direction: 2,
      protocol: 6,
      source_ip: "100.64.0.1",
      dest_ip: "100.64.0.2",
      port_info: [40000 + (n % 20000), 443],
      rx_packets: "1",
      tx_packets: "1",
      rx_bytes: "60",
      tx_bytes: "60",
    },
    ...over,
  };
}
