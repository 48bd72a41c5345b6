import assert from "node:assert/strict";
import { JsonLinesSink, type SyncWriter } from "../../lib/jsonl.ts";
import { type FlowRecord, toJsonLine } from "../../lib/record.ts";

/** Collects every writeSync call; writes at most `chunk` bytes per call. */
class RecordingWriter implements SyncWriter {
  readonly calls: Uint8Array[] = [];
  readonly #chunk: number;

  constructor(chunk = Infinity) {
    this.#chunk = chunk;
  }

  writeSync(p: Uint8Array): number {
    const n = Math.min(p.length, this.#chunk);
    this.calls.push(p.slice(0, n));
    return n;
  }

  get text(): string {
    const all = new Uint8Array(this.calls.reduce((n, c) => n + c.length, 0));
    let offset = 0;
    for (const c of this.calls) {
      all.set(c, offset);
      offset += c.length;
    }
    return new TextDecoder().decode(all);
  }
}

function record(conntrackId: number): FlowRecord {
  return {
    eventId: `00000000-0000-4000-8000-${String(conntrackId).padStart(12, "0")}`,
    timestamp: new Date(Date.UTC(2025, 0, 2, 3, 4, 5, 6)),
    flowId: "3bd1bd56-e54d-5779-95ba-5ded2bfbf188",
    type: "start",
    direction: "egress",
    protocol: 17,
    sourceIp: "100.64.0.5",
    destIp: "100.64.0.9",
    sourcePort: 40000 + conntrackId,
    destPort: 53,
    icmpType: 0,
    icmpCode: 0,
    rxPackets: 0n,
    txPackets: 1n,
    rxBytes: 0n,
    txBytes: 76n,
    conntrackId,
  };
}

Deno.test("JsonLinesSink.write() writes a whole batch with one write", () => {
  const out = new RecordingWriter();
  const batch = [record(1), record(2), record(3)];
  new JsonLinesSink(out).write(batch);
  assert.equal(out.calls.length, 1);
  assert.equal(out.text, batch.map(toJsonLine).join(""));
});

Deno.test("JsonLinesSink.write() keeps writing after short writes", () => {
  const out = new RecordingWriter(7);
  const batch = [record(1), record(2)];
  const expected = batch.map(toJsonLine).join("");
  new JsonLinesSink(out).write(batch);
  assert.equal(out.text, expected);
  assert.equal(out.calls.length, Math.ceil(new TextEncoder().encode(expected).length / 7));
});

Deno.test("JsonLinesSink.write() writes nothing for an empty batch", () => {
  const out = new RecordingWriter();
  const sink = new JsonLinesSink(out);
  sink.write([]);
  assert.equal(out.calls.length, 0);
  assert.equal(sink.written, 0);
});

Deno.test("JsonLinesSink.written counts the records written over all batches", () => {
  const sink = new JsonLinesSink(new RecordingWriter());
  sink.write([record(1), record(2)]);
  sink.write([]);
  sink.write([record(3), record(4), record(5)]);
  assert.equal(sink.written, 5);
});

Deno.test("JsonLinesSink.write() appends batches one after the other", () => {
  const out = new RecordingWriter();
  const sink = new JsonLinesSink(out);
  sink.write([record(1)]);
  sink.write([record(2)]);
  assert.equal(out.text, toJsonLine(record(1)) + toJsonLine(record(2)));
});
