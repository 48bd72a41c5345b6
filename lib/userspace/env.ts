/**
 * NetBird's userspace-conntrack environment knobs (`NB_CONNTRACK_*`), parsed the way NetBird
 * parses them: durations with Go's `time.ParseDuration`, caps with `strconv.Atoi`; an empty,
 * invalid or non-positive value falls back to the default with a warning.
 *
 * @module
 */

import type { IcmpTrackerOptions } from "./icmp.ts";
import type { TcpTrackerOptions } from "./tcp.ts";
import type { UdpTrackerOptions } from "./udp.ts";

/** Names of the environment variables NetBird's userspace trackers read. */
export const CONNTRACK_ENV = {
  /** FIN-WAIT-1 / FIN-WAIT-2 / CLOSING timeout, Go duration. */
  TCP_FIN_WAIT_TIMEOUT: "NB_CONNTRACK_TCP_FIN_WAIT_TIMEOUT",
  /** CLOSE-WAIT timeout, Go duration. */
  TCP_CLOSE_WAIT_TIMEOUT: "NB_CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT",
  /** LAST-ACK timeout, Go duration. */
  TCP_LAST_ACK_TIMEOUT: "NB_CONNTRACK_TCP_LAST_ACK_TIMEOUT",
  /** TCP table cap, integer. */
  TCP_MAX: "NB_CONNTRACK_TCP_MAX",
  /** UDP table cap, integer. */
  UDP_MAX: "NB_CONNTRACK_UDP_MAX",
  /** ICMP table cap, integer. */
  ICMP_MAX: "NB_CONNTRACK_ICMP_MAX",
} as const;

const UNIT_NS: Record<string, number> = {
  ns: 1,
  us: 1e3,
  "µs": 1e3, // U+00B5 micro sign
  "μs": 1e3, // U+03BC Greek mu
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};
const DURATION_RE = /^(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$/;
const PART_RE = /(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g;
const MAX_NS = 2 ** 63 - 1;

/**
 * Parses a Go duration string (`time.ParseDuration`): a signed sequence of decimal numbers with
 * units `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`, such as `"50ms"`, `"1h30m"`, `"-1.5s"`; `"0"`
 * needs no unit.
 *
 * @param text The duration.
 * @returns Milliseconds (possibly fractional or negative), or `undefined` when Go would reject
 *   the text.
 *
 * @example Usage
 * ```ts
 * import { parseGoDuration } from "./env.ts";
 * if (parseGoDuration("1h30m") !== 5_400_000) throw new Error("wrong value");
 * if (parseGoDuration("30") !== undefined) throw new Error("a unit is required");
 * ```
 */
export function parseGoDuration(text: string): number | undefined {
  let s = text;
  let sign = 1;
  if (s.startsWith("-") || s.startsWith("+")) {
    if (s[0] === "-") sign = -1;
    s = s.slice(1);
  }
  if (s === "0") return 0;
  if (!DURATION_RE.test(s)) return undefined;
  let ns = 0;
  for (const [, value, unit] of s.matchAll(PART_RE)) ns += Number(value) * UNIT_NS[unit!]!;
  if (ns > MAX_NS) return undefined;
  return (sign * ns) / 1e6;
}

/**
 * Parses a decimal integer as Go's `strconv.Atoi` does (optional sign, digits only).
 *
 * @param text The number.
 * @returns The value, or `undefined` when Go would reject the text.
 *
 * @example Usage
 * ```ts
 * import { parseGoInt } from "./env.ts";
 * if (parseGoInt("+4") !== 4 || parseGoInt("4k") !== undefined) throw new Error("wrong parse");
 * ```
 */
export function parseGoInt(text: string): number | undefined {
  if (!/^[+-]?\d+$/.test(text)) return undefined;
  const n = Number(text);
  return Math.abs(n) <= 2 ** 63 ? n : undefined;
}

/** Tracker options found in the environment, plus warnings for values that were ignored. */
export interface ConntrackEnvOptions {
  /** TCP options that were set. */
  tcp: Pick<
    TcpTrackerOptions,
    "finWaitTimeoutMs" | "closeWaitTimeoutMs" | "lastAckTimeoutMs" | "maxEntries"
  >;
  /** UDP options that were set. */
  udp: Pick<UdpTrackerOptions, "maxEntries">;
  /** ICMP options that were set. */
  icmp: Pick<IcmpTrackerOptions, "maxEntries">;
  /** One message per invalid or non-positive value (which then keeps its default). */
  warnings: string[];
}

/**
 * Reads NetBird's `NB_CONNTRACK_*` variables through `getEnv` (so callers decide about env
 * permissions and tests need none).
 *
 * @param getEnv Returns a variable's value, or `undefined` when unset.
 * @returns The options to spread into the trackers' options, and warnings.
 *
 * @example Usage
 * ```ts
 * import { conntrackOptionsFromEnv } from "./env.ts";
 * const env = new Map([["NB_CONNTRACK_TCP_FIN_WAIT_TIMEOUT", "50ms"], ["NB_CONNTRACK_UDP_MAX", "0"]]);
 * const { tcp, udp, warnings } = conntrackOptionsFromEnv((name) => env.get(name));
 * if (tcp.finWaitTimeoutMs !== 50 || udp.maxEntries !== undefined || warnings.length !== 1) {
 *   throw new Error("unexpected parse");
 * }
 * ```
 */
export function conntrackOptionsFromEnv(
  getEnv: (name: string) => string | undefined,
): ConntrackEnvOptions {
  const warnings: string[] = [];
  const read = (name: string, parse: (text: string) => number | undefined): number | undefined => {
    const text = getEnv(name);
    if (text === undefined || text === "") return undefined;
    const value = parse(text);
    if (value === undefined) {
      warnings.push(`Invalid ${name}="${text}", using the default`);
      return undefined;
    }
    if (value <= 0) {
      warnings.push(`Invalid ${name}="${text}": must be positive, using the default`);
      return undefined;
    }
    return value;
  };
  const result: ConntrackEnvOptions = { tcp: {}, udp: {}, icmp: {}, warnings };
  const finWait = read(CONNTRACK_ENV.TCP_FIN_WAIT_TIMEOUT, parseGoDuration);
  if (finWait !== undefined) result.tcp.finWaitTimeoutMs = finWait;
  const closeWait = read(CONNTRACK_ENV.TCP_CLOSE_WAIT_TIMEOUT, parseGoDuration);
  if (closeWait !== undefined) result.tcp.closeWaitTimeoutMs = closeWait;
  const lastAck = read(CONNTRACK_ENV.TCP_LAST_ACK_TIMEOUT, parseGoDuration);
  if (lastAck !== undefined) result.tcp.lastAckTimeoutMs = lastAck;
  const tcpMax = read(CONNTRACK_ENV.TCP_MAX, parseGoInt);
  if (tcpMax !== undefined) result.tcp.maxEntries = tcpMax;
  const udpMax = read(CONNTRACK_ENV.UDP_MAX, parseGoInt);
  if (udpMax !== undefined) result.udp.maxEntries = udpMax;
  const icmpMax = read(CONNTRACK_ENV.ICMP_MAX, parseGoInt);
  if (icmpMax !== undefined) result.icmp.maxEntries = icmpMax;
  return result;
}
