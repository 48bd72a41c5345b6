/**
 * IPFIX export over the network: an {@linkcode IpfixExporter} is a {@linkcode RecordSink} that
 * turns the tracker's records into IPFIX biflow records ({@linkcode recordToIpfixFlow}) and drop
 * records ({@linkcode recordToIpfixDrop}) and sends them to one or more collectors (nfcapd,
 * pmacct's nfacctd, goflow2, ...) over UDP or TCP, with the encoder of `ipfix.ts` doing the
 * protocol work (templates, sequence numbers, MTU).
 *
 * What is exported, and how:
 *
 * - **Which records**: `end` records (flowEndReason 0x03 end of flow, 0x05 when synthesized by a
 *   resync), `update` records (0x02 active timeout, counters are deltas since the previous
 *   report), and `drop` records (the drop templates, see {@linkcode recordToIpfixDrop}:
 *   firewallEvent 3 "flow denied", forwardingStatus 0x81, the rule ID). Not exported by design:
 *   `start` records (IPFIX reports flows when they end, or at the active timeout, and a start
 *   record has no counters yet) and `window` records (aggregates of several flows, not one flow;
 *   the drops a window counts are exported one by one). The tracker emits no record for flows
 *   still open when it stops, so forced end (0x04) does not occur today.
 * - **One biflow record per flow**: the initiator → responder 5-tuple of the original direction;
 *   counters of both directions (RFC 5103 reverse elements by default, or
 *   initiator/responder elements). A record's `rx`/`tx` counters are mapped back to directions:
 *   for `ingress` flows the original direction is what this host received (`rx`), for `egress`
 *   and `unknown` flows it is what this host sent (`tx`).
 * - **Times**: flowEndMilliseconds is the kernel's stop timestamp when present
 *   (`nf_conntrack_timestamp=1`), else the record's receipt time. flowStartMilliseconds is the
 *   kernel's start timestamp when present, else also the record's receipt time: a record carries
 *   only its own time, not the time of the flow's start record. For `update` records the start is
 *   the flow's start, not the start of the reported interval.
 * - **Queues**: every collector has its own bounded queue of records (`queueSize`); a record that
 *   does not fit is dropped and counted, so a slow or absent collector never blocks the tracker
 *   and never delays the other collectors. {@linkcode IpfixExporter.write} only converts and
 *   queues; encoding and sending happen later on the event loop.
 * - **Encoders**: one per collector, so each collector sees its own continuous sequence numbers
 *   (records dropped from a queue are never encoded and leave no gap; records lost in a failed
 *   send do) and its own template schedule.
 * - **UDP**: one unconnected socket per collector; templates are refreshed by time and message
 *   count (encoder options). Send errors are counted, and the records of a failed message count as
 *   dropped. Deno's `node:dgram` does not report ICMP port-unreachable, so a UDP collector that
 *   is down looks like one that receives.
 * - **TCP**: `Deno.connect`, with every message written in full (partial writes continued).
 *   All templates go first on every (re)connection. The sequence number continues across
 *   connections, so records lost in a broken connection show as a gap. Reconnects use capped
 *   exponential backoff (1 s, doubling, at most 30 s; back to 1 s once a connection lived as long
 *   as the cap). While disconnected, records wait in the queue (and overflow is counted).
 * - **Statistics**: every `statsIntervalMs` (after the batch being sent), and once more at close
 *   after the last records, each collector gets an exporter-statistics options record (see
 *   `ipfix.ts`): records, messages and bytes sent to it, records not sent to it (`dropped`), and
 *   conntrack events lost (`lostEvents`).
 * - **Permissions**: `--allow-net` for every collector, and for UDP also for the wildcard address
 *   the socket binds to (`0.0.0.0:0` or `[::]:0`); the constructor checks them, because
 *   `node:dgram` reports a missing permission as an uncaught error.
 *
 * @module
 */

import dgram from "node:dgram";
import { lookup } from "node:dns/promises";
import { getLogger } from "@logtape/logtape";
import {
  type CounterEncoding,
  endReasonOf,
  flowIdFromUuid,
  type IpfixDrop,
  IpfixEncoder,
  type IpfixEncoderOptions,
  type IpfixFlow,
  type IpfixRecord,
  MESSAGE_HEADER_LENGTH,
  SET_HEADER_LENGTH,
  STATS_TEMPLATE_ID,
} from "./ipfix.ts";
import { ipv4ToNumber, parseIp } from "./net.ts";
import type { FlowRecord } from "./record.ts";
import type { RecordSink } from "./tracker.ts";
import { errorText, sleep } from "./_async.ts";

const log = getLogger(["netbird-ct", "ipfix"]);

/** The IANA-registered IPFIX port (UDP and TCP). */
export const IPFIX_PORT = 4739;
/** Default bound of each collector's queue, in records. */
export const DEFAULT_QUEUE_SIZE = 65_536;
/** Default interval of the exporter-statistics records, ms. */
export const DEFAULT_STATS_INTERVAL_MS = 60_000;
/** Default bound of {@linkcode IpfixExporter.close}'s flush, ms. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 2_000;
/** Default first TCP reconnect delay, ms. */
export const DEFAULT_RECONNECT_INITIAL_MS = 1_000;
/** Default cap of the TCP reconnect delay, ms. */
export const DEFAULT_RECONNECT_MAX_MS = 30_000;
/** Default TCP connect timeout, ms. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;

/** Records taken from a queue per encode-and-send round. */
const BATCH = 1024;
/** How often the exporter checks whether statistics are due and kicks idle queues, ms. */
const TICK_MS = 1_000;

/** The transport to a collector. */
export type CollectorTransport = "udp" | "tcp";

/** A parsed collector address (see {@linkcode parseCollector}). */
export interface CollectorAddress {
  /** `udp` (the default) or `tcp`. */
  transport: CollectorTransport;
  /** Host name or address literal; IPv6 without brackets. */
  host: string;
  /** Port, 1–65535. */
  port: number;
}

/**
 * Parses a collector address: `HOST:PORT`, `[IPV6]:PORT`, optionally prefixed by `udp://`
 * (the default) or `tcp://`. HOST is an IPv4 address or a DNS name; IPv6 addresses need brackets.
 *
 * @param text The address as the user wrote it.
 * @returns The address.
 * @throws {Error} When the text is not such an address; the message quotes it.
 *
 * @example Usage
 * ```ts
 * import { parseCollector } from "./ipfix_export.ts";
 * const c = parseCollector("tcp://[fd00::1]:4739");
 * if (c.transport !== "tcp" || c.host !== "fd00::1" || c.port !== 4739) throw new Error();
 * ```
 */
export function parseCollector(text: string): CollectorAddress {
  const fail = (why: string): never => {
    throw new Error(`Cannot parse IPFIX collector "${text}": ${why}`);
  };
  if (text === "") fail("it is empty; use HOST:PORT");
  if (/\s/.test(text)) fail("it contains white space");
  let transport: CollectorTransport = "udp";
  let rest = text;
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(text);
  if (scheme !== null) {
    const name = scheme[1]!.toLowerCase();
    if (name !== "udp" && name !== "tcp") {
      fail(`transport "${scheme[1]}" is not supported; use udp:// or tcp://`);
    }
    transport = name as CollectorTransport;
    rest = text.slice(scheme[0].length);
  }
  let host: string;
  let portText: string;
  if (rest.startsWith("[")) {
    const m = /^\[([^\]]*)\]:([^:]*)$/.exec(rest);
    if (m === null) fail("expected [IPV6]:PORT");
    host = m![1]!;
    portText = m![2]!;
    if (!host.includes(":") || parseIp(host) === undefined) {
      fail(`"${host}" is not an IPv6 address`);
    }
  } else {
    const colons = rest.split(":").length - 1;
    if (colons === 0) fail("the port is missing; use HOST:PORT");
    if (colons > 1) fail("IPv6 addresses need brackets; use [ADDRESS]:PORT");
    [host, portText] = rest.split(":") as [string, string];
    if (host === "") fail("the host is missing; use HOST:PORT");
    if (/^[0-9.]+$/.test(host)) {
      if (ipv4ToNumber(host) < 0) fail(`"${host}" is not an IPv4 address`);
    } else if (!isHostName(host)) {
      fail(`"${host}" is not a valid host name`);
    }
  }
  if (!/^[0-9]{1,5}$/.test(portText)) fail(`port "${portText}" is not a number`);
  const port = Number(portText);
  if (port < 1 || port > 65535) fail(`port ${port} is out of range 1-65535`);
  return { transport, host, port };
}

/** RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens. */
function isHostName(host: string): boolean {
  if (host.length > 253) return false;
  return host.split(".").every((label) =>
    /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label)
  );
}

/**
 * The canonical text of a collector address, e.g. `udp://127.0.0.1:4739`, `tcp://[::1]:4739`.
 *
 * @param address The address.
 * @returns Its text, with the transport always spelled out.
 */
export function collectorLabel(address: CollectorAddress): string {
  const host = address.host.includes(":") ? `[${address.host}]` : address.host;
  return `${address.transport}://${host}:${address.port}`;
}

/** The fields a biflow record and a drop record share. */
type IpfixTuple = Pick<
  IpfixFlow,
  | "family"
  | "source"
  | "destination"
  | "protocol"
  | "sourcePort"
  | "destinationPort"
  | "icmpType"
  | "icmpCode"
>;

/** ICMP or ICMPv6: type/code instead of ports. */
function isIcmp(protocol: number): boolean {
  return protocol === 1 || protocol === 58;
}

/**
 * The addresses, protocol, ports and ICMP type/code of a tracker record as IPFIX fields: the
 * ports are 0 for ICMP, the type and code 0 for any other protocol.
 */
function tupleOf(record: FlowRecord): IpfixTuple {
  const icmp = isIcmp(record.protocol);
  return {
    family: record.sourceIp.includes(":") ? 6 : 4,
    source: record.sourceIp,
    destination: record.destIp,
    protocol: record.protocol,
    sourcePort: icmp ? 0 : record.sourcePort,
    destinationPort: icmp ? 0 : record.destPort,
    icmpType: icmp ? record.icmpType : 0,
    icmpCode: icmp ? record.icmpCode : 0,
  };
}

/**
 * The IPFIX biflow record of a tracker record, or `undefined` when the record is not exported as
 * a flow (`start`, `window`, and `drop`, which {@linkcode recordToIpfixDrop} converts; see the
 * module documentation).
 *
 * @param record The record.
 * @returns The biflow record.
 * @throws {TypeError} When the record's `flowId` is not a UUID.
 *
 * @example Usage
 * ```ts
 * import { recordToIpfixFlow } from "./ipfix_export.ts";
 * const flow = recordToIpfixFlow({
 *   eventId: "e", timestamp: new Date(1_700_000_000_000),
 *   flowId: "1cc4bb85-0ca9-5a5d-a913-81b334076105", type: "end", direction: "ingress",
 *   protocol: 6, sourceIp: "100.64.0.2", destIp: "100.64.0.1", sourcePort: 40000, destPort: 22,
 *   icmpType: 0, icmpCode: 0, rxPackets: 10n, txPackets: 8n, rxBytes: 1000n, txBytes: 4000n,
 *   conntrackId: 7,
 * });
 * // Ingress: the initiator's packets are the ones this host received.
 * if (flow?.originalBytes !== 1000n || flow.endReason !== "end") throw new Error();
 * ```
 */
export function recordToIpfixFlow(record: FlowRecord): IpfixFlow | undefined {
  if (record.type === "window") return undefined;
  const endReason = endReasonOf(record.type, record.reason);
  if (endReason === undefined) return undefined;
  const ingress = record.direction === "ingress";
  const receivedMs = record.timestamp.getTime();
  const flow: IpfixFlow = {
    ...tupleOf(record),
    originalPackets: ingress ? record.rxPackets : record.txPackets,
    originalBytes: ingress ? record.rxBytes : record.txBytes,
    replyPackets: ingress ? record.txPackets : record.rxPackets,
    replyBytes: ingress ? record.txBytes : record.rxBytes,
    startMs: record.flowStart?.getTime() ?? receivedMs,
    endMs: record.flowEnd?.getTime() ?? receivedMs,
    direction: record.direction,
    endReason,
    flowId: flowIdFromUuid(record.flowId),
  };
  const nat = record.postNat;
  if (nat !== undefined) {
    const icmp = isIcmp(record.protocol);
    flow.postNat = {
      source: nat.source,
      destination: nat.destination,
      sourcePort: icmp ? 0 : nat.sourcePort,
      destinationPort: icmp ? 0 : nat.destinationPort,
    };
  }
  return flow;
}

/**
 * The IPFIX drop record of a `drop` record, or `undefined` for any other type. The dropped
 * packets go from `source_ip` to `dest_ip`: their counters (rx for ingress and unknown, tx for
 * egress) become octetDeltaCount/packetDeltaCount; the record's timestamp is its start and end
 * time; `rule_id` is carried as is (`null`: an empty rule ID).
 *
 * @param record The record.
 * @returns The drop record.
 * @throws {TypeError} When the record's `flowId` is not a UUID.
 *
 * @example Usage
 * ```ts
 * import { recordToIpfixDrop } from "./ipfix_export.ts";
 * const drop = recordToIpfixDrop({
 *   eventId: "e", timestamp: new Date(1_700_000_000_000),
 *   flowId: "1cc4bb85-0ca9-4a5d-a913-81b334076105", type: "drop", direction: "ingress",
 *   protocol: 6, sourceIp: "100.64.0.2", destIp: "100.64.0.1", sourcePort: 40000, destPort: 22,
 *   icmpType: 0, icmpCode: 0, rxPackets: 1n, txPackets: 0n, rxBytes: 60n, txBytes: 0n,
 *   conntrackId: 0, ruleId: "deny-ssh",
 * });
 * if (drop?.bytes !== 60n || drop.ruleId !== "deny-ssh") throw new Error();
 * ```
 */
export function recordToIpfixDrop(record: FlowRecord): IpfixDrop | undefined {
  if (record.type !== "drop") return undefined;
  return {
    kind: "drop",
    ...tupleOf(record),
    // One of the two is the dropped packet, the other 0.
    packets: record.rxPackets + record.txPackets,
    bytes: record.rxBytes + record.txBytes,
    timeMs: record.timestamp.getTime(),
    direction: record.direction,
    flowId: flowIdFromUuid(record.flowId),
    ruleId: record.ruleId ?? null,
  };
}

/**
 * The IPFIX record of a tracker record: a biflow record ({@linkcode recordToIpfixFlow}), a drop
 * record ({@linkcode recordToIpfixDrop}), or `undefined` for records not exported by design
 * (`start`, `window`).
 *
 * @param record The record.
 * @returns The IPFIX record.
 * @throws {TypeError} When the record's `flowId` is not a UUID.
 */
export function recordToIpfixRecord(record: FlowRecord): IpfixRecord | undefined {
  return record.type === "drop" ? recordToIpfixDrop(record) : recordToIpfixFlow(record);
}

/** Options of an {@linkcode IpfixExporter}. */
export interface IpfixExporterOptions {
  /**
   * Collectors: `HOST:PORT`, `[IPV6]:PORT`, `udp://…` (the default) or `tcp://…` (see
   * {@linkcode parseCollector}), or parsed addresses. At least one; no duplicates.
   */
  collectors: readonly (string | CollectorAddress)[];
  /** Observation Domain ID of every message. Default 0. */
  observationDomainId?: number;
  /** Counter encoding: `rfc5103` (default) or `initiator`. */
  counters?: CounterEncoding;
  /** Largest message in bytes. Default 1400 (UDP over a 1500-byte MTU). */
  mtu?: number;
  /** Re-send templates after this many ms (UDP and TCP). Default 60 000. */
  templateRefreshMs?: number;
  /** Re-send templates after this many messages. Default 100. */
  templateRefreshPackets?: number;
  /** Records each collector's queue holds before new ones are dropped. Default 65 536. */
  queueSize?: number;
  /** Interval of the exporter-statistics records, ms. Default 60 000. */
  statsIntervalMs?: number;
  /**
   * Conntrack events lost so far, sent as ignoredPacketTotalCount in the statistics records;
   * e.g. `() => tracker.stats().source.kernelDrops`. Default: always 0.
   */
  lostEvents?: () => number | bigint;
  /** How long {@linkcode IpfixExporter.close} tries to send what is queued, ms. Default 2000. */
  closeTimeoutMs?: number;
  /** First TCP reconnect delay, ms (doubled after each failure). Default 1000. */
  reconnectInitialMs?: number;
  /** Cap of the TCP reconnect delay, ms. Default 30 000. */
  reconnectMaxMs?: number;
  /** TCP connect timeout, ms. Default 5000. */
  connectTimeoutMs?: number;
  /**
   * Count the statistics (options) records in sequence numbers, as RFC 7011 says. Default true.
   * nfcapd 1.7 counts only flow records and logs a sequence failure after every statistics
   * message unless this is false.
   */
  countOptionsRecords?: boolean;
  /** Pad sets to 4 bytes. Default true. */
  padding?: boolean;
}

/** Counters of one collector. */
export interface IpfixCollectorStats {
  /** The collector, e.g. `udp://127.0.0.1:4739`. */
  collector: string;
  /** UDP: the socket is open; TCP: connected. */
  connected: boolean;
  /** Records waiting in the queue. */
  queued: number;
  /** Data records (flows and drops) sent. */
  sentRecords: number;
  /** Messages sent (templates and statistics included). */
  sentMessages: number;
  /** Bytes of the messages sent. */
  sentBytes: number;
  /** Records not sent: queue overflow, failed sends, unencodable, left in the queue at close. */
  dropped: number;
  /** Failed sends (UDP datagrams, TCP writes). */
  sendErrors: number;
  /** TCP: connections made after the first one. */
  reconnects: number;
  /** TCP: connection attempts that failed (UDP: failed address lookups). */
  connectFailures: number;
}

/** Counters of an {@linkcode IpfixExporter}. */
export interface IpfixExporterStats {
  /** Records queued for export (each to every collector): flows and drops. */
  records: number;
  /** Drop records among `records`. */
  drops: number;
  /** Records not exported by design: `start`, `window`. */
  skipped: number;
  /** Records that could not be converted (e.g. a malformed flow ID). */
  invalid: number;
  /** One entry per collector, in option order. */
  collectors: IpfixCollectorStats[];
}

/** Settings shared by all collectors. */
interface CollectorSettings {
  encoder: IpfixEncoderOptions;
  queueSize: number;
  lostEvents: () => number | bigint;
  startMs: number;
  reconnectInitialMs: number;
  reconnectMaxMs: number;
  connectTimeoutMs: number;
}

/**
 * Whether this process may use `host:port` (Deno's net permission). Checked up front because
 * `node:dgram` reports a missing permission as an uncaught error, not through its callbacks.
 */
function netAllowed(host: string, port: number): boolean {
  const h = host.includes(":") ? `[${host}]` : host;
  return Deno.permissions.querySync({ name: "net", host: `${h}:${port}` }).state === "granted";
}

/** The address a UDP socket of the family binds to implicitly (its permission is needed too). */
function anyAddress(family: 4 | 6): string {
  return family === 6 ? "::" : "0.0.0.0";
}

/** Resolves when `promise` settles or `signal` aborts, whichever comes first; never rejects. */
function until(promise: Promise<unknown>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      signal.removeEventListener("abort", done);
      resolve();
    };
    signal.addEventListener("abort", done, { once: true });
    promise.then(done, done);
  });
}

function concat(messages: readonly Uint8Array[]): Uint8Array {
  if (messages.length === 1) return messages[0]!;
  const out = new Uint8Array(messages.reduce((n, m) => n + m.length, 0));
  let off = 0;
  for (const m of messages) {
    out.set(m, off);
    off += m.length;
  }
  return out;
}

/** Writes all of `bytes`, continuing after partial writes. */
async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

function closeQuietly(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // already closed
  }
}

/** One collector: its queue, its encoder, its counters; the transport is a subclass. */
abstract class Collector {
  readonly label: string;
  readonly address: CollectorAddress;
  protected readonly settings: CollectorSettings;
  protected readonly encoder: IpfixEncoder;
  /** Aborted at shutdown: cancels connects, lookups and backoff sleeps. */
  protected readonly abort = new AbortController();
  readonly counters = {
    sentRecords: 0,
    sentMessages: 0,
    sentBytes: 0,
    dropped: 0,
    sendErrors: 0,
    reconnects: 0,
    connectFailures: 0,
  };
  /** Set while sends fail, so that only the first failure of a run is logged as a warning. */
  protected failing = false;
  #recordLengths = new Map<number, number>();
  #queue: IpfixRecord[] = [];
  #head = 0;
  #statsDue = false;
  /** Set while the queue overflows, so that each overflow episode is logged once. */
  #overflowing = false;
  #pump: Promise<void> | undefined;

  constructor(address: CollectorAddress, settings: CollectorSettings) {
    this.address = address;
    this.label = collectorLabel(address);
    this.settings = settings;
    this.encoder = new IpfixEncoder(settings.encoder);
    for (const t of [...this.encoder.templates, ...this.encoder.dropTemplates]) {
      this.#recordLengths.set(t.id, t.recordLength);
    }
  }

  /** Whether messages can be sent now. */
  abstract get ready(): boolean;

  /** A connection attempt or lookup in progress, if any. */
  abstract get pending(): Promise<void> | undefined;

  /** Starts opening the transport. */
  abstract open(): void;

  /**
   * Sends messages, in order.
   *
   * @returns For each message, whether it was sent.
   */
  protected abstract transmit(messages: readonly Uint8Array[]): Promise<boolean[]>;

  /** Closes the transport; afterwards `ready` is false and nothing is pending. */
  protected abstract closeTransport(): Promise<void>;

  get queued(): number {
    return this.#queue.length - this.#head;
  }

  enqueue(flows: readonly IpfixRecord[]): void {
    const room = this.settings.queueSize - this.queued;
    const n = Math.min(room, flows.length);
    for (let i = 0; i < n; i++) this.#queue.push(flows[i]!);
    if (n < flows.length) {
      if (!this.#overflowing) {
        log.warn("IPFIX queue of {collector} is full ({size} records): dropping records", {
          collector: this.label,
          size: this.settings.queueSize,
        });
      }
      this.#overflowing = true;
      this.counters.dropped += flows.length - n;
    } else {
      this.#overflowing = false;
    }
    this.kick();
  }

  requestStats(): void {
    this.#statsDue = true;
    this.kick();
  }

  /** Starts the pump unless it runs, the transport is not ready, or there is nothing to send. */
  kick(): void {
    if (this.#pump !== undefined || !this.ready) return;
    if (this.queued === 0 && !this.#statsDue) return;
    this.#pump = this.#run()
      .catch((err) =>
        log.error("IPFIX export to {collector} failed: {error}", {
          collector: this.label,
          error: errorText(err),
        })
      )
      .finally(() => {
        this.#pump = undefined;
        this.kick();
      });
  }

  /** Sends what is queued (and due statistics) until done, not ready, or `signal` aborts. */
  async drain(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if (this.#pump !== undefined) {
        await until(this.#pump, signal);
      } else if (this.queued === 0 && !this.#statsDue) {
        return;
      } else if (this.ready) {
        this.kick();
      } else {
        const pending = this.pending;
        if (pending === undefined) return; // disconnected with no attempt in flight: give up
        await until(pending, signal);
      }
    }
  }

  /** Closes the transport, waits for everything it started, counts what is left as dropped. */
  async shutdown(): Promise<void> {
    this.abort.abort();
    await this.closeTransport();
    await this.#pump;
    this.counters.dropped += this.queued;
    this.#queue = [];
    this.#head = 0;
  }

  stats(): IpfixCollectorStats {
    return { collector: this.label, connected: this.ready, queued: this.queued, ...this.counters };
  }

  /** Encodes templates now, with their messages counted as sent once `transmit` says so. */
  protected templates(): Uint8Array[] {
    return this.encoder.encodeTemplates(Date.now());
  }

  /** Counts messages as sent or failed. */
  protected account(messages: readonly Uint8Array[], sent: readonly boolean[]): void {
    messages.forEach((m, i) => {
      const records = this.#flowRecordsIn(m);
      if (sent[i]) {
        this.counters.sentMessages++;
        this.counters.sentBytes += m.length;
        this.counters.sentRecords += records;
      } else {
        this.counters.dropped += records;
      }
    });
  }

  async #run(): Promise<void> {
    await Promise.resolve(); // never encode or send inside write()
    while (this.ready) {
      const n = Math.min(this.queued, BATCH);
      if (n === 0 && !this.#statsDue) return;
      const batch = this.#queue.slice(this.#head, this.#head + n);
      this.#head += n;
      if (this.#head >= 4096 && this.#head * 2 >= this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      const messages = this.#encode(batch, Date.now());
      if (messages.length > 0) this.account(messages, await this.transmit(messages));
      if (this.#statsDue && this.ready) {
        // After the batch, so that the counters include it.
        this.#statsDue = false;
        const stats = this.encoder.encodeStats(this.#statsValues(), Date.now());
        this.account(stats, await this.transmit(stats));
      }
    }
  }

  /** Encodes a batch; records the encoder rejects are dropped (and logged) one by one. */
  #encode(batch: readonly IpfixRecord[], now: number): Uint8Array[] {
    if (batch.length === 0) return [];
    try {
      return this.encoder.encode(batch, now);
    } catch {
      // Find the culprits with a scratch encoder (the real one's state is unchanged on error).
      const scratch = new IpfixEncoder(this.settings.encoder);
      const good = batch.filter((flow) => {
        try {
          scratch.encode([flow], now);
          return true;
        } catch (err) {
          log.warn("Cannot encode IPFIX record for {collector}: {error}", {
            collector: this.label,
            error: errorText(err),
          });
          return false;
        }
      });
      this.counters.dropped += batch.length - good.length;
      return this.encoder.encode(good, now);
    }
  }

  #statsValues(): Parameters<IpfixEncoder["encodeStats"]>[0] {
    let lostEvents: number | bigint = 0;
    try {
      lostEvents = this.settings.lostEvents();
    } catch {
      // keep 0
    }
    return {
      notSentFlowRecords: this.counters.dropped,
      lostEvents,
      exportedMessages: this.counters.sentMessages,
      exportedOctets: this.counters.sentBytes,
      exportedFlowRecords: this.counters.sentRecords,
      systemInitTimeMs: this.settings.startMs,
    };
  }

  /** Flow and drop (not options) data records in one of this encoder's messages. */
  #flowRecordsIn(message: Uint8Array): number {
    const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
    let n = 0;
    for (let off = MESSAGE_HEADER_LENGTH; off + SET_HEADER_LENGTH <= message.length;) {
      const id = view.getUint16(off);
      const length = view.getUint16(off + 2);
      const recordLength = id === STATS_TEMPLATE_ID ? undefined : this.#recordLengths.get(id);
      if (recordLength !== undefined) n += Math.floor((length - SET_HEADER_LENGTH) / recordLength);
      if (length < SET_HEADER_LENGTH) break;
      off += length;
    }
    return n;
  }
}

/** A UDP collector: one unconnected socket; the host is looked up once. */
class UdpCollector extends Collector {
  #socket: dgram.Socket | undefined;
  #target: { address: string; family: 4 | 6 } | undefined;
  #opening: Promise<void> | undefined;

  get ready(): boolean {
    return this.#socket !== undefined;
  }

  get pending(): Promise<void> | undefined {
    return this.#opening;
  }

  open(): void {
    this.#opening = this.#open().finally(() => (this.#opening = undefined));
  }

  async #open(): Promise<void> {
    const { host } = this.address;
    let delay = this.settings.reconnectInitialMs;
    while (!this.abort.signal.aborted) {
      if (host.includes(":")) {
        this.#target = { address: host, family: 6 };
      } else if (ipv4ToNumber(host) >= 0) {
        this.#target = { address: host, family: 4 };
      } else {
        try {
          const found = await lookup(host);
          this.#target = { address: found.address, family: found.family === 6 ? 6 : 4 };
        } catch (err) {
          this.counters.connectFailures++;
          log.warn("Cannot look up IPFIX collector {collector}, retrying: {error}", {
            collector: this.label,
            error: errorText(err),
          });
          if (!await sleep(delay, this.abort.signal)) return;
          delay = Math.min(delay * 2, this.settings.reconnectMaxMs);
          continue;
        }
      }
      if (this.abort.signal.aborted) return;
      const target = this.#target;
      if (
        !netAllowed(target.address, this.address.port) || !netAllowed(anyAddress(target.family), 0)
      ) {
        log.error("Cannot export IPFIX to {collector}: no net permission for {address}", {
          collector: this.label,
          address: target.address,
        });
        return;
      }
      const socket = dgram.createSocket(this.#target.family === 6 ? "udp6" : "udp4");
      socket.on("error", (err) => {
        this.counters.sendErrors++;
        log.warn("IPFIX socket error for {collector}: {error}", {
          collector: this.label,
          error: errorText(err),
        });
      });
      this.#socket = socket;
      this.kick();
      return;
    }
  }

  protected async transmit(messages: readonly Uint8Array[]): Promise<boolean[]> {
    const socket = this.#socket;
    const target = this.#target;
    if (socket === undefined || target === undefined) {
      return messages.map(() => false);
    }
    const sendOne = (m: Uint8Array): Promise<boolean> =>
      new Promise<boolean>((resolve) => {
        const done = (err: unknown): void => {
          if (err) this.#failed(err);
          else this.failing = false;
          resolve(!err);
        };
        try {
          socket.send(m, this.address.port, target.address, done);
        } catch (err) {
          done(err);
        }
      });
    // One at a time: Deno's node:dgram does not keep the order of concurrent sends, and
    // templates must arrive before the data they describe.
    const sent: boolean[] = [];
    for (const m of messages) sent.push(await sendOne(m));
    return sent;
  }

  #failed(err: unknown): void {
    this.counters.sendErrors++;
    if (this.failing) return;
    this.failing = true;
    log.warn("Cannot send IPFIX to {collector}: {error}", {
      collector: this.label,
      error: errorText(err),
    });
  }

  protected async closeTransport(): Promise<void> {
    // A lookup in flight is not awaited (it cannot be cancelled); #open checks the abort signal
    // before it creates a socket.
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket === undefined) return;
    await new Promise<void>((resolve) => {
      try {
        socket.close(() => resolve());
      } catch {
        resolve();
      }
    });
  }
}

/** A TCP collector: reconnects with capped exponential backoff, templates first every time. */
class TcpCollector extends Collector {
  #conn: Deno.TcpConn | undefined;
  #connecting: Promise<void> | undefined;
  #reader: Promise<void> | undefined;
  #connected = false;
  #connectedAt = 0;
  #delay: number;

  constructor(address: CollectorAddress, settings: CollectorSettings) {
    super(address, settings);
    this.#delay = settings.reconnectInitialMs;
  }

  get ready(): boolean {
    return this.#conn !== undefined;
  }

  get pending(): Promise<void> | undefined {
    return this.#connecting;
  }

  open(): void {
    this.#reconnect(false);
  }

  #reconnect(wait: boolean): void {
    if (this.abort.signal.aborted || this.#connecting !== undefined) return;
    const attempt: Promise<void> = this.#connect(wait).finally(() => {
      if (this.#connecting === attempt) this.#connecting = undefined;
    });
    this.#connecting = attempt;
  }

  async #connect(wait: boolean): Promise<void> {
    const signal = this.abort.signal;
    const { host, port } = this.address;
    while (!signal.aborted) {
      if (wait) {
        const delay = this.#delay;
        this.#delay = Math.min(delay * 2, this.settings.reconnectMaxMs);
        if (!await sleep(delay, signal)) return;
      }
      wait = true;
      const attempt = new AbortController();
      const timer = setTimeout(() => attempt.abort(), this.settings.connectTimeoutMs);
      const cancel = (): void => attempt.abort();
      signal.addEventListener("abort", cancel, { once: true });
      let conn: Deno.TcpConn;
      try {
        conn = await Deno.connect({ hostname: host, port, signal: attempt.signal });
      } catch (err) {
        this.counters.connectFailures++;
        if (!signal.aborted) this.#retryLater("Cannot connect to", err);
        continue;
      } finally {
        clearTimeout(timer);
        signal.removeEventListener("abort", cancel);
      }
      if (signal.aborted) {
        closeQuietly(conn);
        return;
      }
      // A new transport session knows no templates: send them all before any data.
      const templates = this.templates();
      const closeOnAbort = (): void => closeQuietly(conn);
      signal.addEventListener("abort", closeOnAbort, { once: true });
      try {
        try {
          conn.setKeepAlive(true);
        } catch {
          // not fatal: dead peers are then only noticed by a failing write
        }
        await writeAll(conn, concat(templates));
      } catch (err) {
        closeQuietly(conn);
        this.counters.sendErrors++;
        this.account(templates, templates.map(() => false));
        if (!signal.aborted) this.#retryLater("Cannot send templates to", err);
        continue;
      } finally {
        signal.removeEventListener("abort", closeOnAbort);
      }
      if (signal.aborted) {
        closeQuietly(conn);
        return;
      }
      this.account(templates, templates.map(() => true));
      if (this.#connected) this.counters.reconnects++;
      this.#connected = true;
      this.#connectedAt = Date.now();
      this.failing = false;
      log.info("Connected to IPFIX collector {collector}", { collector: this.label });
      this.#connecting = undefined; // a loss from now on starts a new attempt
      this.#conn = conn;
      this.#reader = this.#watch(conn);
      this.kick();
      return;
    }
  }

  #retryLater(what: string, err: unknown): void {
    const message = `${what} IPFIX collector {collector}, retrying in {delay} ms: {error}`;
    const props = { collector: this.label, delay: this.#delay, error: errorText(err) };
    if (this.failing) log.debug(message, props);
    else log.warn(message, props);
    this.failing = true;
  }

  /** Reads until the collector closes the connection (collectors send nothing). */
  async #watch(conn: Deno.TcpConn): Promise<void> {
    const buf = new Uint8Array(512);
    let why = "closed by the collector";
    try {
      while (await conn.read(buf) !== null) {
        // ignore anything the collector sends
      }
    } catch (err) {
      why = errorText(err);
    }
    this.#lost(conn, why);
  }

  #lost(conn: Deno.TcpConn, why: string): void {
    if (this.#conn !== conn) return;
    this.#conn = undefined;
    closeQuietly(conn);
    if (this.abort.signal.aborted) return;
    // A connection that lived long resets the backoff; one that flaps keeps doubling it.
    if (Date.now() - this.#connectedAt >= this.settings.reconnectMaxMs) {
      this.#delay = this.settings.reconnectInitialMs;
    }
    log.warn("Lost IPFIX collector {collector} ({why}), reconnecting in {delay} ms", {
      collector: this.label,
      why,
      delay: this.#delay,
    });
    this.#reconnect(true);
  }

  protected async transmit(messages: readonly Uint8Array[]): Promise<boolean[]> {
    const conn = this.#conn;
    if (conn === undefined) return messages.map(() => false);
    try {
      await writeAll(conn, concat(messages));
      return messages.map(() => true);
    } catch (err) {
      this.counters.sendErrors++;
      this.#lost(conn, errorText(err));
      return messages.map(() => false);
    }
  }

  protected async closeTransport(): Promise<void> {
    const conn = this.#conn;
    this.#conn = undefined;
    if (conn !== undefined) closeQuietly(conn);
    await this.#connecting;
    await this.#reader;
  }
}

function positive(name: string, value: number, integer: boolean): number {
  if (!(value > 0) || (integer && !Number.isInteger(value))) {
    throw new RangeError(
      `Cannot use ${name} ${value}: must be a positive ${integer ? "integer" : "number"}`,
    );
  }
  return value;
}

/**
 * Exports the tracker's records as IPFIX to one or more collectors (see the module
 * documentation for what is sent). Opens its sockets and starts connecting in the constructor;
 * {@linkcode IpfixExporter.close} it (or `await using` it) to flush and release them.
 *
 * @example Usage
 * ```ts
 * import { IpfixExporter } from "./ipfix_export.ts";
 * await using exporter = new IpfixExporter({
 *   collectors: ["127.0.0.1:4739"],
 *   observationDomainId: 1,
 * });
 * exporter.write([]); // never throws, never blocks
 * if (exporter.stats().collectors[0]?.collector !== "udp://127.0.0.1:4739") throw new Error();
 * ```
 */
export class IpfixExporter implements RecordSink, AsyncDisposable {
  #collectors: Collector[];
  #timer: ReturnType<typeof setInterval>;
  #statsIntervalMs: number;
  #closeTimeoutMs: number;
  #lastStats: number;
  #closed = false;
  #closing: Promise<void> | undefined;
  #records = 0;
  #drops = 0;
  #skipped = 0;
  #invalid = 0;

  /**
   * Validates the options, opens the collectors' transports and starts the statistics timer.
   *
   * @param options Collectors, encoding, queue bound, timers.
   * @throws {Error} When a collector address is invalid or given twice, or the net permission
   *   for it (and for UDP, for binding the local wildcard address) is missing.
   * @throws {RangeError} When a queue size or interval is not positive.
   * @throws {IpfixError} When an encoder option is out of range (e.g. MTU, domain).
   */
  constructor(options: IpfixExporterOptions) {
    const addresses = options.collectors.map((c) => typeof c === "string" ? parseCollector(c) : c);
    if (addresses.length === 0) throw new Error("Cannot export IPFIX: no collector given");
    const seen = new Set<string>();
    for (const a of addresses) {
      const label = collectorLabel(a);
      if (seen.has(label)) throw new Error(`Cannot export IPFIX to "${label}" twice`);
      seen.add(label);
      const family = a.host.includes(":") ? 6 : 4;
      const local = a.transport === "udp" ? [anyAddress(family)] : [];
      for (const host of [a.host, ...local]) {
        const port = host === a.host ? a.port : 0;
        if (!netAllowed(host, port)) {
          throw new Error(
            `Cannot export IPFIX to "${label}": no net permission for ${host}:${port} ` +
              "(run with --allow-net)",
          );
        }
      }
    }
    const settings: CollectorSettings = {
      encoder: {
        ...(options.observationDomainId !== undefined
          ? { observationDomainId: options.observationDomainId }
          : {}),
        ...(options.counters !== undefined ? { counters: options.counters } : {}),
        ...(options.mtu !== undefined ? { mtu: options.mtu } : {}),
        ...(options.templateRefreshMs !== undefined
          ? { templateRefreshMs: options.templateRefreshMs }
          : {}),
        ...(options.templateRefreshPackets !== undefined
          ? { templateRefreshPackets: options.templateRefreshPackets }
          : {}),
        ...(options.countOptionsRecords !== undefined
          ? { countOptionsRecords: options.countOptionsRecords }
          : {}),
        ...(options.padding !== undefined ? { padding: options.padding } : {}),
      },
      queueSize: positive("an IPFIX queue size of", options.queueSize ?? DEFAULT_QUEUE_SIZE, true),
      lostEvents: options.lostEvents ?? ((): number => 0),
      startMs: Date.now(),
      reconnectInitialMs: positive(
        "a reconnect delay of",
        options.reconnectInitialMs ?? DEFAULT_RECONNECT_INITIAL_MS,
        false,
      ),
      reconnectMaxMs: positive(
        "a reconnect delay cap of",
        options.reconnectMaxMs ?? DEFAULT_RECONNECT_MAX_MS,
        false,
      ),
      connectTimeoutMs: positive(
        "a connect timeout of",
        options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
        false,
      ),
    };
    this.#statsIntervalMs = positive(
      "a statistics interval of",
      options.statsIntervalMs ?? DEFAULT_STATS_INTERVAL_MS,
      false,
    );
    const closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    if (!(closeTimeoutMs >= 0)) {
      throw new RangeError(`Cannot use a close timeout of ${closeTimeoutMs}: must be 0 or more`);
    }
    this.#closeTimeoutMs = closeTimeoutMs;
    // Every encoder is built (and its options checked) before any socket is opened.
    this.#collectors = addresses.map((a) =>
      a.transport === "tcp" ? new TcpCollector(a, settings) : new UdpCollector(a, settings)
    );
    for (const c of this.#collectors) c.open();
    this.#lastStats = Date.now();
    this.#timer = setInterval(() => this.#tick(), Math.min(TICK_MS, this.#statsIntervalMs));
    Deno.unrefTimer(this.#timer);
  }

  /** The collectors, as canonical labels (e.g. `udp://127.0.0.1:4739`), in option order. */
  get collectors(): string[] {
    return this.#collectors.map((c) => c.label);
  }

  /** Whether {@linkcode IpfixExporter.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Converts the records that are exported (`end`, `update`, `drop`) and queues them for every
   * collector. Synchronous and cheap; never throws. After close, exportable records are counted
   * as dropped.
   *
   * @param records A batch of tracker records.
   */
  write(records: readonly FlowRecord[]): void {
    try {
      const flows: IpfixRecord[] = [];
      let drops = 0;
      for (const record of records) {
        let flow: IpfixRecord | undefined;
        try {
          flow = recordToIpfixRecord(record);
        } catch (err) {
          if (this.#invalid++ === 0) {
            log.warn("Cannot export record as IPFIX: {error}", { error: errorText(err) });
          }
          continue;
        }
        if (flow === undefined) {
          this.#skipped++;
        } else {
          flows.push(flow);
          if (flow.kind === "drop") drops++;
        }
      }
      if (flows.length === 0) return;
      if (this.#closed) {
        for (const c of this.#collectors) c.counters.dropped += flows.length;
        return;
      }
      this.#records += flows.length;
      this.#drops += drops;
      for (const c of this.#collectors) c.enqueue(flows);
    } catch (err) {
      log.error("IPFIX export failed: {error}", { error: errorText(err) });
    }
  }

  /**
   * A snapshot of the counters, for the stats line.
   *
   * @returns Exporter and per-collector counters.
   */
  stats(): IpfixExporterStats {
    return {
      records: this.#records,
      drops: this.#drops,
      skipped: this.#skipped,
      invalid: this.#invalid,
      collectors: this.#collectors.map((c) => c.stats()),
    };
  }

  /**
   * Stops taking records, then for at most `closeTimeoutMs` sends a last statistics record and
   * what is queued (a TCP collector that is not connected gets it only if a connection attempt
   * in flight succeeds in time), then closes every socket. Records still queued then count as
   * dropped. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /** Same as {@linkcode IpfixExporter.close}; for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), this.#closeTimeoutMs);
    try {
      // Records first, then the statistics record that counts them.
      await Promise.all(this.#collectors.map(async (c) => {
        await c.drain(deadline.signal);
        c.requestStats();
        await c.drain(deadline.signal);
      }));
    } finally {
      clearTimeout(timer);
      await Promise.all(this.#collectors.map((c) => c.shutdown()));
    }
  }

  #tick(): void {
    const now = Date.now();
    const statsDue = now - this.#lastStats >= this.#statsIntervalMs;
    if (statsDue) this.#lastStats = now;
    for (const c of this.#collectors) {
      if (statsDue) c.requestStats();
      else c.kick();
    }
  }
}
