/**
 * JSON-lines output: one record per line, written in one `write` per batch.
 *
 * @module
 */

import { type FlowRecord, toJsonLine } from "./record.ts";
import type { RecordSink } from "./tracker.ts";

/** Where the lines go: `Deno.stdout`, a `Deno.FsFile`, or anything with a synchronous write. */
export interface SyncWriter {
  /** Writes some of `p`, returning how many bytes were written. */
  writeSync(p: Uint8Array): number;
}

/**
 * Writes each batch of records as JSON lines with a single synchronous write (looping over short
 * writes). Synchronous on purpose: when the call returns, the records are in the kernel's hands,
 * so a stop right after it loses nothing.
 *
 * @example Usage
 * ```ts
 * import { JsonLinesSink } from "./jsonl.ts";
 * const chunks: Uint8Array[] = [];
 * const sink = new JsonLinesSink({ writeSync: (p) => (chunks.push(p.slice()), p.length) });
 * sink.write([]);
 * if (sink.written !== 0) throw new Error("nothing to write");
 * ```
 */
export class JsonLinesSink implements RecordSink {
  #out: SyncWriter;
  #encoder = new TextEncoder();
  #buffer = new Uint8Array(1 << 20);
  #written = 0;

  /** @param out The destination. */
  constructor(out: SyncWriter) {
    this.#out = out;
  }

  /** Records written so far. */
  get written(): number {
    return this.#written;
  }

  /**
   * Writes a batch.
   *
   * @param records The records.
   */
  write(records: readonly FlowRecord[]): void {
    if (records.length === 0) return;
    let text = "";
    for (let i = 0; i < records.length; i++) text += toJsonLine(records[i]!);
    // Lines are ASCII, so the byte length is the string length; one reused buffer per sink
    // instead of a fresh megabyte per batch.
    if (this.#buffer.length < text.length) this.#buffer = new Uint8Array(text.length * 2);
    const { written } = this.#encoder.encodeInto(text, this.#buffer);
    let bytes = this.#buffer.subarray(0, written);
    while (bytes.length > 0) {
      const n = this.#out.writeSync(bytes);
      bytes = bytes.subarray(n);
    }
    this.#written += records.length;
  }
}
