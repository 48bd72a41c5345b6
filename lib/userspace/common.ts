/**
 * What the userspace TCP, UDP and ICMP trackers share: options, connection keys and their
 * NetBird-style text form.
 *
 * @module
 */

import { formatIp, parseIp } from "../net.ts";
import type { RecordSink } from "../tracker.ts";

/** Which side opened a tracked connection: `egress` = this host, `ingress` = the peer. */
export type TrackedDirection = "ingress" | "egress";

/**
 * How many entries one eviction looks at (NetBird's `evictSampleSize`): the oldest of them goes,
 * so eviction stays O(1) at the cap.
 */
export const EVICTION_SAMPLE_SIZE = 8;

/** Options every userspace tracker takes. */
export interface TrackerBaseOptions {
  /**
   * Receives the start/end records. Each public call that produces records writes them as one
   * batch, synchronously, before it returns. Without a sink, records are discarded.
   */
  sink?: RecordSink;
  /**
   * Monotonic clock in milliseconds (default `performance.now`). Read once per packet; it stamps
   * `lastSeen` and drives timeouts and eviction. Tests and packet-capture replay inject their own.
   */
  clock?: () => number;
  /** Wall clock for the records' `timestamp` (default `new Date()`). */
  wallClock?: () => Date;
  /** Generator of flow and event IDs (default random UUIDv4, as NetBird's `uuid.New()`). */
  randomId?: () => string;
}

/** The key of a TCP or UDP entry: the initiator's 4-tuple (NetBird's `ConnKey`). */
export interface ConnKey {
  /** Initiator address. */
  readonly source: string;
  /** Responder address. */
  readonly destination: string;
  /** Initiator port. */
  readonly sourcePort: number;
  /** Responder port. */
  readonly destinationPort: number;
}

/** The key of an ICMP echo entry (NetBird's `ICMPConnKey`). */
export interface IcmpConnKey {
  /** Address that sent the echo request. */
  readonly source: string;
  /** Address the echo request went to. */
  readonly destination: string;
  /** Echo identifier. */
  readonly id: number;
}

/** IPv4-mapped IPv6 shown as plain IPv4, IPv6 bracketed: Go's `JoinHostPort(addr.Unmap())`. */
function hostPort(address: string, port: number): string {
  const bytes = parseIp(address);
  let text = address;
  if (bytes !== undefined) {
    const mapped = bytes.length === 16 && bytes.subarray(0, 10).every((b) => b === 0) &&
      bytes[10] === 0xff && bytes[11] === 0xff;
    text = formatIp(mapped ? bytes.subarray(12) : bytes);
  }
  return text.includes(":") ? `[${text}]:${port}` : `${text}:${port}`;
}

/**
 * The text form of a TCP/UDP key, as NetBird logs it: `host:port → host:port`, IPv6 in brackets,
 * IPv4-mapped IPv6 shown as IPv4.
 *
 * @param key The key.
 * @returns The text.
 *
 * @example Usage
 * ```ts
 * import { connKeyString } from "./common.ts";
 * const text = connKeyString({
 *   source: "2001:db8::1", destination: "2001:db8::2", sourcePort: 54321, destinationPort: 443,
 * });
 * if (text !== "[2001:db8::1]:54321 → [2001:db8::2]:443") throw new Error(text);
 * ```
 */
export function connKeyString(key: ConnKey): string {
  return `${hostPort(key.source, key.sourcePort)} → ${
    hostPort(key.destination, key.destinationPort)
  }`;
}

/**
 * The text form of an ICMP key, as NetBird logs it: `src → dst (id N)`, addresses as given (no
 * brackets, no unmapping).
 *
 * @param key The key.
 * @returns The text.
 *
 * @example Usage
 * ```ts
 * import { icmpConnKeyString } from "./common.ts";
 * const text = icmpConnKeyString({ source: "192.168.1.1", destination: "10.0.0.1", id: 1234 });
 * if (text !== "192.168.1.1 → 10.0.0.1 (id 1234)") throw new Error(text);
 * ```
 */
export function icmpConnKeyString(key: IcmpConnKey): string {
  return `${key.source} → ${key.destination} (id ${key.id})`;
}
