/**
 * IP addresses and prefixes: strict parsing, canonical formatting (RFC 5952 for IPv6) and prefix
 * matching. Addresses are handled as byte arrays in network (textual) order: 4 bytes for IPv4,
 * 16 for IPv6.
 *
 * @module
 */

/** Error thrown for an address or prefix that cannot be parsed. */
export class AddressError extends Error {
  /** The error name, `"AddressError"`. */
  override name = "AddressError";
}

/**
 * Parses an IPv4 or IPv6 address in text form.
 *
 * @param text The address, e.g. `100.64.0.1` or `fd00::1`. IPv6 zones are rejected.
 * @returns The address bytes (4 or 16), or `undefined` if `text` is not an address.
 *
 * @example Usage
 * ```ts
 * import { parseIp } from "./net.ts";
 * const bytes = parseIp("100.64.0.1");
 * if (bytes?.length !== 4) throw new Error("expected IPv4");
 * ```
 */
export function parseIp(text: string): Uint8Array | undefined {
  return text.includes(":") ? parseIpv6(text) : parseIpv4(text);
}

/**
 * Parses dotted-quad IPv4 text into its 32-bit value (`a<<24 | b<<16 | c<<8 | d`), strictly
 * (no leading zeros, each part 0–255) and without allocating. The hot path of relevance checks.
 *
 * @param text The address.
 * @returns The value as an unsigned number, or -1 if `text` is not an IPv4 address.
 *
 * @example Usage
 * ```ts
 * import { ipv4ToNumber } from "./net.ts";
 * if (ipv4ToNumber("100.64.0.1") !== 0x64400001) throw new Error("wrong value");
 * ```
 */
export function ipv4ToNumber(text: string): number {
  const n = text.length;
  if (n < 7 || n > 15) return -1;
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return -1;
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1; // leading zero
      part = part * 10 + (c - 48);
      if (part > 255) return -1;
      digits++;
    } else {
      return -1;
    }
  }
  if (dots !== 3 || digits === 0) return -1;
  return value * 256 + part;
}

function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i]!;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const value = Number(part);
    if (value > 255) return undefined;
    out[i] = value;
  }
  return out;
}

function parseIpv6(text: string): Uint8Array | undefined {
  // A hand-written scanner: this runs for every IPv6 event (relevance and direction checks).
  const n = text.length;
  if (n < 2 || n > 45) return undefined;
  const groups = new Array<number>(8);
  let count = 0; // groups written
  let gap = -1; // index in `groups` where "::" stands
  let i = 0;
  if (text.charCodeAt(0) === 58) {
    if (text.charCodeAt(1) !== 58) return undefined;
    gap = 0;
    i = 2;
    if (i === n) return expand(groups, count, gap);
  }
  while (i < n) {
    // One group: 1-4 hex digits, or an embedded IPv4 address ending the text.
    const start = i;
    let value = 0;
    let digits = 0;
    while (i < n && digits <= 4) {
      const c = text.charCodeAt(i);
      let d: number;
      if (c >= 48 && c <= 57) d = c - 48;
      else if (c >= 97 && c <= 102) d = c - 87;
      else if (c >= 65 && c <= 70) d = c - 55;
      else break;
      value = value * 16 + d;
      digits++;
      i++;
    }
    if (i < n && text.charCodeAt(i) === 46) {
      // Dotted quad: only as the last part, with room for two groups.
      if (count > 6) return undefined;
      const v4 = parseIpv4(text.slice(start));
      if (v4 === undefined) return undefined;
      groups[count++] = (v4[0]! << 8) | v4[1]!;
      groups[count++] = (v4[2]! << 8) | v4[3]!;
      return expand(groups, count, gap);
    }
    if (digits === 0 || digits > 4 || count === 8) return undefined;
    groups[count++] = value;
    if (i === n) break;
    if (text.charCodeAt(i) !== 58) return undefined;
    i++;
    if (i < n && text.charCodeAt(i) === 58) {
      if (gap >= 0) return undefined; // a second "::"
      gap = count;
      i++;
      if (i === n) break;
    } else if (i === n) {
      return undefined; // trailing single ":"
    }
  }
  return expand(groups, count, gap);
}

function expand(groups: number[], count: number, gap: number): Uint8Array | undefined {
  if (gap < 0 ? count !== 8 : count > 7) return undefined;
  const out = new Uint8Array(16);
  const tail = gap < 0 ? 0 : count - gap;
  for (let g = 0; g < count; g++) {
    const at = gap >= 0 && g >= gap ? 8 - tail + (g - gap) : g;
    out[at * 2] = groups[g]! >> 8;
    out[at * 2 + 1] = groups[g]! & 0xff;
  }
  return out;
}

const GROUPS = new Uint16Array(8);

/**
 * Formats address bytes in canonical text form: dotted quad for IPv4, RFC 5952 for IPv6
 * (lower case, longest zero run compressed, IPv4-mapped addresses as `::ffff:a.b.c.d`).
 *
 * @param bytes 4 or 16 bytes in network order.
 * @returns The canonical text.
 *
 * @example Usage
 * ```ts
 * import { formatIp, parseIp } from "./net.ts";
 * if (formatIp(parseIp("FD00:0:0:0::01")!) !== "fd00::1") throw new Error("not canonical");
 * ```
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (bytes.length !== 16) throw new AddressError(`Cannot format address: ${bytes.length} bytes`);
  const g = GROUPS;
  for (let i = 0; i < 8; i++) g[i] = (bytes[i * 2]! << 8) | bytes[i * 2 + 1]!;
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  }
  // The longest run of two or more zero groups (the first one on a tie) becomes "::".
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  let out = "";
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += "::";
      i += bestLen - 1;
      continue;
    }
    if (out.length > 0 && !out.endsWith(":")) out += ":";
    out += g[i]!.toString(16);
  }
  return out;
}

/** An IP prefix such as `100.64.0.0/10`. The address is stored with host bits cleared. */
export class Prefix {
  /** Network address bytes (4 or 16), host bits zero. */
  readonly bytes: Uint8Array;
  /** Prefix length in bits. */
  readonly bits: number;
  #v4Value = 0;
  #v4Mask = 0;

  /**
   * Builds a prefix from address bytes and a length; host bits are cleared.
   *
   * @param bytes 4 or 16 address bytes.
   * @param bits Prefix length, 0–32 or 0–128.
   */
  constructor(bytes: Uint8Array, bits: number) {
    const max = bytes.length * 8;
    if (!Number.isInteger(bits) || bits < 0 || bits > max) {
      throw new AddressError(`Cannot use prefix length ${bits}: must be 0-${max}`);
    }
    const masked = new Uint8Array(bytes);
    for (let i = 0; i < masked.length; i++) {
      const keep = Math.max(0, Math.min(8, bits - i * 8));
      masked[i]! &= keep === 0 ? 0 : (0xff << (8 - keep)) & 0xff;
    }
    this.bytes = masked;
    this.bits = bits;
    if (masked.length === 4) {
      this.#v4Mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
      this.#v4Value = ((masked[0]! << 24) | (masked[1]! << 16) | (masked[2]! << 8) | masked[3]!) >>>
        0;
    }
  }

  /**
   * Reports whether a 32-bit IPv4 value (see {@linkcode ipv4ToNumber}) lies inside the prefix.
   *
   * @param value The address value; negative values (not an address) never match.
   * @returns `true` if this is an IPv4 prefix containing the address.
   */
  containsIpv4(value: number): boolean {
    return this.bytes.length === 4 && value >= 0 &&
      ((value & this.#v4Mask) >>> 0) === this.#v4Value;
  }

  /**
   * Parses `ADDRESS/BITS` text.
   *
   * @param text The prefix, e.g. `100.64.0.0/10` or `fd00::/8`.
   * @returns The prefix.
   * @throws {AddressError} When `text` is not a valid prefix.
   *
   * @example Usage
   * ```ts
   * import { Prefix } from "./net.ts";
   * if (!Prefix.parse("100.64.0.0/10").contains("100.127.255.1")) throw new Error("should contain");
   * ```
   */
  static parse(text: string): Prefix {
    const slash = text.indexOf("/");
    const addr = parseIp(slash === -1 ? text : text.slice(0, slash));
    if (addr === undefined) throw new AddressError(`Cannot parse prefix "${text}": bad address`);
    const bitsText = slash === -1 ? String(addr.length * 8) : text.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(bitsText)) {
      throw new AddressError(`Cannot parse prefix "${text}": bad length`);
    }
    const bits = Number(bitsText);
    if (bits > addr.length * 8) {
      throw new AddressError(`Cannot parse prefix "${text}": length above ${addr.length * 8}`);
    }
    return new Prefix(addr, bits);
  }

  /** Address family of the prefix. */
  get family(): 4 | 6 {
    return this.bytes.length === 4 ? 4 : 6;
  }

  /**
   * Reports whether an address lies inside the prefix. Addresses of the other family never do.
   *
   * @param address Address text or bytes.
   * @returns `true` if the address is inside.
   */
  contains(address: string | Uint8Array): boolean {
    const bytes = typeof address === "string" ? parseIp(address) : address;
    if (bytes === undefined || bytes.length !== this.bytes.length) return false;
    let bits = this.bits;
    for (let i = 0; bits > 0; i++, bits -= 8) {
      const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
      if ((bytes[i]! & mask) !== this.bytes[i]) return false;
    }
    return true;
  }

  /** Canonical text form, e.g. `100.64.0.0/10`. */
  toString(): string {
    return `${formatIp(this.bytes)}/${this.bits}`;
  }
}
