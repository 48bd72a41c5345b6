/**
 * HPACK (RFC 7541): a decoder with the static and dynamic tables, table size updates and Huffman
 * decoding, and a simple encoder that never adds to the dynamic table (indexed static entries,
 * literals without indexing, Huffman-coded when shorter). Header names and values are byte
 * strings, represented as JavaScript strings with one character per byte (latin1).
 *
 * @module
 */

/** A header field: name and value, one character per byte. */
export type HeaderField = [name: string, value: string];

/** The static table (RFC 7541 Appendix A); index 1 is `STATIC_TABLE[0]`. */
export const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

/**
 * Code lengths in bits of symbols 0–255 and EOS (256) of the Huffman code of RFC 7541 Appendix B.
 * The code is canonical: sorting the symbols by (length, symbol) and counting up gives the codes
 * of the table (checked by the tests against the table's printed codes).
 */
const HUFFMAN_CODE_LENGTHS: readonly number[] = [
  13,
  23,
  28,
  28,
  28,
  28,
  28,
  28,
  28,
  24,
  30,
  28,
  28,
  30,
  28,
  28, // 0-15
  28,
  28,
  28,
  28,
  28,
  28,
  30,
  28,
  28,
  28,
  28,
  28,
  28,
  28,
  28,
  28, // 16-31
  6,
  10,
  10,
  12,
  13,
  6,
  8,
  11,
  10,
  10,
  8,
  11,
  8,
  6,
  6,
  6, // ' ' - '/'
  5,
  5,
  5,
  6,
  6,
  6,
  6,
  6,
  6,
  6,
  7,
  8,
  15,
  6,
  12,
  10, // '0' - '?'
  13,
  6,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7, // '@' - 'O'
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  8,
  7,
  8,
  13,
  19,
  13,
  14,
  6, // 'P' - '_'
  15,
  5,
  6,
  5,
  6,
  5,
  6,
  6,
  6,
  5,
  7,
  7,
  6,
  6,
  6,
  5, // '`' - 'o'
  6,
  7,
  6,
  5,
  5,
  6,
  7,
  7,
  7,
  7,
  7,
  15,
  11,
  14,
  13,
  28, // 'p' - 127
  20,
  22,
  20,
  20,
  22,
  22,
  22,
  23,
  22,
  23,
  23,
  23,
  23,
  23,
  24,
  23, // 128-143
  24,
  24,
  22,
  23,
  24,
  23,
  23,
  23,
  23,
  21,
  22,
  23,
  22,
  23,
  23,
  24, // 144-159
  22,
  21,
  20,
  22,
  22,
  23,
  23,
  21,
  23,
  22,
  22,
  24,
  21,
  22,
  23,
  23, // 160-175
  21,
  21,
  22,
  21,
  23,
  22,
  23,
  23,
  20,
  22,
  22,
  22,
  23,
  22,
  22,
  23, // 176-191
  26,
  26,
  20,
  19,
  22,
  23,
  22,
  25,
  26,
  26,
  26,
  27,
  27,
  26,
  24,
  25, // 192-207
  19,
  21,
  26,
  27,
  27,
  26,
  27,
  24,
  21,
  21,
  26,
  26,
  28,
  27,
  27,
  27, // 208-223
  20,
  24,
  20,
  21,
  22,
  21,
  21,
  23,
  22,
  22,
  25,
  25,
  24,
  24,
  26,
  23, // 224-239
  26,
  27,
  26,
  26,
  27,
  27,
  27,
  27,
  27,
  28,
  27,
  27,
  27,
  27,
  27,
  26, // 240-255
  30, // EOS
];

const EOS = 256;

/** `[code, length]` of each symbol, codes right-aligned (as the table's hex column). */
export const HUFFMAN_CODES: readonly (readonly [number, number])[] = (() => {
  const order = HUFFMAN_CODE_LENGTHS.map((len, sym) => [len, sym] as const)
    .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const codes: [number, number][] = new Array(HUFFMAN_CODE_LENGTHS.length);
  let code = 0;
  let prevLen = order[0]![0];
  for (let i = 0; i < order.length; i++) {
    const [len, sym] = order[i]!;
    if (i > 0) code = (code + 1) * 2 ** (len - prevLen);
    prevLen = len;
    codes[sym] = [code, len];
  }
  return codes;
})();

/**
 * The decoding tree: node `n` has children `TREE[2n]` (bit 0) and `TREE[2n + 1]` (bit 1); a
 * negative entry is a leaf for symbol `-entry - 1`, 0 an absent child (the root is never a child).
 */
const TREE: Int32Array = (() => {
  const tree = new Int32Array(2 * 2 * HUFFMAN_CODES.length);
  let nodes = 1;
  HUFFMAN_CODES.forEach(([code, len], sym) => {
    let node = 0;
    for (let i = len - 1; i >= 0; i--) {
      const bit = Math.floor(code / 2 ** i) % 2;
      const slot = 2 * node + bit;
      if (i === 0) tree[slot] = -sym - 1;
      else {
        if (tree[slot] === 0) tree[slot] = nodes++;
        node = tree[slot]!;
      }
    }
  });
  return tree;
})();

/** A header block that cannot be decoded: a connection error of type COMPRESSION_ERROR. */
export class HpackError extends Error {
  /** The error name, `"HpackError"`. */
  override name = "HpackError";
}

/**
 * Decodes a Huffman-coded string (RFC 7541 §5.2).
 *
 * @param b The coded bytes.
 * @returns The decoded bytes.
 * @throws {HpackError} On EOS in the data, padding longer than 7 bits or not all ones.
 *
 * @example Usage
 * ```ts
 * import { huffmanDecode } from "./hpack.ts";
 * const coded = new Uint8Array([0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff]);
 * if (new TextDecoder().decode(huffmanDecode(coded)) !== "www.example.com") throw new Error();
 * ```
 */
export function huffmanDecode(b: Uint8Array): Uint8Array {
  // Each symbol takes at least 5 bits.
  const out = new Uint8Array(Math.ceil((b.length * 8) / 5));
  let n = 0;
  let node = 0;
  let depth = 0;
  let ones = true;
  for (let i = 0; i < b.length; i++) {
    const byte = b[i]!;
    for (let shift = 7; shift >= 0; shift--) {
      const bit = (byte >> shift) & 1;
      const next = TREE[2 * node + bit]!;
      if (next < 0) {
        const sym = -next - 1;
        if (sym === EOS) throw new HpackError("Huffman-coded string contains EOS");
        out[n++] = sym;
        node = 0;
        depth = 0;
        ones = true;
      } else {
        node = next;
        depth++;
        if (bit === 0) ones = false;
      }
    }
  }
  if (depth > 7) throw new HpackError("Huffman padding longer than 7 bits");
  if (!ones) throw new HpackError("Huffman padding is not a prefix of EOS");
  return out.subarray(0, n);
}

/**
 * Huffman-codes bytes (RFC 7541 §5.2), padded with the most significant bits of EOS.
 *
 * @param b The bytes.
 * @returns The coded bytes.
 *
 * @example Usage
 * ```ts
 * import { huffmanEncode } from "./hpack.ts";
 * const coded = huffmanEncode(new TextEncoder().encode("no-cache"));
 * if (Array.from(coded).join() !== "168,235,16,100,156,191") throw new Error();
 * ```
 */
export function huffmanEncode(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(huffmanLength(b));
  let acc = 0; // fewer than 8 + 30 bits: exact in a double
  let bits = 0;
  let n = 0;
  for (let i = 0; i < b.length; i++) {
    const [code, len] = HUFFMAN_CODES[b[i]!]!;
    acc = acc * 2 ** len + code;
    bits += len;
    while (bits >= 8) {
      bits -= 8;
      const div = 2 ** bits;
      const top = Math.floor(acc / div);
      out[n++] = top;
      acc -= top * div;
    }
  }
  if (bits > 0) out[n] = (acc * 2 ** (8 - bits)) | ((1 << (8 - bits)) - 1);
  return out;
}

/**
 * The Huffman-coded length of bytes.
 *
 * @param b The bytes.
 * @returns Length in bytes.
 */
export function huffmanLength(b: Uint8Array): number {
  let bits = 0;
  for (let i = 0; i < b.length; i++) bits += HUFFMAN_CODES[b[i]!]![1];
  return Math.ceil(bits / 8);
}

/** Bytes of a string with one character per byte. */
function bytesOf(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i) & 0xff;
  return b;
}

/** A string with one character per byte. */
function latin1(b: Uint8Array, start: number, end: number): string {
  if (end - start <= 64) {
    let s = "";
    for (let i = start; i < end; i++) s += String.fromCharCode(b[i]!);
    return s;
  }
  let s = "";
  for (let i = start; i < end; i += 4096) {
    s += String.fromCharCode(...b.subarray(i, Math.min(end, i + 4096)));
  }
  return s;
}

/** Size of a table entry (RFC 7541 §4.1). */
function entrySize(name: string, value: string): number {
  return name.length + value.length + 32;
}

/** The result of {@linkcode HpackDecoder.decode}. */
export interface DecodedBlock {
  /** The fields, in order (only the first ones when `tooLarge`). */
  headers: HeaderField[];
  /** The header list size (RFC 9113 §6.5.2: sum of name + value + 32). */
  size: number;
  /** The list exceeded the size limit given to `decode` (the block was still processed). */
  tooLarge: boolean;
}

/**
 * The decoding side of one HPACK context (one per HTTP/2 connection and direction).
 *
 * @example Decoding RFC 7541 C.3.1
 * ```ts
 * import { HpackDecoder } from "./hpack.ts";
 * const hex = "828684410f7777772e6578616d706c652e636f6d";
 * const block = new Uint8Array(hex.match(/../g)!.map((h) => parseInt(h, 16)));
 * const d = new HpackDecoder();
 * const { headers } = d.decode(block);
 * if (headers[3]![1] !== "www.example.com" || d.tableSize !== 57) throw new Error();
 * ```
 */
export class HpackDecoder {
  /** Newest last. */
  #table: HeaderField[] = [];
  #size = 0;
  #maxSize: number;
  #limit: number;

  /**
   * Creates a decoder.
   *
   * @param limit The `SETTINGS_HEADER_TABLE_SIZE` we advertise: the largest table size the
   * peer's encoder may choose (default 4096).
   */
  constructor(limit = 4096) {
    this.#limit = limit;
    this.#maxSize = limit;
  }

  /** Current size of the dynamic table in bytes (RFC 7541 §4.1). */
  get tableSize(): number {
    return this.#size;
  }

  /** Current maximum size of the dynamic table. */
  get maxTableSize(): number {
    return this.#maxSize;
  }

  /** The dynamic table, newest first (index 62 first). */
  get entries(): HeaderField[] {
    return this.#table.map(([n, v]): HeaderField => [n, v]).reverse();
  }

  /**
   * Decodes one complete header block (all CONTINUATION fragments joined).
   *
   * @param block The block.
   * @param maxListSize Fields beyond this header list size are decoded (to keep the table in
   * step) but not returned, and `tooLarge` is set.
   * @returns The fields.
   * @throws {HpackError} When the block is malformed.
   */
  decode(block: Uint8Array, maxListSize = Infinity): DecodedBlock {
    const headers: HeaderField[] = [];
    let size = 0;
    let tooLarge = false;
    let pos = 0;
    let sizeUpdateAllowed = true;
    const int = (prefixBits: number): number => {
      const max = (1 << prefixBits) - 1;
      let v = block[pos++]! & max;
      if (v < max) return v;
      let shift = 0;
      for (;;) {
        if (pos >= block.length) throw new HpackError("truncated integer");
        const b = block[pos++]!;
        v += (b & 0x7f) * 2 ** shift;
        if (v > 0x7fffffff) throw new HpackError("integer too large");
        if ((b & 0x80) === 0) return v;
        shift += 7;
      }
    };
    const str = (): string => {
      if (pos >= block.length) throw new HpackError("truncated string");
      const huffman = (block[pos]! & 0x80) !== 0;
      const len = int(7);
      if (len > block.length - pos) throw new HpackError("string longer than the header block");
      const start = pos;
      pos += len;
      if (!huffman) return latin1(block, start, pos);
      const decoded = huffmanDecode(block.subarray(start, pos));
      return latin1(decoded, 0, decoded.length);
    };
    const emit = (name: string, value: string): void => {
      size += entrySize(name, value);
      if (size > maxListSize) tooLarge = true;
      if (!tooLarge) headers.push([name, value]);
    };
    while (pos < block.length) {
      const b = block[pos]!;
      if (b & 0x80) {
        const [name, value] = this.#get(int(7));
        emit(name, value);
      } else if (b & 0x40) {
        const index = int(6);
        const name = index === 0 ? str() : this.#get(index)[0];
        const value = str();
        this.#add(name, value);
        emit(name, value);
      } else if (b & 0x20) {
        if (!sizeUpdateAllowed) {
          throw new HpackError("dynamic table size update after a header field");
        }
        const max = int(5);
        if (max > this.#limit) {
          throw new HpackError(`dynamic table size update to ${max}, above ${this.#limit}`);
        }
        this.#maxSize = max;
        this.#evict(0);
        continue;
      } else {
        // Literal without indexing (0000) or never indexed (0001).
        const index = int(4);
        const name = index === 0 ? str() : this.#get(index)[0];
        emit(name, str());
      }
      sizeUpdateAllowed = false;
    }
    return { headers, size, tooLarge };
  }

  #get(index: number): readonly [string, string] {
    if (index === 0) throw new HpackError("index 0");
    if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1]!;
    const i = this.#table.length - (index - STATIC_TABLE.length);
    if (i < 0) throw new HpackError(`index ${index} beyond the dynamic table`);
    return this.#table[i]!;
  }

  #add(name: string, value: string): void {
    const size = entrySize(name, value);
    if (size > this.#maxSize) {
      this.#table = [];
      this.#size = 0;
      return;
    }
    this.#evict(size);
    this.#table.push([name, value]);
    this.#size += size;
  }

  /** Evicts the oldest entries until `room` more bytes fit. */
  #evict(room: number): void {
    let drop = 0;
    while (this.#size + room > this.#maxSize && drop < this.#table.length) {
      const [n, v] = this.#table[drop++]!;
      this.#size -= entrySize(n, v);
    }
    if (drop > 0) this.#table.splice(0, drop);
  }
}

const STATIC_NAME = new Map<string, number>();
const STATIC_FIELD = new Map<string, number>();
STATIC_TABLE.forEach(([name, value], i) => {
  if (!STATIC_NAME.has(name)) STATIC_NAME.set(name, i + 1);
  if (value !== "") STATIC_FIELD.set(`${name}\0${value}`, i + 1);
});

/**
 * The encoding side: never uses the dynamic table (so it needs no state beyond a pending table
 * size update). Fields are static-table indexed when they match exactly, else literals without
 * indexing (with an indexed name when the static table has it), strings Huffman-coded when that
 * is shorter.
 *
 * @example Usage
 * ```ts
 * import { HpackDecoder, HpackEncoder } from "./hpack.ts";
 * const block = new HpackEncoder().encode([[":status", "200"], ["grpc-status", "0"]]);
 * const { headers } = new HpackDecoder().decode(block);
 * if (headers[1]![0] !== "grpc-status") throw new Error();
 * ```
 */
export class HpackEncoder {
  #sizeUpdate = true;

  /**
   * The peer changed its `SETTINGS_HEADER_TABLE_SIZE`: the next block starts with a table size
   * update (to 0: this encoder keeps no entries).
   */
  peerTableSizeChanged(): void {
    this.#sizeUpdate = true;
  }

  /**
   * Encodes a header list.
   *
   * @param headers The fields (names lowercase).
   * @returns The header block.
   */
  encode(headers: readonly (readonly [string, string])[]): Uint8Array {
    const parts: number[] = [];
    if (this.#sizeUpdate) {
      this.#sizeUpdate = false;
      parts.push(0x20); // dynamic table size update to 0
    }
    for (const [name, value] of headers) {
      const full = STATIC_FIELD.get(`${name}\0${value}`);
      if (full !== undefined) {
        writeInt(parts, 0x80, 7, full);
        continue;
      }
      const index = STATIC_NAME.get(name);
      if (index !== undefined) writeInt(parts, 0x00, 4, index);
      else {
        parts.push(0x00);
        writeString(parts, name);
      }
      writeString(parts, value);
    }
    return new Uint8Array(parts);
  }
}

function writeInt(out: number[], first: number, prefixBits: number, v: number): void {
  const max = (1 << prefixBits) - 1;
  if (v < max) {
    out.push(first | v);
    return;
  }
  out.push(first | max);
  v -= max;
  while (v >= 128) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

function writeString(out: number[], s: string): void {
  const raw = bytesOf(s);
  const codedLength = huffmanLength(raw);
  if (codedLength < raw.length) {
    writeInt(out, 0x80, 7, codedLength);
    for (const b of huffmanEncode(raw)) out.push(b);
  } else {
    writeInt(out, 0x00, 7, raw.length);
    for (const b of raw) out.push(b);
  }
}
