/**
 * Frame handling shared by the HTTP/2 client (`client.ts`) and server (`server.ts`): header
 * block assembly, the peer's SETTINGS and send windows, the connection receive window (DATA
 * accounting, padding, WINDOW_UPDATE), PING, PRIORITY, RST_STREAM and GOAWAY validation, and
 * the mapping of failures to connection errors. Internal to `h2/`.
 *
 * @module
 */

import {
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_WINDOW_SIZE,
  ErrorCode,
  Flag,
  H2Error,
  MAX_ALLOWED_FRAME_SIZE,
  MAX_WINDOW_SIZE,
  type OutBuffer,
  Setting,
} from "./frames.ts";
import { type HpackEncoder, HpackError } from "./hpack.ts";

/** Compressed header block bytes (HEADERS + CONTINUATION) beyond which the connection ends. */
export const MAX_HEADER_BLOCK_BYTES = 64 * 1024;

/** What a connection's send side needs of a stream. */
export interface SendingStream {
  /** The peer's window for this stream, bytes. */
  sendWindow: number;
  /** Bytes queued to send. */
  outBytes: number;
}

/** The peer's settings and connection window that limit what a connection sends. */
export class PeerSettings {
  /** The peer's `SETTINGS_INITIAL_WINDOW_SIZE`. */
  initialWindow = DEFAULT_WINDOW_SIZE;
  /** The peer's `SETTINGS_MAX_FRAME_SIZE`. */
  maxFrame = DEFAULT_MAX_FRAME_SIZE;
  /** The peer's connection window, bytes. */
  sendWindow = DEFAULT_WINDOW_SIZE;
  #encoder: HpackEncoder;
  #maxEnablePush: number;

  /**
   * @param encoder The connection's HPACK encoder (told of table size changes).
   * @param peerIsServer The peer is a server: `SETTINGS_ENABLE_PUSH` must be 0 (else 0 or 1).
   */
  constructor(encoder: HpackEncoder, peerIsServer: boolean) {
    this.#encoder = encoder;
    this.#maxEnablePush = peerIsServer ? 0 : 1;
  }

  /**
   * Applies a SETTINGS frame: frame checks, then each setting (the HPACK encoder learns of a
   * table size change, stream send windows move with the initial window, streams with output
   * whose window grew are queued).
   *
   * @returns `true` when settings were applied (to be acknowledged), `false` for an ACK.
   * @throws {H2Error} On a malformed frame or an invalid value.
   */
  apply<S extends SendingStream>(
    flags: number,
    streamId: number,
    payload: Uint8Array,
    streams: ReadonlyMap<number, S>,
    sendQueue: Set<S>,
  ): boolean {
    if (streamId !== 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream");
    if ((flags & Flag.ACK) !== 0) {
      if (payload.length !== 0) {
        throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
      }
      return false;
    }
    if (payload.length % 6 !== 0) {
      throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length");
    }
    for (let i = 0; i < payload.length; i += 6) {
      const id = payload[i]! << 8 | payload[i + 1]!;
      const value = u32(payload, i + 2);
      switch (id) {
        case Setting.HEADER_TABLE_SIZE:
          this.#encoder.peerTableSizeChanged();
          break;
        case Setting.ENABLE_PUSH:
          // A server must not enable push (RFC 9113 §6.5.2).
          if (value > this.#maxEnablePush) {
            throw new H2Error(ErrorCode.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH");
          }
          break;
        case Setting.INITIAL_WINDOW_SIZE: {
          if (value > MAX_WINDOW_SIZE) {
            throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE");
          }
          const delta = value - this.initialWindow;
          this.initialWindow = value;
          for (const s of streams.values()) {
            s.sendWindow += delta;
            if (s.sendWindow > MAX_WINDOW_SIZE) {
              throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "stream window above 2^31-1");
            }
            if (delta > 0 && s.outBytes > 0) sendQueue.add(s);
          }
          break;
        }
        case Setting.MAX_FRAME_SIZE:
          if (value < DEFAULT_MAX_FRAME_SIZE || value > MAX_ALLOWED_FRAME_SIZE) {
            throw new H2Error(ErrorCode.PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE");
          }
          this.maxFrame = value;
          break;
        default:
          break; // MAX_CONCURRENT_STREAMS (streams are few), MAX_HEADER_LIST_SIZE, unknown
      }
    }
    return true;
  }

  /**
   * Credits the connection window (WINDOW_UPDATE on stream 0) and queues the streams with
   * output.
   *
   * @throws {H2Error} On an increment of 0 or a window above 2^31-1.
   */
  creditConnection<S extends SendingStream>(
    inc: number,
    streams: ReadonlyMap<number, S>,
    sendQueue: Set<S>,
  ): void {
    if (inc === 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
    this.sendWindow += inc;
    if (this.sendWindow > MAX_WINDOW_SIZE) {
      throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "connection window above 2^31-1");
    }
    for (const s of streams.values()) if (s.outBytes > 0) sendQueue.add(s);
  }
}

/** A connection's receive window: what the peer may still send, and what is read but not yet given back. */
export class ReceiveWindow {
  /** Bytes the peer may still send. */
  window = DEFAULT_WINDOW_SIZE;
  /** Bytes read and not yet credited back with WINDOW_UPDATE. */
  credit = 0;

  /**
   * Widens the window from the default to `size` (a WINDOW_UPDATE after the first SETTINGS).
   *
   * @param out Where the frame goes.
   * @param size The window wanted, bytes.
   */
  open(out: OutBuffer, size: number): void {
    if (size > DEFAULT_WINDOW_SIZE) {
      out.windowUpdate(0, size - DEFAULT_WINDOW_SIZE);
      this.window = size;
    }
  }

  /**
   * Takes a DATA frame out of the window (all of it counts, padding too).
   *
   * @returns The frame's data without padding.
   * @throws {H2Error} On DATA on stream 0, beyond the window, or with padding that does not fit.
   */
  data(flags: number, streamId: number, payload: Uint8Array): Uint8Array {
    if (streamId === 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0");
    const length = payload.length;
    if (length > this.window) {
      throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection window");
    }
    this.window -= length;
    this.credit += length;
    return unpadData(flags, payload);
  }

  /**
   * Gives the credit back with a WINDOW_UPDATE once it reaches `threshold`.
   *
   * @returns Whether a frame was queued.
   */
  update(out: OutBuffer, threshold: number): boolean {
    if (this.credit < threshold) return false;
    out.windowUpdate(0, this.credit);
    this.window += this.credit;
    this.credit = 0;
    return true;
  }
}

/** Reads a 32-bit big-endian unsigned integer. */
function u32(b: Uint8Array, i: number): number {
  return (b[i]! << 24 | b[i + 1]! << 16 | b[i + 2]! << 8 | b[i + 3]!) >>> 0;
}

/**
 * The increment of a WINDOW_UPDATE frame.
 *
 * @throws {H2Error} When the payload is not 4 bytes.
 */
export function windowIncrement(payload: Uint8Array): number {
  if (payload.length !== 4) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE length");
  return u32(payload, 0) & 0x7fffffff;
}

/**
 * Credits a stream's send window (WINDOW_UPDATE on an open stream).
 *
 * @returns Whether the stream has output (to be queued).
 * @throws {H2Error} (a stream error) On an increment of 0 or a window above 2^31-1.
 */
export function creditStream(s: SendingStream, streamId: number, inc: number): boolean {
  if (inc === 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0", streamId);
  s.sendWindow += inc;
  if (s.sendWindow > MAX_WINDOW_SIZE) {
    throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "stream window above 2^31-1", streamId);
  }
  return s.outBytes > 0;
}

/**
 * Checks a PING frame.
 *
 * @returns Whether it wants an answer (not an ACK).
 * @throws {H2Error} On a PING on a stream or of the wrong length.
 */
export function checkPing(flags: number, streamId: number, payload: Uint8Array): boolean {
  if (streamId !== 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
  if (payload.length !== 8) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "PING length");
  return (flags & Flag.ACK) === 0;
}

/**
 * Checks a PRIORITY frame (otherwise ignored).
 *
 * @throws {H2Error} On stream 0 or the wrong length.
 */
export function checkPriority(streamId: number, payload: Uint8Array): void {
  if (streamId === 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0");
  if (payload.length !== 5) {
    throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY length", streamId);
  }
}

/**
 * Checks a RST_STREAM frame.
 *
 * @returns Its error code.
 * @throws {H2Error} On the wrong length or stream 0.
 */
export function rstStreamCode(streamId: number, payload: Uint8Array): number {
  if (payload.length !== 4) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM length");
  if (streamId === 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0");
  return u32(payload, 0);
}

/**
 * Checks a GOAWAY frame.
 *
 * @returns Its error code.
 * @throws {H2Error} On a GOAWAY on a stream or too short.
 */
export function goawayCode(streamId: number, payload: Uint8Array): number {
  if (streamId !== 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream");
  if (payload.length < 8) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY length");
  return u32(payload, 4);
}

/** A GOAWAY's last stream ID (of a payload {@linkcode goawayCode} accepted). */
export function goawayLastStream(payload: Uint8Array): number {
  return u32(payload, 0) & 0x7fffffff;
}

/** A GOAWAY's debug data as text, at most 256 bytes of it. */
export function goawayDebug(payload: Uint8Array): string {
  return new TextDecoder().decode(payload.subarray(8, 8 + 256));
}

/**
 * A DATA frame's data without its padding.
 *
 * @throws {H2Error} On padding that does not fit.
 */
function unpadData(flags: number, payload: Uint8Array): Uint8Array {
  if ((flags & Flag.PADDED) === 0) return payload;
  const length = payload.length;
  if (length < 1) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "DATA length");
  const pad = payload[0]!;
  if (pad >= length) throw new H2Error(ErrorCode.PROTOCOL_ERROR, "padding too long");
  return payload.subarray(1, length - pad);
}

/**
 * The connection error for a failure while processing input: an {@linkcode H2Error} as it is,
 * an HPACK error as COMPRESSION_ERROR, anything else (a bug, passed to `internal` to log) as
 * INTERNAL_ERROR.
 */
export function connectionError(err: unknown, internal: (err: unknown) => void): H2Error {
  if (err instanceof H2Error) return err;
  if (err instanceof HpackError) {
    return new H2Error(ErrorCode.COMPRESSION_ERROR, `header block: ${err.message}`);
  }
  internal(err);
  return new H2Error(ErrorCode.INTERNAL_ERROR, "internal error");
}

/**
 * Assembles header blocks from HEADERS and CONTINUATION frames (padding and priority removed),
 * up to {@linkcode MAX_HEADER_BLOCK_BYTES}.
 */
export class HeaderBlocks {
  /** The stream of the block awaiting CONTINUATION, 0 when none. */
  streamId = 0;
  /** The HEADERS flags of the block awaiting CONTINUATION. */
  flags = 0;
  #parts: Uint8Array[] = [];
  #bytes = 0;

  /**
   * A HEADERS frame.
   *
   * @returns The header block fragment when it is the whole block (END_HEADERS), else
   *   `undefined` (CONTINUATION follows; the fragment is copied).
   * @throws {H2Error} On stream 0 or padding or priority that does not fit.
   */
  headers(flags: number, streamId: number, payload: Uint8Array): Uint8Array | undefined {
    if (streamId === 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0");
    let start = 0;
    let end = payload.length;
    if ((flags & Flag.PADDED) !== 0) {
      if (payload.length < 1) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "HEADERS length");
      const pad = payload[0]!;
      start = 1;
      if (pad > end - start) throw new H2Error(ErrorCode.PROTOCOL_ERROR, "padding too long");
      end -= pad;
    }
    if ((flags & Flag.PRIORITY) !== 0) {
      if (end - start < 5) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "HEADERS length");
      start += 5;
    }
    const fragment = payload.subarray(start, end);
    if ((flags & Flag.END_HEADERS) !== 0) return fragment;
    this.streamId = streamId;
    this.flags = flags;
    this.#parts = [fragment.slice()];
    this.#bytes = fragment.length;
    return undefined;
  }

  /**
   * A CONTINUATION frame. With END_HEADERS, the whole block is returned and `streamId` is 0
   * again: take the stream and flags before the call.
   *
   * @returns The whole header block, or `undefined` while more CONTINUATION follows.
   * @throws {H2Error} On an unexpected CONTINUATION or a block too large.
   */
  continuation(flags: number, streamId: number, payload: Uint8Array): Uint8Array | undefined {
    if (this.streamId === 0 || streamId !== this.streamId) {
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION");
    }
    this.#bytes += payload.length;
    if (this.#bytes > MAX_HEADER_BLOCK_BYTES) {
      throw new H2Error(ErrorCode.ENHANCE_YOUR_CALM, "header block too large");
    }
    this.#parts.push(payload.slice());
    if ((flags & Flag.END_HEADERS) === 0) return undefined;
    const block = new Uint8Array(this.#bytes);
    let off = 0;
    for (const part of this.#parts) {
      block.set(part, off);
      off += part.length;
    }
    this.streamId = 0;
    this.#parts = [];
    this.#bytes = 0;
    return block;
  }
}
