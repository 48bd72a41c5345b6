/**
 * Parsing of sizes and durations given on the command line.
 *
 * @module
 */

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};

/**
 * Parses a byte size: a whole number with an optional binary unit (`212992`, `64M`, `64MiB`,
 * `1G`).
 *
 * @param text The size.
 * @returns Bytes, or `undefined` if `text` is not a size.
 *
 * @example Usage
 * ```ts
 * import { parseBytes } from "./units.ts";
 * if (parseBytes("64M") !== 67108864) throw new Error("wrong size");
 * ```
 */
export function parseBytes(text: string): number | undefined {
  const m = /^([0-9]+)\s*([a-zA-Z]*)$/.exec(text.trim());
  if (m === null) return undefined;
  const unit = SIZE_UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) return undefined;
  const value = Number(m[1]) * unit;
  return Number.isSafeInteger(value) ? value : undefined;
}

/** Rounds to whole nanoseconds (Go's resolution), so `1.001s` is 1001 ms, not 1000.9999999999999. */
const exactMs = (ms: number): number => Math.round(ms * 1e6) / 1e6;

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Parses a duration in Go's style (`500ms`, `10s`, `1m30s`, `2h`); a bare number means seconds.
 *
 * @param text The duration.
 * @returns Milliseconds, or `undefined` if `text` is not a duration.
 *
 * @example Usage
 * ```ts
 * import { parseDuration } from "./units.ts";
 * if (parseDuration("1m30s") !== 90_000) throw new Error("wrong duration");
 * ```
 */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (/^[0-9]+(\.[0-9]+)?$/.test(t)) return exactMs(Number(t) * 1000);
  if (!/^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$/.test(t)) return undefined;
  let total = 0;
  for (const m of t.matchAll(/([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)/g)) {
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
  }
  return exactMs(total);
}
