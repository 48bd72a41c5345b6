/**
 * Drop records from packets a firewall rule logged (nft `log group N prefix "<rule-id>"`, read over
 * NFLOG by `ffi/nflog.ts`). Pure conversion ({@linkcode buildDropRecord}) plus a small runner
 * ({@linkcode DropTracker}) that feeds a {@linkcode RecordSink} — the same `FlowLogger` chain the
 * conntrack records go through.
 *
 * @module
 */

import { decodeIp } from "./capture/packet.ts";
import { Protocol } from "./flow.ts";
import type { Overlay } from "./overlay.ts";
import type { FlowRecord } from "./record.ts";
import type { RecordSink } from "./tracker.ts";
import { uuidV4 } from "./uuid.ts";

/** One packet as the kernel logged it. */
export interface LoggedPacket {
  /** The rule's log prefix (`log prefix "..."`), untrimmed; empty when the rule set none. */
  prefix: string;
  /** The logged IP packet (network header first), possibly cut at the copy range. */
  payload: Uint8Array;
}

/** Counters of a {@linkcode DropSource}. */
export interface DropSourceStats {
  /** Logged packets received. */
  received: number;
  /** Times the socket buffer overran (ENOBUFS): logged packets were lost. */
  overruns: number;
}

/** A stream of logged packets (NFLOG over FFI, or a fake in tests). */
export interface DropSource {
  /** Batches of logged packets until closed. */
  batches(): AsyncIterable<readonly LoggedPacket[]>;
  /** Stops the stream; a running iteration ends. Idempotent. */
  close(): void;
  /** Current counters. */
  stats(): DropSourceStats;
}

/**
 * The fields of a decoded IP packet a drop record needs; a `CapturedPacket` from `decodeIp`
 * (`lib/capture/packet.ts`) has them all.
 */
export interface DroppedPacket {
  /** Source address, canonical text. */
  readonly source: string;
  /** Destination address, canonical text. */
  readonly destination: string;
  /** IANA number of the upper-layer protocol. */
  readonly protocol: number;
  /** TCP/UDP/SCTP source port, else 0. */
  readonly sourcePort: number;
  /** TCP/UDP/SCTP destination port, else 0. */
  readonly destinationPort: number;
  /** ICMP or ICMPv6 type, else 0. */
  readonly icmpType: number;
  /** ICMP or ICMPv6 code, else 0. */
  readonly icmpCode: number;
  /** Length of the whole IP packet in bytes, from its header. */
  readonly ipLength: number;
}

/** IDs and time of a drop record. */
export interface DropContext {
  /** Event ID. Default: a fresh UUIDv4. */
  eventId?: string;
  /** Flow ID. Default: a fresh UUIDv4 (a drop is a flow of its own). */
  flowId?: string;
  /** Receipt time. Default: now. */
  timestamp?: Date;
}

/**
 * Builds the `drop` record of one logged packet: its tuple (ports for TCP/UDP/SCTP, ICMP type and
 * code for ICMP/ICMPv6), direction by the overlay rules with mark 0 (a packet to an own address is
 * ingress), counters of that one packet (rx for ingress and unknown, tx for egress), `rule_id` =
 * the trimmed prefix (`null` when empty), `conntrack_id` 0.
 *
 * @param packet The decoded IP packet.
 * @param prefix The rule's log prefix.
 * @param overlay Overlay prefixes and own addresses.
 * @param context IDs and time.
 * @returns The record, or `undefined` when the packet does not touch the overlay.
 *
 * @example Usage
 * ```ts
 * import { decodeIp } from "./capture/packet.ts";
 * import { buildDropRecord } from "./drops.ts";
 * import { Overlay } from "./overlay.ts";
 * const packet = decodeIp(new Uint8Array([
 *   0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 100, 64, 0, 2, 100, 64, 0, 1,
 *   0x14, 0xe9, 0, 53, 0, 8, 0, 0,
 * ]))!;
 * const overlay = new Overlay({ networks: ["100.64.0.0/16"], addresses: ["100.64.0.1"] });
 * const r = buildDropRecord(packet, "deny-dns ", overlay);
 * if (r?.direction !== "ingress" || r.ruleId !== "deny-dns") throw new Error("bad record");
 * ```
 */
export function buildDropRecord(
  packet: DroppedPacket,
  prefix: string,
  overlay: Overlay,
  context: DropContext = {},
): FlowRecord | undefined {
  const { source, destination } = packet;
  if (!overlay.isRelevant(source, destination, 0)) return undefined;
  const direction = overlay.direction(source, destination, 0);
  let sourcePort = 0;
  let destPort = 0;
  let icmpType = 0;
  let icmpCode = 0;
  switch (packet.protocol) {
    case Protocol.TCP:
    case Protocol.UDP:
    case Protocol.SCTP:
      sourcePort = packet.sourcePort;
      destPort = packet.destinationPort;
      break;
    case Protocol.ICMP:
    case Protocol.ICMPV6:
      icmpType = packet.icmpType;
      icmpCode = packet.icmpCode;
      break;
  }
  const bytes = BigInt(packet.ipLength);
  const tx = direction === "egress";
  const ruleId = prefix.trim();
  return {
    eventId: context.eventId ?? uuidV4(),
    timestamp: context.timestamp ?? new Date(),
    flowId: context.flowId ?? uuidV4(),
    type: "drop",
    direction,
    protocol: packet.protocol,
    sourceIp: source,
    destIp: destination,
    sourcePort,
    destPort,
    icmpType,
    icmpCode,
    rxPackets: tx ? 0n : 1n,
    txPackets: tx ? 1n : 0n,
    rxBytes: tx ? 0n : bytes,
    txBytes: tx ? bytes : 0n,
    conntrackId: 0,
    ruleId: ruleId === "" ? null : ruleId,
  };
}

/** Counters of a {@linkcode DropTracker}. */
export interface DropStats {
  /** Drop records written. */
  drops: number;
  /** Logged packets that are not IPv4/IPv6 or are cut inside the IP header. */
  undecodable: number;
  /** Logged packets that do not touch the overlay (not written). */
  irrelevant: number;
  /** The source's counters (received, overruns). */
  source: DropSourceStats;
}

/** Options of {@linkcode DropTracker}. */
export interface DropTrackerOptions {
  /** Overlay prefixes and own addresses. */
  overlay: Overlay;
  /** Clock. Default `() => new Date()`. */
  now?: () => Date;
  /** Called once when the source or the sink fails; the tracker has stopped by then. */
  onFatal?: (error: unknown) => void;
}

/**
 * Reads a {@linkcode DropSource} and writes one `drop` record per logged packet to a sink.
 */
export class DropTracker {
  #open: () => DropSource;
  #sink: RecordSink;
  #overlay: Overlay;
  #now: () => Date;
  #onFatal: ((error: unknown) => void) | undefined;
  #source: DropSource | undefined;
  #loop: Promise<void> | undefined;
  #stopped = false;
  #drops = 0;
  #undecodable = 0;
  #irrelevant = 0;

  /**
   * Creates the tracker; nothing is opened before {@linkcode DropTracker.start}.
   *
   * @param open Opens the source (e.g. `() => openNflogSource(lib, { group })`).
   * @param sink Where records go (the flow logger).
   * @param options Overlay, clock, failure callback.
   */
  constructor(open: () => DropSource, sink: RecordSink, options: DropTrackerOptions) {
    this.#open = open;
    this.#sink = sink;
    this.#overlay = options.overlay;
    this.#now = options.now ?? (() => new Date());
    this.#onFatal = options.onFatal;
  }

  /** Opens the source and starts reading. Throws when the source cannot be opened. */
  start(): void {
    if (this.#source !== undefined || this.#stopped) return;
    const source = this.#open();
    this.#source = source;
    this.#loop = this.#run(source);
  }

  async #run(source: DropSource): Promise<void> {
    try {
      for await (const batch of source.batches()) this.handle(batch);
    } catch (err) {
      if (!this.#stopped) {
        this.#stopped = true;
        source.close();
        this.#onFatal?.(err);
      }
    }
  }

  /**
   * Converts and writes one batch (what the read loop does; public for tests).
   *
   * @param batch Logged packets.
   */
  handle(batch: readonly LoggedPacket[]): void {
    const records: FlowRecord[] = [];
    const timestamp = this.#now();
    for (const logged of batch) {
      const packet = decodeIp(logged.payload);
      if (packet === undefined) {
        this.#undecodable++;
        continue;
      }
      const record = buildDropRecord(packet, logged.prefix, this.#overlay, { timestamp });
      if (record === undefined) {
        this.#irrelevant++;
        continue;
      }
      records.push(record);
    }
    if (records.length === 0) return;
    this.#sink.write(records);
    this.#drops += records.length;
  }

  /** Stops reading and closes the source once the read loop ended. Idempotent. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const source = this.#source;
    if (source === undefined) return;
    source.close();
    await this.#loop;
  }

  /**
   * Current counters.
   *
   * @returns A copy.
   */
  stats(): DropStats {
    const source = this.#source?.stats() ?? { received: 0, overruns: 0 };
    return {
      drops: this.#drops,
      undecodable: this.#undecodable,
      irrelevant: this.#irrelevant,
      source: { ...source },
    };
  }
}
