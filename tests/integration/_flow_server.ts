/**
 * Real peers for the Flow API client tests: Python stubs generated from netbird-ct's FLOW_PROTO
 * with grpc_tools at test time, the Python FlowService receiver (`_flow_server.py`, grpcio)
 * driven over its stdin/stdout, and a throw-away `redis-server`. Each can run in the current
 * network namespace or inside an `ip netns` one.
 *
 * @module
 */

import { FLOW_PROTO } from "../../lib/flowapi/proto.ts";
import { check, inNetns, waitUntil } from "./_netns.ts";

/** The Python interpreter with python3-grpcio and python3-grpc-tools (Debian). */
export const PYTHON = "/usr/bin/python3";
const SERVER = decodeURIComponent(new URL("./_flow_server.py", import.meta.url).pathname);

/**
 * Writes FLOW_PROTO to a new temporary directory and generates `flow_pb2.py` and
 * `flow_pb2_grpc.py` there (`google/protobuf/timestamp.proto` comes with grpc_tools).
 *
 * @returns The directory; remove it when done.
 */
export async function buildStubs(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "nbct-flow-stubs-" });
  try {
    await Deno.writeTextFile(`${dir}/flow.proto`, FLOW_PROTO);
    await check([
      PYTHON,
      "-m",
      "grpc_tools.protoc",
      `-I${dir}`,
      `--python_out=${dir}`,
      `--grpc_python_out=${dir}`,
      "flow.proto",
    ]);
    return dir;
  } catch (err) {
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
}

/** A `Timestamp` as the server reports it: `[seconds, nanos]`, or `null` when unset. */
export type Ts = [number, number] | null;

/** A `FlowEvent` as the Python server decoded it (bytes as hex, uint64 as decimal text). */
export interface ServerEvent {
  /** Hex. */
  "event_id": string;
  /** When the event occurred. */
  timestamp: Ts;
  /** Hex. */
  "public_key": string;
  /** The initiator flag. */
  "is_initiator": boolean;
  /** Window start. */
  "window_start": Ts;
  /** Window end. */
  "window_end": Ts;
  /** `null` when the message has no flow_fields. */
  "flow_fields": {
    "flow_id": string;
    type: number;
    "rule_id": string;
    direction: number;
    protocol: number;
    "source_ip": string;
    "dest_ip": string;
    "connection_info": "port_info" | "icmp_info" | null;
    "port_info": [number, number] | null;
    "icmp_info": [number, number] | null;
    "rx_packets": string;
    "tx_packets": string;
    "rx_bytes": string;
    "tx_bytes": string;
    "source_resource_id": string;
    "dest_resource_id": string;
    "num_of_starts": string;
    "num_of_ends": string;
    "num_of_drops": string;
  } | null;
}

/** One line the server printed. */
export type ServerMessage =
  | { type: "listening"; port: number }
  | { type: "stream"; stream: number; metadata: [string, string][] }
  | { type: "event"; stream: number; event: ServerEvent }
  | { type: "closed"; stream: number }
  | { type: "ok"; cmd: string };

/** Options of {@linkcode FlowServer.start}. */
export interface FlowServerOptions {
  /** From {@linkcode buildStubs}. */
  stubs: string;
  /** Port on 127.0.0.1 (default 0: any free one). */
  port?: number;
  /** Run inside this `ip netns` namespace. */
  netns?: string;
  /** Serve TLS with this PEM certificate and key. */
  tls?: { cert: string; key: string };
}

/** The Python FlowService receiver; dispose it to kill it. */
export class FlowServer implements AsyncDisposable {
  /** Every line printed, parsed, in order. */
  readonly messages: ServerMessage[] = [];
  /** Its stderr so far. */
  stderr = "";
  /** The port it listens on. */
  port = 0;
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #pumps: Promise<void>;
  #status: Promise<Deno.CommandStatus>;
  #exited: Deno.CommandStatus | undefined;

  private constructor(args: string[]) {
    const [cmd, ...rest] = args;
    this.#child = new Deno.Command(cmd!, {
      args: rest,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdin = this.#child.stdin.getWriter();
    this.#status = this.#child.status.then((s) => this.#exited = s);
    this.#pumps = Promise.all([this.#readLines(), this.#readStderr()]).then(() => {});
  }

  /**
   * Starts the server and waits until it listens.
   *
   * @param options Stubs, port, namespace, TLS.
   * @returns The running server.
   */
  static async start(options: FlowServerOptions): Promise<FlowServer> {
    const argv = [PYTHON, SERVER, options.stubs, String(options.port ?? 0)];
    if (options.tls !== undefined) argv.push(options.tls.cert, options.tls.key);
    const server = new FlowServer(
      options.netns === undefined ? argv : inNetns(options.netns, argv),
    );
    try {
      await server.waitFor("listening", () => server.messages.some((m) => m.type === "listening"));
    } catch (err) {
      await server[Symbol.asyncDispose]();
      throw err;
    }
    const m = server.messages.find((m) => m.type === "listening");
    server.port = m?.type === "listening" ? m.port : 0;
    return server;
  }

  async #readLines(): Promise<void> {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of this.#child.stdout) {
      buf += dec.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim() !== "") this.messages.push(JSON.parse(line) as ServerMessage);
      }
    }
  }

  async #readStderr(): Promise<void> {
    const dec = new TextDecoder();
    for await (const chunk of this.#child.stderr) {
      this.stderr += dec.decode(chunk, { stream: true });
    }
  }

  /** Every event received (initiators included), in order. */
  get received(): ServerEvent[] {
    return this.messages.flatMap((m) => m.type === "event" ? [m.event] : []);
  }

  /** Non-initiator events received, in order. */
  get events(): ServerEvent[] {
    return this.received.filter((e) => !e.is_initiator);
  }

  /** Streams opened, with their metadata. */
  get streams(): { stream: number; metadata: [string, string][] }[] {
    return this.messages.flatMap((m) => m.type === "stream" ? [m] : []);
  }

  /**
   * The messages of one stream, in order.
   *
   * @param stream Stream number (1-based, in order of opening).
   * @returns Its events (initiator included).
   */
  streamEvents(stream: number): ServerEvent[] {
    return this.messages.flatMap((m) => m.type === "event" && m.stream === stream ? [m.event] : []);
  }

  /**
   * Waits for a condition on what the server printed.
   *
   * @param what For the timeout message.
   * @param cond The condition.
   * @param timeoutMs Deadline.
   */
  async waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
    await waitUntil(() => `${what} (server stderr: ${this.stderr})`, () => {
      if (cond()) return true;
      if (this.#exited !== undefined) {
        throw new Error(
          `flow server exited ${this.#exited.code} waiting for ${what}: ${this.stderr}`,
        );
      }
      return false;
    }, timeoutMs);
  }

  /**
   * Sends a command and waits until the server confirms it.
   *
   * @param cmd `auto_ack` (with `on`), `ack` (with `ids`), `drop`.
   */
  async command(cmd: { cmd: string } & Record<string, unknown>): Promise<void> {
    const before = this.messages.filter((m) => m.type === "ok" && m.cmd === cmd.cmd).length;
    await this.#stdin.write(new TextEncoder().encode(JSON.stringify(cmd) + "\n"));
    await this.waitFor(
      `ok for ${cmd.cmd}`,
      () => this.messages.filter((m) => m.type === "ok" && m.cmd === cmd.cmd).length > before,
    );
  }

  /** Kills it (SIGKILL: a crashed or restarted receiver) and waits for the exit. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#exited === undefined) {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
    await this.#status;
    await this.#stdin.close().catch(() => {});
    await this.#pumps;
  }
}

/**
 * A free TCP port on 127.0.0.1 (of the current namespace).
 *
 * @returns The port.
 */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A `redis-server` without persistence; dispose it to kill it. */
export class RedisServer implements AsyncDisposable {
  /** Its port on 127.0.0.1. */
  readonly port: number;
  /** Namespace, if any. */
  readonly netns: string | undefined;
  #child: Deno.ChildProcess;

  private constructor(port: number, netns: string | undefined) {
    this.port = port;
    this.netns = netns;
    const argv = [
      "redis-server",
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
    ];
    const [cmd, ...args] = netns === undefined ? argv : inNetns(netns, argv);
    this.#child = new Deno.Command(cmd!, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
  }

  /**
   * Starts a server and waits until it answers PING.
   *
   * @param options Port (default: a free one; give one inside a namespace) and namespace.
   * @returns The server.
   */
  static async start(options: { port?: number; netns?: string } = {}): Promise<RedisServer> {
    const r = new RedisServer(options.port ?? freePort(), options.netns);
    try {
      await waitUntil(
        "redis-server to answer PING",
        async () => {
          try {
            return (await r.cli("PING")).trim() === "PONG";
          } catch {
            return false;
          }
        },
        10_000,
        50,
      );
    } catch (err) {
      await r[Symbol.asyncDispose]();
      throw err;
    }
    return r;
  }

  /** `redis://127.0.0.1:PORT/DB`. */
  url(db = 0): string {
    return `redis://127.0.0.1:${this.port}/${db}`;
  }

  /**
   * Runs `redis-cli -p PORT ARGS...`.
   *
   * @param args Command and arguments.
   * @returns Its output.
   */
  cli(...args: string[]): Promise<string> {
    const argv = ["redis-cli", "-p", String(this.port), ...args];
    return check(this.netns === undefined ? argv : inNetns(this.netns, argv));
  }

  /** Kills it and waits for the exit. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await this.#child.status;
  }
}
