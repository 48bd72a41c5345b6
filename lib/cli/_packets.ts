/**
 * The packet → userspace-tracker adapter shared by `netbird-ct replay` (packets from a capture
 * file) and `netbird-ct capture` (packets from a live AF_PACKET socket): the packet's time is the
 * tracker's clock, only overlay-relevant packets are tracked, and each packet is given a
 * direction the way NetBird's filter would: source in `--address` → outbound; otherwise a reply
 * to a tracked flow, or else a new inbound flow the ACL accepted.
 *
 * @module
 */

import type { CapturedPacket } from "../capture/mod.ts";
import type { FlowRecord } from "../record.ts";
import type { RecordSink } from "../tracker.ts";
import { Overlay } from "../overlay.ts";
import { TCP_END_MODES, type TcpEndMode, UserspaceTracker } from "../userspace/mod.ts";
import { checkOverlayFlags, UsageError } from "./args.ts";
import type { CliLogLevel } from "./logging.ts";

/** The `parseArgs` options replay and capture share. */
export const PACKET_FLAG_OPTIONS = {
  network: { type: "string", short: "n", multiple: true },
  address: { type: "string", short: "a", multiple: true },
  output: { type: "string", short: "o" },
  "tcp-end": { type: "string" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** The options replay and capture share, checked. */
export interface PacketFlags {
  /** `--help`. */
  help: boolean;
  /** `--network` values. */
  networks: string[];
  /** `--address` values. */
  addresses: string[];
  /** `--output`; `undefined` = stdout. */
  output: string | undefined;
  /** `--log-level`. */
  logLevel: CliLogLevel;
  /** `--tcp-end`: when TCP end records are written. */
  tcpEnd: TcpEndMode;
}

/**
 * Checks the values of {@linkcode PACKET_FLAG_OPTIONS} (not whether the required ones are given:
 * see {@linkcode requireOverlayFlags}).
 *
 * @param v The values `parseArgs` returned.
 * @returns The checked options.
 * @throws {UsageError} With a one-line message naming the flag.
 */
export function packetFlags(v: {
  network?: string[];
  address?: string[];
  output?: string;
  "tcp-end"?: string;
  "log-level"?: string;
  help?: boolean;
}): PacketFlags {
  const networks = v.network ?? [];
  const addresses = v.address ?? [];
  const logLevel = checkOverlayFlags(v["log-level"] ?? "info", networks, addresses);
  if (v.output === "") throw new UsageError(`invalid --output "": expected a file`);
  const tcpEnd = parseTcpEnd(v["tcp-end"]);
  return { help: v.help ?? false, networks, addresses, output: v.output, logLevel, tcpEnd };
}

/**
 * Requires `--network` and `--address` (unless `--help`).
 *
 * @param flags The checked options.
 * @param addressHint What the addresses are, for the message ("this host's overlay address(es)").
 * @throws {UsageError} Naming the missing flag.
 */
export function requireOverlayFlags(flags: PacketFlags, addressHint: string): void {
  if (flags.help) return;
  if (flags.networks.length === 0) {
    throw new UsageError("missing --network: the overlay prefix(es), such as -n 100.64.0.0/10");
  }
  if (flags.addresses.length === 0) {
    throw new UsageError(`missing --address: ${addressHint}, such as -a 100.64.0.1`);
  }
}

/**
 * The default of `--tcp-end` for replay and capture: `expire`, so that TCP counters are the
 * kernel conntrack's (the close's final ACK included).
 */
export const DEFAULT_TCP_END: TcpEndMode = "expire";

/**
 * Checks a `--tcp-end` value.
 *
 * @param value The value; `undefined` = not given.
 * @returns The mode ({@linkcode DEFAULT_TCP_END} when not given).
 * @throws {UsageError} With a one-line message naming the flag and the value.
 */
export function parseTcpEnd(value: string | undefined): TcpEndMode {
  if (value === undefined) return DEFAULT_TCP_END;
  if (!(TCP_END_MODES as readonly string[]).includes(value)) {
    throw new UsageError(`invalid --tcp-end "${value}": expected expire or close`);
  }
  return value as TcpEndMode;
}

/**
 * The `--help` lines of `--tcp-end`, aligned with the other options.
 *
 * @param end What ends the run and thereby every flow ("the file ends", "the capture stops").
 * @returns The lines, without a final newline.
 */
export function tcpEndHelp(end: string): string {
  return `      --tcp-end WHEN     when a TCP flow's end record is written   default: expire
                         expire: when its entry leaves the tracker's table, as
                           conntrack's DESTROY: its TIME-WAIT or closed entry
                           times out (TIME-WAIT 4 min; cleanups every 5 min), a
                           new SYN reuses its ports, it is evicted, or ${end}.
                           Counts every packet until then, the close's final
                           ACK included, as conntrack does.
                         close: when the connection closes (TIME-WAIT, CLOSED or
                           RST), NetBird's timing: earlier, but the final ACK of
                           a FIN close comes after the record, which is then one
                           packet short of conntrack's counters.`;
}

/** Counters of the adapter (packets after decoding). */
export interface FeedStats {
  /** Decoded packets with neither address in the overlay. */
  outsideOverlay: number;
  /** IP fragments after the first (no transport header). */
  fragments: number;
  /** ICMPv6 neighbor discovery and multicast listener messages (never tracked). */
  ndp: number;
  /** Packets given to the tracker. */
  tracked: number;
  /** Flows started (start records). */
  flows: number;
}

/**
 * ICMPv6 types of neighbor discovery (133-137: router/neighbor solicitation and advertisement,
 * redirect) and multicast listener discovery (130-132, 143): link-local control traffic that
 * the kernel's conntrack leaves untracked.
 *
 * @param type ICMPv6 type.
 * @returns Whether it is NDP or MLD.
 */
export function isNeighborOrGroup(type: number): boolean {
  return (type >= 130 && type <= 137) || type === 143;
}

/** Options of {@linkcode PacketFeeder}. */
export interface PacketFeederOptions {
  /** Overlay prefixes. */
  networks: readonly string[];
  /** The capturing host's addresses: packets from them are outbound. */
  addresses: readonly string[];
  /** Where the tracker's records go. */
  sink: RecordSink;
  /** When TCP end records are written (`--tcp-end`). */
  tcpEnd: TcpEndMode;
}

/** Feeds decoded packets to a {@linkcode UserspaceTracker} whose clock is the packets' time. */
export class PacketFeeder {
  /** The counters. */
  readonly stats: FeedStats = { outsideOverlay: 0, fragments: 0, ndp: 0, tracked: 0, flows: 0 };
  /** The tracker. */
  readonly tracker: UserspaceTracker;
  #overlay: Overlay;
  #own: Set<string>;
  #nowMs = 0;
  #nowDate = new Date(0);

  /**
   * Creates the tracker.
   *
   * @param options Overlay, own addresses, the record sink and the TCP end mode.
   */
  constructor(options: PacketFeederOptions) {
    this.#overlay = new Overlay({
      networks: [...options.networks],
      addresses: [...options.addresses],
    });
    this.#own = new Set(this.#overlay.addresses);
    const stats = this.stats;
    const sink = options.sink;
    this.tracker = new UserspaceTracker({
      tcp: { end: options.tcpEnd },
      clock: () => this.#nowMs,
      wallClock: () => this.#nowDate,
      sink: {
        write(records: readonly FlowRecord[]): void {
          for (const r of records) if (r.type === "start") stats.flows++;
          sink.write(records);
        },
      },
    });
  }

  /**
   * Moves the tracker's clock forward (never back: merged captures may go backwards) and expires
   * idle flows.
   *
   * @param timestampNs Nanoseconds since the Unix epoch.
   */
  advance(timestampNs: bigint): void {
    const ms = Number(timestampNs) / 1e6;
    if (ms > this.#nowMs) {
      this.#nowMs = ms;
      this.#nowDate = new Date(Math.floor(ms));
    }
    this.tracker.tick(this.#nowMs);
  }

  /**
   * Advances the clock to the packet's time and tracks it if it touches the overlay.
   *
   * @param packet A decoded packet.
   * @returns Whether the tracker saw it.
   */
  feed(packet: CapturedPacket): boolean {
    this.advance(packet.timestampNs);
    const stats = this.stats;
    if (!this.#overlay.isRelevant(packet.source, packet.destination, 0)) {
      stats.outsideOverlay++;
      return false;
    }
    if (!packet.hasTransportHeader && packet.fragment) {
      stats.fragments++;
      return false;
    }
    if (packet.protocol === 58 && isNeighborOrGroup(packet.icmpType)) {
      // The kernel never makes conntrack entries for NDP or MLD; neither does the tracker here.
      stats.ndp++;
      return false;
    }
    stats.tracked++;
    const tracker = this.tracker;
    if (this.#own.has(packet.source)) tracker.trackOutbound(packet);
    else if (!tracker.isValidInbound(packet)) tracker.trackInbound(packet);
    return true;
  }

  /**
   * Ends every flow in the tracker's tables (end records): the open ones, and with
   * `tcpEnd: "expire"` also TCP flows in TIME-WAIT or closed, with everything counted so far.
   * Idempotent.
   */
  close(): void {
    this.tracker.close();
  }
}
