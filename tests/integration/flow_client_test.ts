/**
 * The Flow API client against real peers: a Python grpcio FlowService receiver built from
 * FLOW_PROTO at test time (`_flow_server.py`), a throw-away redis-server, and, as root, the CLI
 * end to end in a network namespace. Checks field by field what Python decoded against the
 * records, the initiator message and the authorization metadata, resends with the same event_id
 * until acked, reconnects after stream drops and server restarts, TLS, and that un-acked events
 * survive a restart of the client with the Redis store.
 *
 * Run: `deno task test:kernel`, or `deno test --allow-all tests/integration/flow_client_test.ts`
 * (only the CLI test needs root; the others need python3-grpcio, python3-grpc-tools and
 * redis-server).
 */

import assert from "node:assert/strict";
import { FlowClient, type FlowClientOptions } from "../../lib/flowapi/client.ts";
import {
  CONNECTION_PREFACE,
  ErrorCode,
  Flag,
  FrameReader,
  FrameType,
  OutBuffer,
} from "../../lib/flowapi/h2/frames.ts";
import { HpackDecoder, HpackEncoder } from "../../lib/flowapi/h2/hpack.ts";
import { decodeFlowEvent, encodeFlowEventAck } from "../../lib/flowapi/proto.ts";
import { FlowReceiver } from "../../lib/flowapi/server.ts";
import { MemoryEventStore } from "../../lib/flowapi/store.ts";
import { mintToken } from "../../lib/flowapi/token.ts";
import { RedisUnackedStore } from "../../lib/flowapi/unacked.ts";
import { parseIp } from "../../lib/net.ts";
import type { FlowRecord, WindowFields } from "../../lib/record.ts";
import { windowRecord } from "../_fakes/fake_flow_transport.ts";
import { grpcMessage, selfSignedCert } from "../flowapi/_h2.ts";
import { buildStubs, FlowServer, freePort, RedisServer, type ServerEvent } from "./_flow_server.ts";
import { ADDR, createNetnsPair, Proc, waitUntil } from "./_netns.ts";
import {
  ignore,
  interrupt,
  OVERLAY_FLAGS,
  parseSummary,
  peer,
  ping,
  readRecords,
  READY,
  type RecordLine,
  ROOT,
  startCli,
  type Summary,
} from "./_cli.ts";

// ---------------------------------------------------------------------------------------------
// Helpers.

let stubsDir: Promise<string> | undefined;
/** The generated Python stubs, built once per test run. */
function stubs(): Promise<string> {
  stubsDir ??= buildStubs().then((dir) => {
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    return dir;
  });
  return stubsDir;
}

const KEY = Uint8Array.from({ length: 32 }, (_, i) => 0xa0 + i);
const KEY_B64 = btoa(String.fromCharCode(...KEY));
const TOKEN = "c2lnbmF0dXJl.1767225600";

const hex = (b: Uint8Array): string =>
  Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const uuidHex = (u: string): string => u.replaceAll("-", "");

/** A client on the Python server with fast, test-sized timings; dispose or close it. */
function client(port: number, options: Partial<FlowClientOptions> = {}): FlowClient {
  const c = new FlowClient({
    url: `http://127.0.0.1:${port}`,
    token: TOKEN,
    publicKey: KEY,
    intervalMs: 2000, // backoffs capped at 1 s
    retryIntervalMs: 50,
    graceMs: 150,
    reconnectInitialMs: 50,
    ...options,
  });
  return c;
}

/**
 * Waits out grpc-js's subchannel backoff timer: after a failed connection attempt it runs for
 * ~100 ms (the dialer's setting) and `Client.close()` does not cancel it (it is unref'd, so it
 * never keeps a process alive, but the test sanitizer sees it).
 */
function grpcTimersSettled(): Promise<void> {
  return new Promise((r) => setTimeout(r, 250));
}

function ts(d: Date): [number, number] {
  const ms = d.getTime();
  const s = Math.floor(ms / 1000);
  return [s, (ms - s * 1000) * 1_000_000];
}

const DIRECTION = { unknown: 0, ingress: 1, egress: 2 } as const;

/**
 * What the receiver must decode for a record, written from the record and the flow.proto
 * contract (NetBird's toProto): IPs as 4 or 16 bytes, ICMP info for ICMP/ICMPv6 and port info
 * for every other protocol, type UNKNOWN for aggregates, uint64 counters.
 */
function expected(r: FlowRecord, sourceIpHex: string, destIpHex: string): ServerEvent {
  const icmp = r.protocol === 1 || r.protocol === 58;
  const w = r.window!;
  return {
    event_id: uuidHex(r.eventId),
    timestamp: ts(r.timestamp),
    public_key: hex(KEY),
    is_initiator: false,
    window_start: ts(w.windowStart),
    window_end: ts(w.windowEnd),
    flow_fields: {
      flow_id: uuidHex(r.flowId),
      type: 0,
      rule_id: hex(new TextEncoder().encode(r.ruleId ?? "")),
      direction: DIRECTION[r.direction],
      protocol: r.protocol,
      source_ip: sourceIpHex,
      dest_ip: destIpHex,
      connection_info: icmp ? "icmp_info" : "port_info",
      port_info: icmp ? null : [r.sourcePort, r.destPort],
      icmp_info: icmp ? [r.icmpType, r.icmpCode] : null,
      rx_packets: String(r.rxPackets),
      tx_packets: String(r.txPackets),
      rx_bytes: String(r.rxBytes),
      tx_bytes: String(r.txBytes),
      source_resource_id: r.sourceResourceId ?? "",
      dest_resource_id: r.destResourceId ?? "",
      num_of_starts: String(w.numOfStarts),
      num_of_ends: String(w.numOfEnds),
      num_of_drops: String(w.numOfDrops),
    },
  };
}

/** Records of every shape, with their addresses as bytes written out by hand. */
function corpus(): { record: FlowRecord; src: string; dst: string }[] {
  const at = new Date(Date.UTC(2026, 4, 6, 7, 8, 9, 123));
  const win = (starts: number, ends: number, drops: number): WindowFields => ({
    windowStart: new Date(Date.UTC(2026, 4, 6, 7, 7, 0, 5)),
    windowEnd: new Date(Date.UTC(2026, 4, 6, 7, 8, 0, 999)),
    numOfStarts: starts,
    numOfEnds: ends,
    numOfDrops: drops,
    numOfUpdates: 0,
  });
  return [
    {
      // TCP over IPv4, egress, with resource IDs.
      record: windowRecord({
        timestamp: at,
        direction: "egress",
        protocol: 6,
        sourceIp: "100.64.0.1",
        destIp: "192.0.2.10",
        sourcePort: 43512,
        destPort: 443,
        rxPackets: 12n,
        txPackets: 10n,
        rxBytes: 9000n,
        txBytes: 1200n,
        sourceResourceId: null,
        destResourceId: "web-servers",
        window: win(2, 1, 0),
      }),
      src: "64400001",
      dst: "c000020a",
    },
    {
      // UDP over IPv6, ingress.
      record: windowRecord({
        direction: "ingress",
        protocol: 17,
        sourceIp: "fd00:64::2",
        destIp: "fd00:64::1",
        sourcePort: 5000,
        destPort: 6000,
        rxPackets: 1n,
        txPackets: 1n,
        rxBytes: 29n,
        txBytes: 29n,
        window: win(1, 1, 0),
      }),
      src: "fd000064000000000000000000000002",
      dst: "fd000064000000000000000000000001",
    },
    {
      // ICMP echo: icmp_info, no port_info.
      record: windowRecord({
        protocol: 1,
        sourceIp: "100.64.0.1",
        destIp: "100.64.0.2",
        sourcePort: 0,
        destPort: 0,
        icmpType: 8,
        icmpCode: 0,
        window: win(1, 0, 0),
      }),
      src: "64400001",
      dst: "64400002",
    },
    {
      // ICMPv6 destination unreachable (type 1 code 4), direction unknown.
      record: windowRecord({
        direction: "unknown",
        protocol: 58,
        sourceIp: "fd00:64::1",
        destIp: "fd00:64::2",
        sourcePort: 0,
        destPort: 0,
        icmpType: 1,
        icmpCode: 4,
        window: win(0, 1, 0),
      }),
      src: "fd000064000000000000000000000001",
      dst: "fd000064000000000000000000000002",
    },
    {
      // SCTP: port info. IPv4-mapped IPv6 stays 16 bytes. Counters beyond 2^53.
      record: windowRecord({
        protocol: 132,
        sourceIp: "::ffff:100.64.0.9",
        destIp: "fd00:64::2",
        sourcePort: 36412,
        destPort: 38412,
        rxPackets: 2n ** 64n - 1n,
        txPackets: 2n ** 53n + 1n,
        rxBytes: 2n ** 63n,
        txBytes: 0n,
        window: win(3, 3, 2),
        // The window merged drops: it keeps their rule ID (here an NFLOG prefix).
        ruleId: "rule-ssh-deny",
      }),
      src: "00000000000000000000ffff64400009",
      dst: "fd000064000000000000000000000002",
    },
    {
      // GRE has no ports: still port info, both 0 (NetBird: every protocol but ICMP).
      record: windowRecord({
        protocol: 47,
        sourcePort: 0,
        destPort: 0,
        sourceResourceId: "src-res",
        destResourceId: null,
      }),
      src: "64400001",
      dst: "64400002",
    },
  ];
}

/** Events received for an event ID (hex). */
function copies(server: FlowServer, eventIdHex: string): ServerEvent[] {
  return server.events.filter((e) => e.event_id === eventIdHex);
}

// ---------------------------------------------------------------------------------------------
// Against the Python receiver.

Deno.test("FlowClient's events reach a Python grpcio receiver field by field, after the initiator and with the token", async () => {
  await using server = await FlowServer.start({ stubs: await stubs() });
  const c = client(server.port);
  c.start();
  const cases = corpus();
  c.write(cases.map((x) => x.record));
  await server.waitFor("every event", () => server.events.length >= cases.length);
  await waitUntil("acks", () => c.stats().acked === cases.length);
  const s = await c.close();

  assert.equal(server.streams.length, 1);
  const metadata = Object.fromEntries(server.streams[0]!.metadata);
  assert.equal(metadata["authorization"], `Bearer ${TOKEN}`);
  const stream = server.streamEvents(1);
  assert.deepEqual(stream[0], {
    event_id: "",
    timestamp: null,
    public_key: "",
    is_initiator: true,
    window_start: null,
    window_end: null,
    flow_fields: null,
  }, "the first message is FlowEvent{isInitiator: true} and nothing else");
  assert.equal(stream.slice(1).filter((e) => e.is_initiator).length, 0);
  for (const { record, src, dst } of cases) {
    const got = copies(server, uuidHex(record.eventId));
    assert.equal(got.length, 1, `${record.protocol}: received once`);
    assert.deepEqual(got[0], expected(record, src, dst), `protocol ${record.protocol}`);
    assert.equal(src, hex(parseIp(record.sourceIp)!), "the hand-written bytes are right");
  }
  assert.equal(s.sent, cases.length);
  assert.equal(s.resent, 0);
  assert.equal(s.unacked, 0);
});

Deno.test("FlowClient resends an un-acked event with the same event_id and content until the receiver acks it", async () => {
  await using server = await FlowServer.start({ stubs: await stubs() });
  await server.command({ cmd: "auto_ack", on: false });
  const c = client(server.port);
  try {
    c.start();
    const records = [windowRecord(), windowRecord()];
    c.write(records);
    const idHex = records.map((r) => uuidHex(r.eventId));
    await server.waitFor(
      "3 copies of each",
      () => idHex.every((id) => copies(server, id).length >= 3),
    );
    for (const id of idHex) {
      const all = copies(server, id);
      assert.ok(all.every((e) => JSON.stringify(e) === JSON.stringify(all[0])), "identical copies");
    }
    assert.equal(c.stats().unacked, 2);
    await server.command({ cmd: "ack", ids: idHex });
    await waitUntil("acked", () => c.stats().unacked === 0);
    const count = server.events.length;
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(server.events.length, count, "no resend after the ack");
    const s = c.stats();
    assert.equal(s.acked, 2);
    assert.equal(s.sent, 2);
    assert.ok(s.resent >= 4, `resent ${s.resent}`);
  } finally {
    await c.close(0);
  }
});

Deno.test("FlowClient reopens a dropped stream, starting with the initiator, and resends what is un-acked", async () => {
  await using server = await FlowServer.start({ stubs: await stubs() });
  await server.command({ cmd: "auto_ack", on: false });
  const c = client(server.port, { graceMs: 60_000 }); // only the reconnect resends
  try {
    c.start();
    const rec = windowRecord();
    c.write([rec]);
    await server.waitFor("the event", () => server.events.length === 1);
    await server.command({ cmd: "auto_ack", on: true });
    await server.command({ cmd: "drop" });
    await server.waitFor("a second stream", () => server.streams.length === 2);
    await waitUntil("acked", () => c.stats().unacked === 0);
    const second = server.streamEvents(2);
    assert.equal(second[0]!.is_initiator, true);
    assert.equal(second[1]!.event_id, uuidHex(rec.eventId));
    assert.deepEqual(second[1], server.streamEvents(1)[1], "the same event again");
    assert.equal(c.stats().reconnects, 1);
    assert.equal(
      Object.fromEntries(server.streams[1]!.metadata)["authorization"],
      `Bearer ${TOKEN}`,
    );
  } finally {
    await c.close(0);
  }
});

Deno.test("FlowClient reconnects after the receiver restarts and delivers what the old one never acked", async () => {
  const dir = await stubs();
  let server = await FlowServer.start({ stubs: dir });
  const port = server.port;
  const c = client(port);
  try {
    await server.command({ cmd: "auto_ack", on: false });
    c.start();
    const before = [windowRecord(), windowRecord()];
    c.write(before);
    await server.waitFor("both events", () => server.events.length >= 2);
    await server[Symbol.asyncDispose](); // killed: a crash
    await waitUntil("the client notices", () => !c.connected);
    const during = windowRecord(); // written while the receiver is down
    c.write([during]);
    server = await FlowServer.start({ stubs: dir, port });
    await waitUntil("everything acked", () => c.stats().unacked === 0, 10_000);
    const got = new Set(server.events.map((e) => e.event_id));
    for (const r of [...before, during]) assert.ok(got.has(uuidHex(r.eventId)), r.eventId);
    assert.equal(server.streamEvents(1)[0]!.is_initiator, true);
    const s = c.stats();
    assert.ok(s.reconnects >= 1);
    assert.equal(s.acked, 3);
  } finally {
    await c.close(0);
    await server[Symbol.asyncDispose]();
    await grpcTimersSettled();
  }
});

Deno.test("FlowClient speaks TLS to an https:// receiver", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbct-flow-tls-" });
  try {
    await selfSignedCert(`${dir}/cert.pem`, `${dir}/key.pem`);
    await using server = await FlowServer.start({
      stubs: await stubs(),
      tls: { cert: `${dir}/cert.pem`, key: `${dir}/key.pem` },
    });
    const c = client(server.port, {
      url: `https://localhost:${server.port}`,
      rootCerts: await Deno.readFile(`${dir}/cert.pem`),
    });
    try {
      c.start();
      const rec = windowRecord();
      c.write([rec]);
      await waitUntil("acked over TLS", () => c.stats().acked === 1);
      assert.equal(server.events[0]!.event_id, uuidHex(rec.eventId));
      assert.equal(
        Object.fromEntries(server.streams[0]!.metadata)["authorization"],
        `Bearer ${TOKEN}`,
      );
    } finally {
      await c.close(0);
      await grpcTimersSettled(); // "localhost" is ::1 too, where nothing listens
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// GOAWAY from the receiver (denoland/deno#36788: grpc-js on Deno's node:http2 can abort the
// whole process when a GOAWAY arrives on a connection whose streams have finished).

/**
 * A receiver built from raw frames that, on every connection, acks `perConnection` events, then
 * ends the stream (trailers with grpc-status 0 and RST_STREAM NO_ERROR) and sends a graceful
 * GOAWAY on the now idle connection: in the same write, or after a short delay (rotating), then
 * a PING, then closes it.
 */
class GoawayReceiver implements AsyncDisposable {
  readonly port: number;
  /** Connections served. */
  connections = 0;
  /** GOAWAYs sent on connections whose stream had finished. */
  idleGoaways = 0;
  /** Events acked. */
  acked = 0;
  /** Authorization values seen. */
  readonly authorizations: string[] = [];
  #listener: Deno.Listener;
  #accepting: Promise<void>;
  #conns = new Set<Deno.Conn>();
  #serving = new Set<Promise<void>>();
  #perConnection: number;
  static readonly DELAYS = [0, 1, 5, 20];

  constructor(perConnection: number, port = 0) {
    this.#perConnection = perConnection;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept();
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        (conn as Deno.TcpConn).setNoDelay(true);
        this.#conns.add(conn);
        const p = this.#serve(conn, this.connections++).catch(() => {}).finally(() => {
          this.#conns.delete(conn);
          this.#serving.delete(p);
        });
        this.#serving.add(p);
      }
    } catch { /* closed */ }
  }

  async #serve(conn: Deno.Conn, index: number): Promise<void> {
    const write = async (out: OutBuffer): Promise<void> => {
      const bytes = out.take();
      let off = 0;
      while (off < bytes.length) off += await conn.write(bytes.subarray(off));
    };
    const encoder = new HpackEncoder();
    const decoder = new HpackDecoder();
    const reader = new FrameReader(16_777_215);
    const out = new OutBuffer();
    out.settings([]);
    await write(out);
    const buf = new Uint8Array(64 * 1024);
    let preface = CONNECTION_PREFACE.length;
    let stream = 0;
    let pending = new Uint8Array(0);
    let acked = 0;
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) return;
        let chunk = buf.subarray(0, n);
        if (preface > 0) {
          const k = Math.min(preface, chunk.length);
          preface -= k;
          chunk = chunk.subarray(k);
        }
        reader.push(chunk);
        while (reader.next()) {
          const { type, flags, streamId, payload } = reader;
          if (type === FrameType.SETTINGS && (flags & Flag.ACK) === 0) {
            out.settingsAck();
          } else if (type === FrameType.HEADERS) {
            const h = Object.fromEntries(decoder.decode(payload).headers);
            this.authorizations.push(h["authorization"] ?? "");
            stream = streamId;
            out.headers(
              stream,
              encoder.encode([
                [":status", "200"],
                ["content-type", "application/grpc"],
              ]),
              false,
              16_384,
            );
            out.data(
              stream,
              grpcMessage(encodeFlowEventAck({
                eventId: new Uint8Array(0),
                isInitiator: true,
              })),
            );
          } else if (type === FrameType.DATA && streamId === stream && acked >= 0) {
            const all = new Uint8Array(pending.length + payload.length);
            all.set(pending);
            all.set(payload, pending.length);
            let p = 0;
            while (p + 5 <= all.length) {
              const size = new DataView(all.buffer, p + 1, 4).getUint32(0);
              if (p + 5 + size > all.length) break;
              const e = decodeFlowEvent(all.subarray(p + 5, p + 5 + size));
              p += 5 + size;
              if (e.isInitiator || acked >= this.#perConnection) continue;
              out.data(stream, grpcMessage(encodeFlowEventAck(e)));
              acked++;
              this.acked++;
            }
            pending = all.slice(p);
            if (payload.length > 0) {
              out.windowUpdate(0, payload.length);
              out.windowUpdate(stream, payload.length);
            }
            if (acked >= this.#perConnection) {
              acked = -1; // done: the stream ends, then GOAWAY on the idle connection
              out.headers(stream, encoder.encode([["grpc-status", "0"]]), true, 16_384);
              out.rstStream(stream, ErrorCode.NO_ERROR);
              const delay = GoawayReceiver.DELAYS[index % GoawayReceiver.DELAYS.length]!;
              if (delay > 0) {
                await write(out);
                await new Promise((r) => setTimeout(r, delay));
              }
              out.goaway(stream, ErrorCode.NO_ERROR, "graceful shutdown");
              out.ping(false, new Uint8Array(8));
              this.idleGoaways++;
              await write(out);
              await new Promise((r) => setTimeout(r, 50));
              return;
            }
          }
        }
        if (out.length > 0) await write(out);
      }
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await Promise.all([...this.#serving]);
  }
}

/**
 * The tracker's Flow API client in a process of its own (FlowClient with the default transport,
 * one record every 20 ms): prints "started", and on SIGINT closes the client (1 s delivery bound),
 * prints its stats as JSON and exits 0. A crash in the transport shows as another exit.
 */
const SENDER = `
import { FlowClient } from "${ROOT}lib/flowapi/client.ts";
import { windowRecord } from "${ROOT}tests/_fakes/fake_flow_transport.ts";
const [url, token] = Deno.args;
const client = new FlowClient({
  url, token, publicKey: new Uint8Array(32).fill(7), intervalMs: 1000,
  retryIntervalMs: 50, graceMs: 150, reconnectInitialMs: 20,
});
client.start();
const timer = setInterval(() => client.write([windowRecord()]), 20);
Deno.addSignalListener("SIGINT", async () => {
  clearInterval(timer);
  const stats = await client.close(1000);
  console.log(JSON.stringify(stats));
  Deno.exit(0);
});
console.log("started");
`;

Deno.test("a receiver's graceful GOAWAY on an idle connection, and graceful stops with open streams, do not take the tracker's Flow client process down", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbct-flow-goaway-" });
  try {
    const script = `${dir}/sender.ts`;
    await Deno.writeTextFile(script, SENDER);
    const token = mintToken(new TextEncoder().encode("0123456789abcdef0123456789abcdef"), {
      ttlMs: 3_600_000,
    });
    // Phase 1: every connection ends with a GOAWAY after its stream finished.
    const raw = new GoawayReceiver(3);
    const port = raw.port;
    await using sender = new Proc([
      Deno.execPath(),
      "run",
      "--allow-all",
      "--config",
      `${ROOT}deno.json`,
      script,
      `http://127.0.0.1:${port}`,
      token,
    ]);
    try {
      await sender.waitFor("started", "stdout", 30_000);
      await waitUntil(
        () => `8 idle GOAWAYs (${raw.idleGoaways}); stderr: ${sender.stderr}`,
        () => {
          if (sender.exited !== undefined) {
            throw new Error(`the sender died: ${JSON.stringify(sender.exited)}: ${sender.stderr}`);
          }
          return raw.idleGoaways >= 8;
        },
        20_000,
        20,
      );
    } finally {
      await raw[Symbol.asyncDispose]();
    }
    assert.equal(sender.exited, undefined, sender.stderr);
    assert.ok(raw.authorizations.every((a) => a === `Bearer ${token}`));

    // Phase 2: the project's receiver on the same port, stopped gracefully (GOAWAY on the open
    // stream, then UNAVAILABLE) and restarted, three times.
    const store = new MemoryEventStore();
    const receiver = (): FlowReceiver =>
      new FlowReceiver({
        store,
        tokenSecret: new TextEncoder().encode("0123456789abcdef0123456789abcdef"),
        listen: { hostname: "127.0.0.1", port },
      });
    let r = receiver();
    for (let i = 0; i < 3; i++) {
      await r.start();
      const before = r.stats().streams;
      await waitUntil("a stream to the receiver", () => r.stats().streams > before, 10_000, 20);
      await new Promise((resolve) => setTimeout(resolve, 300)); // some events acked
      await r.stop({ timeoutMs: 1000 });
      assert.equal(sender.exited, undefined, sender.stderr);
      r = receiver();
    }
    await r.start();
    try {
      await new Promise((resolve) => setTimeout(resolve, 500));
      sender.kill("SIGINT");
      const status = await sender.wait(15_000);
      assert.equal(status.code, 0, `exit ${JSON.stringify(status)}; stderr:\n${sender.stderr}`);
      assert.equal(status.signal, null);
    } finally {
      await r.stop({ timeoutMs: 1000 });
    }
    const stats = JSON.parse(sender.stdout.trim().split("\n").at(-1)!);
    assert.ok(stats.reconnects >= 11, `reconnects ${stats.reconnects}`);
    assert.ok(stats.acked >= 24, `acked ${stats.acked}`);
    assert.equal(stats.unacked, 0, "everything delivered in the end");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "netbird-ct --flow-url survives receivers that send a graceful GOAWAY on idle connections, and exits 0",
  ignore,
  async fn(): Promise<void> {
    await using ns = await createNetnsPair();
    const dir = await Deno.makeTempDir({ prefix: "nbct-flow-goaway-cli-" });
    try {
      const tokenFile = `${dir}/token`;
      await Deno.writeTextFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
      // One ack per connection, then trailers and a GOAWAY on the idle connection.
      await using raw = new GoawayReceiver(1);
      // The CLI runs in this namespace (so it reaches the receiver on 127.0.0.1) and watches A.
      await using cli = new Proc([
        Deno.execPath(),
        "run",
        "-A",
        `${ROOT}main.ts`,
        "--netns",
        ns.a,
        ...OVERLAY_FLAGS,
        "--counters",
        "--window",
        "1s",
        "--flow-url",
        `http://127.0.0.1:${raw.port}`,
        "--public-key",
        KEY_B64,
        "--flow-token-file",
        tokenFile,
        "--stats-interval",
        "0",
        "-o",
        `${dir}/out.jsonl`,
      ], { cwd: ROOT, env: { NO_COLOR: "1" } });
      await cli.waitFor(READY, "stderr", 15_000);
      const deadline = Date.now() + 20_000;
      while (raw.idleGoaways < 4) {
        if (cli.exited !== undefined) {
          throw new Error(`netbird-ct died: ${JSON.stringify(cli.exited)}:\n${cli.stderr}`);
        }
        if (Date.now() > deadline) {
          throw new Error(`only ${raw.idleGoaways} GOAWAYs; stderr:\n${cli.stderr}`);
        }
        await ping(ns.a, ADDR.b4); // a new flow: a window record every second
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(cli.exited, undefined, cli.stderr);
      const summary = await stop(cli);
      assert.ok(summary["flow_acked"]! >= 4, cli.stderr);
      assert.ok(raw.authorizations.every((a) => a === `Bearer ${TOKEN}`));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// ---------------------------------------------------------------------------------------------
// With Redis.

Deno.test("RedisUnackedStore keeps events in order across reopen, bounded, and removes acked ones", async () => {
  await using redis = await RedisServer.start();
  const prefix = `t:${crypto.randomUUID()}`;
  const data = (n: number): Uint8Array => new Uint8Array([n, 0, 255, n]);
  {
    const store = await RedisUnackedStore.open(redis.url(3), { maxEvents: 3, keyPrefix: prefix });
    for (const id of ["a", "b", "c", "d"]) await store.add({ id, data: data(id.charCodeAt(0)) });
    assert.equal(store.dropped, 1);
    assert.equal(await store.delete("c"), true);
    await store.close();
  }
  assert.equal((await redis.cli("-n", "3", "HLEN", `${prefix}:events`)).trim(), "2");
  assert.equal((await redis.cli("-n", "3", "ZCARD", `${prefix}:order`)).trim(), "2");
  {
    const store = await RedisUnackedStore.open(redis.url(3), { maxEvents: 3, keyPrefix: prefix });
    assert.deepEqual(store.events(), [
      { id: "b", data: data(98) },
      { id: "d", data: data(100) },
    ]);
    await store.add({ id: "e", data: data(101) });
    await store.close();
  }
  {
    // A smaller capacity on open drops the oldest, counted.
    const store = await RedisUnackedStore.open(redis.url(3), { maxEvents: 2, keyPrefix: prefix });
    assert.deepEqual(store.events().map((e) => e.id), ["d", "e"]);
    assert.equal(store.dropped, 1);
    await store.close();
  }
  assert.equal((await redis.cli("-n", "3", "HLEN", `${prefix}:events`)).trim(), "2");
});

Deno.test("RedisUnackedStore.open() fails with a clear error when Redis is unreachable", async () => {
  const port = freePort();
  await assert.rejects(
    RedisUnackedStore.open(`redis://127.0.0.1:${port}/0`),
    new RegExp(`Cannot connect to Redis at redis://127.0.0.1:${port}/0`),
  );
});

Deno.test("RedisUnackedStore keeps working in memory while Redis is down and writes everything again when it is back", async () => {
  const port = freePort();
  let redis = await RedisServer.start({ port });
  const prefix = `t:${crypto.randomUUID()}`;
  const store = await RedisUnackedStore.open(redis.url(), { keyPrefix: prefix });
  try {
    await store.add({ id: "a", data: new Uint8Array([1]) });
    await redis[Symbol.asyncDispose](); // Redis restarts without persistence: "a" is gone there
    await assert.rejects(
      store.add({ id: "b", data: new Uint8Array([2]) }),
      /Cannot write to Redis/,
    );
    assert.deepEqual(store.events().map((e) => e.id), ["a", "b"]);
    redis = await RedisServer.start({ port });
    await waitUntil(
      "the store to write its events again",
      async () => (await redis.cli("HLEN", `${prefix}:events`)).trim() === "2",
      10_000,
      50,
    );
    assert.deepEqual(
      (await redis.cli("ZRANGE", `${prefix}:order`, "0", "-1")).trim().split("\n"),
      ["a", "b"],
    );
  } finally {
    await store.close();
    await redis[Symbol.asyncDispose]();
  }
});

Deno.test("FlowClient with the Redis store: a new client after a restart resends what was un-acked, and nothing is lost", async () => {
  await using redis = await RedisServer.start();
  await using server = await FlowServer.start({ stubs: await stubs() });
  const prefix = `t:${crypto.randomUUID()}`;
  const records = Array.from({ length: 5 }, () => windowRecord());
  const idHex = records.map((r) => uuidHex(r.eventId));

  // Run 1: the receiver gets everything but acks only the first two.
  await server.command({ cmd: "auto_ack", on: false });
  {
    const store = await RedisUnackedStore.open(redis.url(), { keyPrefix: prefix });
    const c = client(server.port, { store });
    c.start();
    c.write(records);
    await server.waitFor("all five", () => idHex.every((id) => copies(server, id).length >= 1));
    await server.command({ cmd: "ack", ids: idHex.slice(0, 2) });
    await waitUntil("two acked", () => c.stats().acked === 2);
    const s = await c.close(100);
    assert.equal(s.unacked, 3);
    await store.close();
  }
  assert.equal((await redis.cli("HLEN", `${prefix}:events`)).trim(), "3");
  const firstRun = server.events.length;

  // Run 2: a new client over the same Redis; the receiver acks again.
  await server.command({ cmd: "auto_ack", on: true });
  {
    const store = await RedisUnackedStore.open(redis.url(), { keyPrefix: prefix });
    assert.equal(store.size, 3);
    const c = client(server.port, { store });
    c.start();
    await waitUntil("the rest acked", () => c.stats().unacked === 0, 10_000);
    const s = await c.close();
    assert.equal(s.restored, 3);
    assert.equal(s.acked, 3);
    assert.equal(s.sent, 3, "first sends of this process");
    await store.close();
  }
  const again = server.events.slice(firstRun).map((e) => e.event_id);
  assert.deepEqual(new Set(again), new Set(idHex.slice(2)), "exactly the un-acked ones again");
  for (const id of idHex.slice(2)) {
    const all = copies(server, id);
    assert.ok(all.every((e) => JSON.stringify(e) === JSON.stringify(all[0])), "same content");
  }
  assert.equal((await redis.cli("HLEN", `${prefix}:events`)).trim(), "0");
  assert.equal((await redis.cli("ZCARD", `${prefix}:order`)).trim(), "0");
});

// ---------------------------------------------------------------------------------------------
// The CLI, end to end (root).

/** Starts the CLI and waits until it listens; kills it if it never does. */
async function listening(ns: string, output: string, extra: string[]): Promise<Proc> {
  const cli = startCli(ns, output, ["--stats-interval", "0", ...extra]);
  try {
    await cli.waitFor(READY, "stderr", 15_000);
  } catch (err) {
    await cli[Symbol.asyncDispose]();
    throw err;
  }
  return cli;
}

/** Stops the CLI with SIGINT, asserts exit 0 and returns its summary. */
async function stop(cli: Proc): Promise<Summary> {
  assert.equal(await interrupt(cli), 0, `exit code after SIGINT; stderr:\n${cli.stderr}`);
  return parseSummary(cli.stderr);
}

/** The event the receiver must have for one window line of the CLI's output. */
function expectedFromLine(r: RecordLine): ServerEvent {
  const icmp = r.protocol === 1 || r.protocol === 58;
  const t = (iso: string): [number, number] => ts(new Date(iso));
  return {
    event_id: uuidHex(r.event_id),
    timestamp: t(r.timestamp),
    public_key: hex(KEY),
    is_initiator: false,
    window_start: t(r.window_start!),
    window_end: t(r.window_end!),
    flow_fields: {
      flow_id: uuidHex(r.flow_id),
      type: 0,
      rule_id: "",
      direction: DIRECTION[r.direction as keyof typeof DIRECTION],
      protocol: r.protocol,
      source_ip: hex(parseIp(r.source_ip)!),
      dest_ip: hex(parseIp(r.dest_ip)!),
      connection_info: icmp ? "icmp_info" : "port_info",
      port_info: icmp ? null : [r.source_port, r.dest_port],
      icmp_info: icmp ? [r.icmp_type, r.icmp_code] : null,
      rx_packets: String(r.rx_packets),
      tx_packets: String(r.tx_packets),
      rx_bytes: String(r.rx_bytes),
      tx_bytes: String(r.tx_bytes),
      source_resource_id: r.source_resource_id ?? "",
      dest_resource_id: r.dest_resource_id ?? "",
      num_of_starts: String(r.num_of_starts),
      num_of_ends: String(r.num_of_ends),
      num_of_drops: String(r.num_of_drops),
    },
  };
}

Deno.test({
  name:
    "netbird-ct --flow-url sends every window record to the receiver; with --store, what is un-acked at SIGINT is sent by the next run",
  ignore,
  async fn(): Promise<void> {
    await using ns = await createNetnsPair();
    const dir = await Deno.makeTempDir({ prefix: "nbct-flow-cli-" });
    try {
      const a = ns.a;
      const tokenFile = `${dir}/token`;
      await Deno.writeTextFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
      // The receiver and Redis run inside A, on A's own loopback.
      await using server = await FlowServer.start({ stubs: await stubs(), netns: a });
      await using redis = await RedisServer.start({ port: 6390, netns: a });
      const flowFlags = [
        "--counters",
        "--window",
        "1s",
        "--flow-url",
        `http://127.0.0.1:${server.port}`,
        "--public-key",
        KEY_B64,
        "--flow-token-file",
        tokenFile,
        "--store",
        redis.url(2),
      ];

      // Run 1: everything acked. TCP and UDP over v4 and v6, ICMP and ICMPv6.
      const out1 = `${dir}/run1.jsonl`;
      {
        const cli = await listening(a, out1, flowFlags);
        try {
          await using tcp = peer(ns.b, "tcp-server", ADDR.b4, 9300, 1);
          await using udp = peer(ns.b, "udp-server", ADDR.b6, 9301, 1);
          await Promise.all([tcp.waitFor("ready"), udp.waitFor("ready")]);
          await using c1 = peer(a, "tcp-client", ADDR.b4, 9300, 700);
          await using c2 = peer(a, "udp-client", ADDR.b6, 9301, 90);
          await Promise.all([c1.success(), c2.success(), tcp.success(), udp.success()]);
          await ping(a, ADDR.b4);
          await ping(a, ADDR.b6);
          await waitUntil(
            "ICMP and ICMPv6 windows sent",
            () => {
              const protos = new Set(server.events.map((e) => e.flow_fields?.protocol));
              return [1, 6, 17, 58].every((p) => protos.has(p));
            },
            15_000,
            100,
          );
        } finally {
          const summary = await stop(cli);
          assert.equal(summary["flow_unacked"], 0, cli.stderr);
          assert.equal(summary["flow_sent"], summary["flow_acked"]);
          assert.equal(summary["flow_overflow_drops"], 0);
        }
      }
      const lines = readRecords(out1, { complete: true });
      assert.ok(lines.length >= 4, `window records: ${lines.length}`);
      assert.ok(lines.every((l) => l.type === "window"));
      const byId = new Map(server.events.map((e) => [e.event_id, e]));
      for (const line of lines) {
        assert.deepEqual(byId.get(uuidHex(line.event_id)), expectedFromLine(line));
      }
      assert.equal(byId.size, lines.length, "nothing but the output's window records");
      assert.equal(server.received[0]!.is_initiator, true);
      assert.equal(
        Object.fromEntries(server.streams[0]!.metadata)["authorization"],
        `Bearer ${TOKEN}`,
      );
      const afterRun1 = server.events.length;

      // Run 2: the receiver stops acking; SIGINT keeps the un-acked events in Redis.
      await server.command({ cmd: "auto_ack", on: false });
      const out2 = `${dir}/run2.jsonl`;
      let unacked: number;
      {
        const cli = await listening(a, out2, flowFlags);
        let summary: Summary;
        try {
          await ping(a, ADDR.b4);
          await waitUntil("a window sent", () => server.events.length > afterRun1, 15_000, 100);
        } finally {
          summary = await stop(cli);
        }
        unacked = summary["flow_unacked"]!;
        assert.ok(unacked >= 1, cli.stderr);
        assert.equal(summary["flow_acked"], 0);
        assert.match(
          cli.stderr,
          /events not acknowledged yet: kept in redis:\/\/127\.0\.0\.1:6390\/2/,
        );
      }
      const run2Ids = readRecords(out2, { complete: true }).map((l) => uuidHex(l.event_id));
      assert.equal(run2Ids.length, unacked, "every window of run 2 is un-acked");
      const key = `netbird-ct:unacked:${KEY_B64}`;
      assert.equal((await redis.cli("-n", "2", "HLEN", `${key}:events`)).trim(), String(unacked));

      // Run 3: acks again; the previous run's events are resent and acked, nothing is lost.
      await server.command({ cmd: "auto_ack", on: true });
      {
        const cli = await listening(a, `${dir}/run3.jsonl`, flowFlags);
        let summary: Summary;
        try {
          await waitUntil(
            "run 2's events resent",
            () => {
              const got = new Set(server.events.slice(afterRun1).map((e) => e.event_id));
              return run2Ids.every((id) => got.has(id));
            },
            15_000,
            100,
          );
        } finally {
          summary = await stop(cli);
        }
        assert.equal(summary["flow_restored"], unacked);
        assert.equal(summary["flow_unacked"], 0);
        assert.ok(summary["flow_acked"]! >= unacked);
      }
      assert.equal((await redis.cli("-n", "2", "HLEN", `${key}:events`)).trim(), "0");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
