/**
 * HTTP/2 framing (RFC 9113 §4, §6): frame types, flags, error codes and settings; an incremental
 * frame reader; and an output buffer that frames are written into and then sent with one socket
 * write.
 *
 * @module
 */

/** The client connection preface (RFC 9113 §3.4): `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`. */
export const CONNECTION_PREFACE: Uint8Array = new TextEncoder().encode(
  "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
);

/** Length of a frame header. */
export const FRAME_HEADER_BYTES = 9;
/** The initial and smallest allowed `SETTINGS_MAX_FRAME_SIZE`. */
export const DEFAULT_MAX_FRAME_SIZE = 16_384;
/** The largest allowed `SETTINGS_MAX_FRAME_SIZE`. */
export const MAX_ALLOWED_FRAME_SIZE = 16_777_215;
/** The initial flow-control window of streams and of the connection. */
export const DEFAULT_WINDOW_SIZE = 65_535;
/** The largest flow-control window. */
export const MAX_WINDOW_SIZE = 2 ** 31 - 1;

/** Frame types (RFC 9113 §6). */
export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

/** Frame flags. */
export const Flag = {
  /** DATA, HEADERS. */
  END_STREAM: 0x1,
  /** SETTINGS, PING. */
  ACK: 0x1,
  /** HEADERS, PUSH_PROMISE, CONTINUATION. */
  END_HEADERS: 0x4,
  /** DATA, HEADERS, PUSH_PROMISE. */
  PADDED: 0x8,
  /** HEADERS. */
  PRIORITY: 0x20,
} as const;

/** Error codes (RFC 9113 §7). */
export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

/** Setting identifiers (RFC 9113 §6.5.2). */
export const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
} as const;

const ERROR_NAMES = Object.fromEntries(Object.entries(ErrorCode).map(([k, v]) => [v, k]));

/**
 * The name of an error code, for logs.
 *
 * @param code The code.
 * @returns `PROTOCOL_ERROR`, …, or `0x…` for unknown codes.
 *
 * @example Usage
 * ```ts
 * import { errorCodeName } from "./frames.ts";
 * if (errorCodeName(1) !== "PROTOCOL_ERROR" || errorCodeName(99) !== "0x63") throw new Error();
 * ```
 */
export function errorCodeName(code: number): string {
  return ERROR_NAMES[code] ?? `0x${code.toString(16)}`;
}

/**
 * A protocol violation. With `streamId` 0 a connection error (GOAWAY, then close), else a stream
 * error (RST_STREAM of that stream only).
 */
export class H2Error extends Error {
  /** The error name, `"H2Error"`. */
  override name = "H2Error";
  /** The error code sent to the peer. */
  readonly code: number;
  /** 0 for a connection error, else the stream to reset. */
  readonly streamId: number;

  /**
   * Creates the error.
   *
   * @param code An {@linkcode ErrorCode}.
   * @param message What went wrong (also the GOAWAY debug data).
   * @param streamId 0 (connection error) or the stream.
   */
  constructor(code: number, message: string, streamId = 0) {
    super(message);
    this.code = code;
    this.streamId = streamId;
  }
}

/** Reads smaller than this are not offered: the buffer is compacted or grown first. */
const MIN_READ = 4096;

/**
 * Reads frames from a byte stream into its own buffer: read into {@linkcode FrameReader.space}
 * and {@linkcode FrameReader.commit} the byte count (or {@linkcode FrameReader.push} a chunk,
 * which is copied), then call {@linkcode FrameReader.next} until it returns `false`. The current
 * frame's fields are properties of the reader; `payload` is a view into the reader's buffer,
 * valid until the next `space` or `push`. Only a partial frame at the end is ever moved.
 *
 * @example Usage
 * ```ts
 * import { FrameReader, FrameType, OutBuffer } from "./frames.ts";
 * const out = new OutBuffer();
 * out.ping(false, new Uint8Array(8));
 * const bytes = out.take();
 * const r = new FrameReader();
 * r.push(bytes.subarray(0, 5));
 * if (r.next()) throw new Error("incomplete");
 * r.push(bytes.subarray(5));
 * if (!r.next() || r.type !== FrameType.PING || r.payload.length !== 8) throw new Error();
 * ```
 */
export class FrameReader {
  /** Frame type of the current frame. */
  type = 0;
  /** Flags of the current frame. */
  flags = 0;
  /** Stream of the current frame. */
  streamId = 0;
  /** Payload of the current frame. */
  payload: Uint8Array = new Uint8Array(0);
  /** Largest accepted payload (our `SETTINGS_MAX_FRAME_SIZE`). */
  maxFrameSize: number;
  #buf: Uint8Array;
  #maxCapacity: number;
  #start = 0;
  #end = 0;
  #grow = false;
  #detached = false;

  /**
   * Creates a reader.
   *
   * @param maxFrameSize Largest accepted payload length.
   * @param capacity Initial buffer size (at least a largest frame plus 4 KiB).
   * @param maxCapacity Size the buffer grows to when reads fill it.
   */
  constructor(
    maxFrameSize = DEFAULT_MAX_FRAME_SIZE,
    capacity = 32 * 1024,
    maxCapacity = 64 * 1024,
  ) {
    this.maxFrameSize = maxFrameSize;
    this.#buf = new Uint8Array(Math.max(capacity, Math.min(maxFrameSize, 1 << 20) + 16 + MIN_READ));
    this.#maxCapacity = Math.max(maxCapacity, this.#buf.length);
  }

  /** Size of the buffer. */
  get capacity(): number {
    return this.#buf.length;
  }

  /**
   * Leaves the current buffer to whoever holds views into it (payloads, messages): the next
   * `space` reads into a new buffer (with the bytes not yet returned as frames copied over).
   */
  detach(): void {
    this.#detached = true;
  }

  /** Bytes received and not yet returned as frames. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** The bytes received and not yet returned as frames (a view, valid until `space`/`push`). */
  pending(): Uint8Array {
    return this.#buf.subarray(this.#start, this.#end);
  }

  /**
   * Drops bytes at the front (e.g. a connection preface checked with `pending`).
   *
   * @param n Bytes, at most `buffered`.
   */
  skip(n: number): void {
    this.#start = Math.min(this.#end, this.#start + n);
  }

  /**
   * Free space to read into (invalidates earlier payload views); then call `commit`.
   *
   * @returns A view of the free space, at least 4 KiB.
   */
  space(): Uint8Array {
    if (this.#detached) {
      this.#detached = false;
      const fresh = new Uint8Array(this.#buf.length);
      fresh.set(this.#buf.subarray(this.#start, this.#end));
      this.#end -= this.#start;
      this.#start = 0;
      this.#buf = fresh;
    }
    if (this.#start === this.#end) this.#start = this.#end = 0;
    const free = this.#buf.length - this.#end;
    if (this.#grow || free < MIN_READ) {
      const pending = this.#end - this.#start;
      let size = this.#buf.length;
      if (this.#grow) size = Math.min(size * 2, this.#maxCapacity);
      while (size - pending < MIN_READ) size *= 2;
      this.#grow = false;
      if (size !== this.#buf.length) {
        const bigger = new Uint8Array(size);
        bigger.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = bigger;
      } else if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      }
      this.#start = 0;
      this.#end = pending;
    }
    return this.#buf.subarray(this.#end);
  }

  /**
   * Adds the bytes read into the last `space`.
   *
   * @param n How many.
   */
  commit(n: number): void {
    if (this.#end + n === this.#buf.length && this.#buf.length < this.#maxCapacity) {
      this.#grow = true; // reads fill the buffer: offer more next time
    }
    this.#end += n;
  }

  /**
   * Adds bytes (copied).
   *
   * @param chunk The bytes.
   */
  push(chunk: Uint8Array): void {
    let off = 0;
    do {
      const space = this.space();
      const n = Math.min(space.length, chunk.length - off);
      space.set(chunk.subarray(off, off + n));
      this.#end += n;
      off += n;
    } while (off < chunk.length);
  }

  /**
   * Moves to the next complete frame.
   *
   * @returns `true` when a frame is available in the properties, `false` when more bytes are
   * needed.
   * @throws {H2Error} FRAME_SIZE_ERROR when a frame is longer than `maxFrameSize`.
   */
  next(): boolean {
    const b = this.#buf;
    const p = this.#start;
    if (this.#end - p < FRAME_HEADER_BYTES) return false;
    const length = (b[p]! << 16) | (b[p + 1]! << 8) | b[p + 2]!;
    if (length > this.maxFrameSize) {
      throw new H2Error(
        ErrorCode.FRAME_SIZE_ERROR,
        `frame of ${length} bytes, larger than SETTINGS_MAX_FRAME_SIZE ${this.maxFrameSize}`,
      );
    }
    if (this.#end - p - FRAME_HEADER_BYTES < length) return false;
    this.type = b[p + 3]!;
    this.flags = b[p + 4]!;
    this.streamId = ((b[p + 5]! & 0x7f) << 24 | b[p + 6]! << 16 | b[p + 7]! << 8 | b[p + 8]!) >>> 0;
    this.payload = b.subarray(p + FRAME_HEADER_BYTES, p + FRAME_HEADER_BYTES + length);
    this.#start = p + FRAME_HEADER_BYTES + length;
    return true;
  }
}

/**
 * A growable byte buffer that frames are written into; {@linkcode OutBuffer.take} returns what
 * was written (one socket write) and starts over.
 */
export class OutBuffer {
  #buf: Uint8Array;
  #spare: Uint8Array | undefined;
  #len = 0;

  /**
   * Creates a buffer.
   *
   * @param capacity Initial capacity in bytes.
   */
  constructor(capacity = 16 * 1024) {
    this.#buf = new Uint8Array(capacity);
  }

  /** Bytes written since the last `take`. */
  get length(): number {
    return this.#len;
  }

  /**
   * Returns the bytes written and starts a new buffer. The returned view stays valid until the
   * next `take` (two buffers alternate).
   *
   * @returns The bytes.
   */
  take(): Uint8Array {
    const out = this.#buf.subarray(0, this.#len);
    const next = this.#spare !== undefined && this.#spare.length >= Math.min(this.#len, 1 << 20)
      ? this.#spare
      : new Uint8Array(Math.max(16 * 1024, Math.min(this.#len, 1 << 20)));
    this.#spare = this.#buf.length <= 4 << 20 ? this.#buf : undefined;
    this.#buf = next;
    this.#len = 0;
    return out;
  }

  /**
   * Makes room for `n` more bytes.
   *
   * @param n Bytes.
   * @returns The offset to write at (then call {@linkcode OutBuffer.advance}).
   */
  reserve(n: number): number {
    const need = this.#len + n;
    if (need > this.#buf.length) {
      const bigger = new Uint8Array(Math.max(need, this.#buf.length * 2));
      bigger.set(this.#buf.subarray(0, this.#len));
      this.#buf = bigger;
    }
    return this.#len;
  }

  /** The underlying array (valid until the next `reserve` or `take`). */
  get bytes(): Uint8Array {
    return this.#buf;
  }

  /**
   * Marks `n` reserved bytes as written.
   *
   * @param n Bytes.
   */
  advance(n: number): void {
    this.#len += n;
  }

  /**
   * Appends bytes.
   *
   * @param b The bytes.
   */
  append(b: Uint8Array): void {
    const at = this.reserve(b.length);
    this.#buf.set(b, at);
    this.#len += b.length;
  }

  /**
   * Writes a frame header.
   *
   * @param length Payload length.
   * @param type Frame type.
   * @param flags Flags.
   * @param streamId Stream.
   */
  header(length: number, type: number, flags: number, streamId: number): void {
    const at = this.reserve(FRAME_HEADER_BYTES);
    const b = this.#buf;
    b[at] = length >>> 16;
    b[at + 1] = (length >>> 8) & 0xff;
    b[at + 2] = length & 0xff;
    b[at + 3] = type;
    b[at + 4] = flags;
    b[at + 5] = (streamId >>> 24) & 0x7f;
    b[at + 6] = (streamId >>> 16) & 0xff;
    b[at + 7] = (streamId >>> 8) & 0xff;
    b[at + 8] = streamId & 0xff;
    this.#len += FRAME_HEADER_BYTES;
  }

  #u32(v: number): void {
    const at = this.reserve(4);
    const b = this.#buf;
    b[at] = v >>> 24;
    b[at + 1] = (v >>> 16) & 0xff;
    b[at + 2] = (v >>> 8) & 0xff;
    b[at + 3] = v & 0xff;
    this.#len += 4;
  }

  /**
   * A SETTINGS frame.
   *
   * @param entries `[identifier, value]` pairs.
   */
  settings(entries: readonly (readonly [number, number])[]): void {
    this.header(entries.length * 6, FrameType.SETTINGS, 0, 0);
    for (const [id, value] of entries) {
      const at = this.reserve(2);
      this.#buf[at] = id >>> 8;
      this.#buf[at + 1] = id & 0xff;
      this.#len += 2;
      this.#u32(value);
    }
  }

  /** A SETTINGS frame with the ACK flag. */
  settingsAck(): void {
    this.header(0, FrameType.SETTINGS, Flag.ACK, 0);
  }

  /**
   * A PING frame.
   *
   * @param ack Whether this answers a PING.
   * @param opaque The 8 bytes.
   */
  ping(ack: boolean, opaque: Uint8Array): void {
    this.header(8, FrameType.PING, ack ? Flag.ACK : 0, 0);
    this.append(opaque.subarray(0, 8));
  }

  /**
   * A WINDOW_UPDATE frame.
   *
   * @param streamId 0 for the connection.
   * @param increment 1 to 2^31-1.
   */
  windowUpdate(streamId: number, increment: number): void {
    this.header(4, FrameType.WINDOW_UPDATE, 0, streamId);
    this.#u32(increment & 0x7fffffff);
  }

  /**
   * A RST_STREAM frame.
   *
   * @param streamId The stream.
   * @param code Error code.
   */
  rstStream(streamId: number, code: number): void {
    this.header(4, FrameType.RST_STREAM, 0, streamId);
    this.#u32(code);
  }

  /**
   * A GOAWAY frame.
   *
   * @param lastStreamId The last stream the sender processed (or may process).
   * @param code Error code.
   * @param debug Debug text (ASCII), possibly empty.
   */
  goaway(lastStreamId: number, code: number, debug = ""): void {
    const text = new TextEncoder().encode(debug.slice(0, 256));
    this.header(8 + text.length, FrameType.GOAWAY, 0, 0);
    this.#u32(lastStreamId & 0x7fffffff);
    this.#u32(code);
    this.append(text);
  }

  /**
   * A header block as HEADERS plus CONTINUATION frames, none longer than `maxFrameSize`.
   *
   * @param streamId The stream.
   * @param block The HPACK-encoded header block.
   * @param endStream Whether to set END_STREAM.
   * @param maxFrameSize The peer's `SETTINGS_MAX_FRAME_SIZE`.
   */
  headers(streamId: number, block: Uint8Array, endStream: boolean, maxFrameSize: number): void {
    let off = 0;
    let type: number = FrameType.HEADERS;
    do {
      const n = Math.min(maxFrameSize, block.length - off);
      const last = off + n === block.length;
      const flags = (last ? Flag.END_HEADERS : 0) |
        (type === FrameType.HEADERS && endStream ? Flag.END_STREAM : 0);
      this.header(n, type, flags, streamId);
      this.append(block.subarray(off, off + n));
      off += n;
      type = FrameType.CONTINUATION;
    } while (off < block.length);
  }

  /**
   * One DATA frame.
   *
   * @param streamId The stream.
   * @param payload The payload (at most the peer's max frame size).
   * @param endStream Whether to set END_STREAM.
   */
  data(streamId: number, payload: Uint8Array, endStream = false): void {
    this.header(payload.length, FrameType.DATA, endStream ? Flag.END_STREAM : 0, streamId);
    this.append(payload);
  }
}
