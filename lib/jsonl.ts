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

  /**
   * Creates the instance.
   *
   * @param out The destination.
   */
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
    // Lines are ASCII, so bytes = characters. They are joined 32 at a time (~13 KB strings):
    // one string per batch would be big enough for V8's large-object space, which only a full GC
    // frees, and the heap would balloon under a storm.
    let written = 0;
    for (let i = 0; i < records.length; i += 32) {
      let text = "";
      const end = Math.min(i + 32, records.length);
      for (let j = i; j < end; j++) text += toJsonLine(records[j]!);
      if (this.#buffer.length - written < text.length) {
        const bigger = new Uint8Array(Math.max(this.#buffer.length * 2, written + text.length));
        bigger.set(this.#buffer.subarray(0, written));
        this.#buffer = bigger;
      }
      written += this.#encoder.encodeInto(text, this.#buffer.subarray(written)).written;
    }
    let bytes = this.#buffer.subarray(0, written);
    while (bytes.length > 0) {
      const n = this.#out.writeSync(bytes);
      bytes = bytes.subarray(n);
    }
    this.#written += records.length;
  }
}
