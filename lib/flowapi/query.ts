/**
 * The query API `GET /api/events/network-traffic`: NetBird's parameters and response envelope,
 * over the events a receiver stored. Parsing is pure, so every 400 is testable.
 *
 * Parameters (each at most once; anything else is a 400):
 *
 * | Parameter | Value |
 * |---|---|
 * | `page` | 1-based page, default 1 |
 * | `page_size` | 1 to 50000, default 1000 |
 * | `reporter_id` | the reporting peer's public key, base64 (a `+` sent unencoded, which arrives as a space, is restored) |
 * | `protocol` | IP protocol number 0-255, or `tcp`, `udp`, `icmp`, `icmpv6`, `sctp` |
 * | `type` | `start`, `end`, `drop`, `unknown` (or NetBird's `TYPE_START`, …) |
 * | `direction` | `ingress`, `egress`, `unknown` (or NetBird's `INGRESS`, `EGRESS`, `DIRECTION_UNKNOWN`) |
 * | `search` | case-insensitive substring of an address, a resource ID or the reporter ID |
 * | `start_date`, `end_date` | RFC 3339 date-times, inclusive (`2026-01-31T23:59:59Z`) |
 *
 * Results are sorted by event timestamp, newest first (what NetBird's dashboard shows), ties by
 * event ID descending.
 *
 * @module
 */

import type { StoredEvent } from "./proto.ts";
import type { EventQuery, QueryResult } from "./store.ts";

/** The path of the query API. */
export const QUERY_PATH = "/api/events/network-traffic";
/** Default `page_size` (NetBird's). */
export const DEFAULT_PAGE_SIZE = 1000;
/** Largest `page_size` (NetBird's). */
export const MAX_PAGE_SIZE = 50_000;
/** Largest `page`: keeps the offset a safe integer. */
export const MAX_PAGE = 1_000_000_000;
const MAX_SEARCH = 256;

/** A query parameter that cannot be used: the message names it. */
export class QueryParamError extends Error {
  /** The error name, `"QueryParamError"`. */
  override name = "QueryParamError";
  /** The parameter at fault. */
  readonly parameter: string;

  /**
   * Creates the error.
   *
   * @param parameter The parameter at fault.
   * @param message One line, naming the parameter.
   */
  constructor(parameter: string, message: string) {
    super(message);
    this.parameter = parameter;
  }
}

const KNOWN = new Set([
  "page",
  "page_size",
  "reporter_id",
  "protocol",
  "type",
  "direction",
  "search",
  "start_date",
  "end_date",
]);
/** NetBird's parameters that need its user and peer directory. */
const UNSUPPORTED = new Set(["user_id", "source_id", "destination_id", "connection_type"]);

// Maps, not object literals: a parameter such as "constructor" must not find anything.
const PROTOCOLS = new Map<string, number>([
  ["icmp", 1],
  ["tcp", 6],
  ["udp", 17],
  ["icmpv6", 58],
  ["sctp", 132],
]);
const TYPES = new Map<string, StoredEvent["type"]>([
  ["start", "start"],
  ["end", "end"],
  ["drop", "drop"],
  ["unknown", "unknown"],
  ["type_start", "start"],
  ["type_end", "end"],
  ["type_drop", "drop"],
  ["type_unknown", "unknown"],
]);
const DIRECTIONS = new Map<string, StoredEvent["direction"]>([
  ["ingress", "ingress"],
  ["egress", "egress"],
  ["unknown", "unknown"],
  ["direction_unknown", "unknown"],
]);

const RFC3339 =
  /^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-]([0-9]{2}):([0-9]{2}))$/;

/**
 * Parses an RFC 3339 date-time to ms since the epoch. A fraction finer than a millisecond is
 * rounded toward the inside of the range: up for a start, down for an end.
 *
 * @param text The date-time.
 * @param roundUp Round a sub-millisecond fraction up (for range starts).
 * @returns Milliseconds, or `undefined` if `text` is not a valid RFC 3339 date-time.
 *
 * @example Usage
 * ```ts
 * import { parseRfc3339 } from "./query.ts";
 * if (parseRfc3339("2026-01-01T01:00:00+01:00") !== Date.UTC(2026, 0, 1)) throw new Error();
 * if (parseRfc3339("2026-02-30T00:00:00Z") !== undefined) throw new Error("Feb 30 accepted");
 * ```
 */
export function parseRfc3339(text: string, roundUp = false): number | undefined {
  const m = RFC3339.exec(text);
  if (m === null) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 60) return undefined;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const daysInMonth = month === 2 ? (leap ? 29 : 28) : [4, 6, 9, 11].includes(month) ? 30 : 31;
  if (day < 1 || day > daysInMonth) return undefined;
  let offsetMin = 0;
  if (m[8] !== "Z" && m[8] !== "z") {
    const oh = Number(m[9]);
    const om = Number(m[10]);
    if (oh > 23 || om > 59) return undefined;
    offsetMin = (m[8]!.startsWith("-") ? -1 : 1) * (oh * 60 + om);
  }
  const fraction = m[7] === undefined ? 0 : Number(`0${m[7]}`) * 1000;
  const ms = roundUp ? Math.ceil(fraction) : Math.floor(fraction);
  // setUTCFullYear, not Date.UTC: Date.UTC maps years 0-99 to 1900-1999. A leap second (:60)
  // counts as the first second of the next minute.
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  const base = d.getTime() + (hour * 3600 + minute * 60 + second) * 1000;
  return base + ms - offsetMin * 60_000;
}

/**
 * Restores a base64 key from a query string: `+` sent unencoded arrives as a space, and URL-safe
 * base64 (`-`, `_`, no padding) is accepted.
 *
 * @param text The parameter value.
 * @returns Standard padded base64, or `undefined` if `text` is not base64.
 */
function normalizeBase64(text: string): string | undefined {
  let s = text.replaceAll(" ", "+").replaceAll("-", "+").replaceAll("_", "/");
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(s)) return undefined;
  s = s.replace(/=+$/, "");
  if (s.length % 4 === 1) return undefined;
  s += "=".repeat((4 - (s.length % 4)) % 4);
  try {
    atob(s);
  } catch {
    return undefined;
  }
  return s;
}

function wholeNumber(name: string, text: string, min: number, max: number): number {
  if (!/^[0-9]{1,10}$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new QueryParamError(
      name,
      `invalid ${name} "${text}": expected a whole number from ${min} to ${max}`,
    );
  }
  return Number(text);
}

/**
 * Validates the query string of `GET /api/events/network-traffic`.
 *
 * @param params The query string.
 * @returns The query.
 * @throws {QueryParamError} Naming the first parameter that cannot be used.
 *
 * @example Usage
 * ```ts
 * import { parseEventQuery, QueryParamError } from "./query.ts";
 * const q = parseEventQuery(new URLSearchParams("type=start&protocol=tcp&page_size=50"));
 * if (q.type !== "start" || q.protocol !== 6 || q.pageSize !== 50 || q.page !== 1) {
 *   throw new Error("parse failed");
 * }
 * try {
 *   parseEventQuery(new URLSearchParams("page_size=50001"));
 *   throw new Error("accepted");
 * } catch (err) {
 *   if (!(err instanceof QueryParamError) || err.parameter !== "page_size") throw err;
 * }
 * ```
 */
export function parseEventQuery(params: URLSearchParams): EventQuery {
  const seen = new Set<string>();
  for (const name of params.keys()) {
    if (UNSUPPORTED.has(name)) {
      throw new QueryParamError(
        name,
        `unsupported parameter "${name}": netbird-ct has no user or peer directory`,
      );
    }
    if (!KNOWN.has(name)) {
      throw new QueryParamError(
        name,
        `unknown parameter "${name}": expected ${[...KNOWN].join(", ")}`,
      );
    }
    if (seen.has(name)) throw new QueryParamError(name, `parameter "${name}" given more than once`);
    seen.add(name);
  }
  const q: EventQuery = { page: 1, pageSize: DEFAULT_PAGE_SIZE };
  const page = params.get("page");
  if (page !== null) q.page = wholeNumber("page", page, 1, MAX_PAGE);
  const pageSize = params.get("page_size");
  if (pageSize !== null) q.pageSize = wholeNumber("page_size", pageSize, 1, MAX_PAGE_SIZE);
  const reporter = params.get("reporter_id");
  if (reporter !== null) {
    const key = normalizeBase64(reporter);
    if (key === undefined) {
      throw new QueryParamError(
        "reporter_id",
        `invalid reporter_id "${reporter}": expected a base64 public key`,
      );
    }
    q.reporterId = key;
  }
  const protocol = params.get("protocol");
  if (protocol !== null) {
    const named = PROTOCOLS.get(protocol.toLowerCase());
    if (named !== undefined) q.protocol = named;
    else if (/^[0-9]{1,3}$/.test(protocol) && Number(protocol) <= 255) {
      q.protocol = Number(protocol);
    } else {
      throw new QueryParamError(
        "protocol",
        `invalid protocol "${protocol}": expected a number from 0 to 255 or tcp, udp, icmp, icmpv6, sctp`,
      );
    }
  }
  const type = params.get("type");
  if (type !== null) {
    const t = TYPES.get(type.toLowerCase());
    if (t === undefined) {
      throw new QueryParamError(
        "type",
        `invalid type "${type}": expected start, end, drop or unknown`,
      );
    }
    q.type = t;
  }
  const direction = params.get("direction");
  if (direction !== null) {
    const d = DIRECTIONS.get(direction.toLowerCase());
    if (d === undefined) {
      throw new QueryParamError(
        "direction",
        `invalid direction "${direction}": expected ingress, egress or unknown`,
      );
    }
    q.direction = d;
  }
  const search = params.get("search");
  if (search !== null && search !== "") {
    if (search.length > MAX_SEARCH) {
      throw new QueryParamError(
        "search",
        `invalid search: ${search.length} characters, at most ${MAX_SEARCH}`,
      );
    }
    q.search = search;
  }
  for (const [name, roundUp] of [["start_date", true], ["end_date", false]] as const) {
    const text = params.get(name);
    if (text === null) continue;
    const ms = parseRfc3339(text, roundUp);
    if (ms === undefined) {
      throw new QueryParamError(
        name,
        `invalid ${name} "${text}": expected an RFC 3339 date-time such as 2026-01-31T23:59:59Z`,
      );
    }
    if (roundUp) q.startMs = ms;
    else q.endMs = ms;
  }
  if (q.startMs !== undefined && q.endMs !== undefined && q.startMs > q.endMs) {
    throw new QueryParamError(
      "end_date",
      `invalid end_date "${params.get("end_date")}": before start_date "${
        params.get("start_date")
      }"`,
    );
  }
  return q;
}

/** Decimal digits of a counter, checked so they can be written as a bare JSON number. */
function counter(text: string): string {
  return /^[0-9]{1,20}$/.test(text) ? text : "0";
}

function stringOrNull(text: string): string {
  return text === "" ? "null" : JSON.stringify(text);
}

/**
 * One event as the query API returns it: snake_case, the record fields of `netbird-ct`'s JSON
 * lines plus `reporter_id`, `rule_id` and the aggregation fields. Counters are JSON integers with
 * every digit of the uint64 (parse with a big-number-aware parser above 2^53). Empty values
 * (no address, no resource ID, no window) are `null`.
 *
 * @param e The stored event.
 * @returns JSON text of one object.
 *
 * @example Usage
 * ```ts
 * import { eventJson } from "./query.ts";
 * import { flowEventToStored } from "./proto.ts";
 * const e = flowEventToStored({
 *   eventId: new Uint8Array(16), publicKey: new Uint8Array(32), isInitiator: false,
 * });
 * const json = JSON.parse(eventJson(e));
 * if (json.event_id !== "00000000-0000-0000-0000-000000000000" || json.rx_bytes !== 0) {
 *   throw new Error(JSON.stringify(json));
 * }
 * ```
 */
export function eventJson(e: StoredEvent): string {
  return `{"event_id":${JSON.stringify(e.eventId)},"timestamp":${JSON.stringify(e.timestamp)},` +
    `"reporter_id":${JSON.stringify(e.reporterId)},"flow_id":${stringOrNull(e.flowId)},` +
    `"type":${JSON.stringify(e.type)},"direction":${JSON.stringify(e.direction)},` +
    `"protocol":${Number(e.protocol) || 0},` +
    `"source_ip":${stringOrNull(e.sourceIp)},"dest_ip":${stringOrNull(e.destIp)},` +
    `"source_port":${Number(e.sourcePort) || 0},"dest_port":${Number(e.destPort) || 0},` +
    `"icmp_type":${Number(e.icmpType) || 0},"icmp_code":${Number(e.icmpCode) || 0},` +
    `"rx_packets":${counter(e.rxPackets)},"tx_packets":${counter(e.txPackets)},` +
    `"rx_bytes":${counter(e.rxBytes)},"tx_bytes":${counter(e.txBytes)},` +
    `"rule_id":${stringOrNull(e.ruleId)},` +
    `"source_resource_id":${stringOrNull(e.sourceResourceId)},` +
    `"dest_resource_id":${stringOrNull(e.destResourceId)},` +
    `"num_of_starts":${counter(e.numOfStarts)},"num_of_ends":${counter(e.numOfEnds)},` +
    `"num_of_drops":${counter(e.numOfDrops)},` +
    `"window_start":${stringOrNull(e.windowStart)},"window_end":${stringOrNull(e.windowEnd)}}`;
}

/**
 * The response body: NetBird's `NetworkTrafficEventsResponse` envelope
 * `{"data": [...], "page", "page_size", "total_records", "total_pages"}`.
 *
 * @param result The store's answer.
 * @param q The query it answered.
 * @returns JSON text.
 *
 * @example Usage
 * ```ts
 * import { responseJson } from "./query.ts";
 * const body = JSON.parse(responseJson({ events: [], total: 2001 }, { page: 3, pageSize: 1000 }));
 * if (body.total_pages !== 3 || body.data.length !== 0) throw new Error(JSON.stringify(body));
 * ```
 */
export function responseJson(result: QueryResult, q: EventQuery): string {
  const totalPages = result.total === 0 ? 0 : Math.ceil(result.total / q.pageSize);
  return `{"data":[${result.events.map(eventJson).join(",")}],"page":${q.page},` +
    `"page_size":${q.pageSize},"total_records":${result.total},"total_pages":${totalPages}}`;
}
