/**
 * A hand-driven HTTP/2 client for the transport tests: writes the frames a test builds (valid or
 * not) to a server on loopback and records every frame the server sends, header blocks decoded.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  CONNECTION_PREFACE,
  ErrorCode,
  Flag,
  FrameReader,
  FrameType,
  OutBuffer,
  Setting,
} from "../../lib/flowapi/h2/frames.ts";
import { type HeaderField, HpackDecoder, HpackEncoder } from "../../lib/flowapi/h2/hpack.ts";
import { encodeFlowEvent, type FlowEventMessage } from "../../lib/flowapi/proto.ts";
import { mintToken } from "../../lib/flowapi/token.ts";
import { SECRET } from "./_events.ts";

export { ErrorCode, Flag, FrameType, Setting };

/** A frame the server sent. */
export interface Frame {
  /** Frame type. */
  type: number;
  /** Flags. */
  flags: number;
  /** Stream. */
  streamId: number;
  /** Payload (a copy). */
  payload: Uint8Array;
  /** HEADERS: the decoded header block (CONTINUATIONs joined). */
  headers?: HeaderField[];
}

/** Request headers of an Events stream with a valid token. */
export function eventsRequest(
  over: { path?: string; authorization?: string | null; extra?: HeaderField[] } = {},
): HeaderField[] {
  const h: HeaderField[] = [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", over.path ?? "/flow.FlowService/Events"],
    [":authority", "127.0.0.1"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
  ];
  if (over.authorization !== null) {
    h.push([
      "authorization",
      over.authorization ?? `Bearer ${mintToken(SECRET, { ttlMs: 3_600_000 })}`,
    ]);
  }
  return [...h, ...(over.extra ?? [])];
}

/**
 * A gRPC message: flag byte, 4-byte length, the bytes.
 *
 * @param message The serialized message (or an event to encode).
 * @param flag The compressed flag.
 * @returns The framed bytes.
 */
export function grpcMessage(message: Uint8Array | FlowEventMessage, flag = 0): Uint8Array {
  const bytes = message instanceof Uint8Array ? message : encodeFlowEvent(message);
  const out = new Uint8Array(5 + bytes.length);
  out[0] = flag;
  new DataView(out.buffer).setUint32(1, bytes.length);
  out.set(bytes, 5);
  return out;
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * One end of a loopback connection that a test drives frame by frame: records every frame the
 * peer sends (header blocks decoded, CONTINUATIONs joined) and writes the frames the test builds.
 */
export class FrameConn implements AsyncDisposable {
  /** Every frame received so far, in order. */
  readonly frames: Frame[] = [];
  /** Whether the peer closed the connection. */
  eof = false;
  /** The HPACK encoder for the headers this end sends. */
  readonly encoder = new HpackEncoder();
  #conn: Deno.Conn;
  #peer: string;
  #decoder = new HpackDecoder();
  #reader = new FrameReader(16_777_215);
  #waiters = new Set<() => void>();
  #reading: Promise<void>;
  #pendingHeaders: Frame | undefined;
  #pendingBlock: Uint8Array[] = [];

  /**
   * Starts reading.
   *
   * @param conn The connection.
   * @param peer What the other end is, for errors (`"server"`, `"client"`).
   */
  constructor(conn: Deno.Conn, peer: string) {
    this.#conn = conn;
    this.#peer = peer;
    this.#reading = this.#read();
  }

  /**
   * Looks at the bytes of each read before they are parsed as frames (e.g. a preface).
   *
   * @param chunk The bytes read.
   * @returns What is left to parse as frames.
   */
  protected onBytes(chunk: Uint8Array): Uint8Array {
    return chunk;
  }

  /**
   * Called for each frame once it is recorded (HEADERS once its block is complete).
   *
   * @param _f The frame.
   */
  protected onFrame(_f: Frame): void {}

  async #read(): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        this.#reader.push(this.onBytes(buf.subarray(0, n)));
        while (this.#reader.next()) {
          const r = this.#reader;
          this.#record({
            type: r.type,
            flags: r.flags,
            streamId: r.streamId,
            payload: r.payload.slice(),
          });
        }
        this.#notify();
      }
    } catch { /* reset or closed */ }
    this.eof = true;
    this.#notify();
  }

  #record(f: Frame): void {
    if (f.type === FrameType.HEADERS || f.type === FrameType.CONTINUATION) {
      if (f.type === FrameType.HEADERS) {
        this.#pendingHeaders = f;
        this.#pendingBlock = [f.payload];
      } else this.#pendingBlock.push(f.payload);
      if ((f.flags & Flag.END_HEADERS) !== 0) {
        const h = this.#pendingHeaders!;
        h.headers = this.#decoder.decode(concat(...this.#pendingBlock)).headers;
        this.frames.push(h);
        this.#pendingHeaders = undefined;
        this.onFrame(h);
      }
      return;
    }
    this.frames.push(f);
    this.onFrame(f);
  }

  #notify(): void {
    for (const w of this.#waiters) w();
  }

  /**
   * Writes bytes.
   *
   * @param bytes The bytes.
   */
  async write(bytes: Uint8Array): Promise<void> {
    let off = 0;
    while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
  }

  /**
   * Writes one frame.
   *
   * @param type Type.
   * @param flags Flags.
   * @param streamId Stream.
   * @param payload Payload.
   */
  async frame(type: number, flags: number, streamId: number, payload: Uint8Array): Promise<void> {
    const out = new OutBuffer();
    out.header(payload.length, type, flags, streamId);
    out.append(payload);
    await this.write(out.take());
  }

  /**
   * Opens a stream (HEADERS with END_HEADERS).
   *
   * @param streamId Stream.
   * @param headers Header list.
   * @param endStream Whether to half-close at once.
   */
  async headers(streamId: number, headers: HeaderField[], endStream = false): Promise<void> {
    const block = this.encoder.encode(headers);
    await this.frame(
      FrameType.HEADERS,
      Flag.END_HEADERS | (endStream ? Flag.END_STREAM : 0),
      streamId,
      block,
    );
  }

  /**
   * Waits until `find` returns something for the frames so far.
   *
   * @param find Looks at the frames.
   * @param what For the error.
   * @param timeoutMs How long.
   * @returns What `find` returned.
   */
  async waitFor<T>(
    find: (frames: Frame[]) => T | undefined,
    what: string,
    timeoutMs = 5000,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = find(this.frames);
      if (found !== undefined) return found;
      const left = deadline - Date.now();
      if (left <= 0 || this.eof) {
        throw new Error(
          `${this.eof ? "connection closed" : "timed out"} waiting for ${what}; frames: ${
            this.frames.map(describe).join(", ")
          }`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      let wake = (): void => {};
      await new Promise<void>((resolve) => {
        wake = resolve;
        this.#waiters.add(wake);
        timer = setTimeout(resolve, Math.min(left, 20)); // also polls state outside the frames
      });
      clearTimeout(timer);
      this.#waiters.delete(wake);
    }
  }

  /** Waits for a frame of a type (on a stream). */
  waitForFrame(type: number, streamId?: number, timeoutMs?: number): Promise<Frame> {
    return this.waitFor(
      (fs) =>
        fs.find((f) => f.type === type && (streamId === undefined || f.streamId === streamId)),
      `frame type ${type}${streamId === undefined ? "" : ` on stream ${streamId}`}`,
      timeoutMs,
    );
  }

  /** Waits until the server closes the connection. */
  async closed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.eof) {
      if (Date.now() > deadline) throw new Error(`the ${this.#peer} did not close the connection`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** The gRPC messages the server sent on a stream (DATA payloads joined and unframed). */
  messages(streamId = 1): Uint8Array[] {
    const bytes = concat(
      ...this.frames.filter((f) => f.type === FrameType.DATA && f.streamId === streamId)
        .map((f) => f.payload),
    );
    const out: Uint8Array[] = [];
    for (let p = 0; p + 5 <= bytes.length;) {
      assert.equal(bytes[p], 0, "uncompressed");
      const n = new DataView(bytes.buffer, bytes.byteOffset + p + 1, 4).getUint32(0);
      out.push(bytes.slice(p + 5, p + 5 + n));
      p += 5 + n;
    }
    return out;
  }

  /** Closes the connection and waits for the reader. */
  async close(): Promise<void> {
    try {
      this.#conn.close();
    } catch { /* closed */ }
    await this.#reading;
  }

  /** Closes. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** A client connection that a test drives frame by frame. */
export class RawClient extends FrameConn {
  #autoAck: boolean;

  private constructor(conn: Deno.Conn, autoAck: boolean) {
    super(conn, "server");
    this.#autoAck = autoAck;
  }

  /**
   * Connects; by default sends the preface and an empty SETTINGS frame, and acks the server's
   * SETTINGS.
   *
   * @param port The server's port on 127.0.0.1.
   * @param options `preface: false` sends nothing; `settings` go in the first SETTINGS frame.
   * @returns The client.
   */
  static async connect(
    port: number,
    options: { preface?: boolean; settings?: [number, number][]; autoAck?: boolean } = {},
  ): Promise<RawClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const c = new RawClient(conn, options.autoAck ?? true);
    if (options.preface ?? true) {
      const out = new OutBuffer();
      out.append(CONNECTION_PREFACE);
      out.settings(options.settings ?? []);
      await c.write(out.take());
    }
    return c;
  }

  protected override onFrame(f: Frame): void {
    if (this.#autoAck && f.type === FrameType.SETTINGS && (f.flags & Flag.ACK) === 0) {
      const out = new OutBuffer();
      out.settingsAck();
      this.write(out.take()).catch(() => {});
    }
  }

  /**
   * DATA frames of at most 16,000 bytes each.
   *
   * @param streamId Stream.
   * @param bytes Payload.
   * @param endStream Whether to half-close with the last frame.
   */
  async dataFrames(streamId: number, bytes: Uint8Array, endStream = false): Promise<void> {
    for (let off = 0; off < bytes.length || off === 0; off += 16_000) {
      const last = off + 16_000 >= bytes.length;
      await this.data(streamId, bytes.subarray(off, off + 16_000), endStream && last);
      if (last) break;
    }
  }

  /**
   * One DATA frame.
   *
   * @param streamId Stream.
   * @param bytes Payload.
   * @param endStream Whether to half-close.
   */
  async data(streamId: number, bytes: Uint8Array, endStream = false): Promise<void> {
    await this.frame(FrameType.DATA, endStream ? Flag.END_STREAM : 0, streamId, bytes);
  }

  /** The trailers (last HEADERS with END_STREAM) of a stream, as an object. */
  trailers(streamId: number): Record<string, string> | undefined {
    const f = this.frames.findLast((f) =>
      f.type === FrameType.HEADERS && f.streamId === streamId && (f.flags & Flag.END_STREAM) !== 0
    );
    return f === undefined ? undefined : Object.fromEntries(f.headers!);
  }

  /** GOAWAY fields, if one was received. */
  goaway(): { lastStreamId: number; code: number; debug: string } | undefined {
    const f = this.frames.find((f) => f.type === FrameType.GOAWAY);
    if (f === undefined) return undefined;
    const v = new DataView(f.payload.buffer, f.payload.byteOffset);
    return {
      lastStreamId: v.getUint32(0) & 0x7fffffff,
      code: v.getUint32(4),
      debug: new TextDecoder().decode(f.payload.subarray(8)),
    };
  }
}

/**
 * Writes a self-signed P-256 certificate for `localhost`, valid for a day, and its key (openssl).
 *
 * @param certFile Where the certificate (PEM) goes.
 * @param keyFile Where the key (PEM) goes.
 * @param options `san`: the subjectAltName (default `DNS:localhost`); `endEntity` (default
 *   `true`): a server certificate, not a CA, as rustls (`Deno.connectTls`) refuses a CA
 *   certificate as the server's own (CaUsedAsEndEntity).
 */
export async function selfSignedCert(
  certFile: string,
  keyFile: string,
  options: { san?: string; endEntity?: boolean } = {},
): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      `subjectAltName=${options.san ?? "DNS:localhost"}`,
      ...(options.endEntity ?? true ? ["-addext", "basicConstraints=critical,CA:FALSE"] : []),
      "-keyout",
      keyFile,
      "-out",
      certFile,
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

/** A frame, briefly, for failure messages. */
export function describe(f: Frame): string {
  const names = Object.fromEntries(Object.entries(FrameType).map(([k, v]) => [v, k]));
  return `${names[f.type] ?? f.type}(s${f.streamId} f${f.flags} ${f.payload.length}B)`;
}

/** The error code of a RST_STREAM or GOAWAY frame. */
export function errorCodeOf(f: Frame): number {
  const v = new DataView(f.payload.buffer, f.payload.byteOffset);
  return f.type === FrameType.GOAWAY ? v.getUint32(4) : v.getUint32(0);
}

/** A 4-byte big-endian integer. */
export function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v);
  return b;
}
