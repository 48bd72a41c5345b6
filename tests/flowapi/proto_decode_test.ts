/**
 * The receiver's fast path `decodeStoredEvent` against `flowEventToStored(decodeFlowEvent(…))`:
 * the same result (or the same kind of failure) for random events, repeated fields, extreme
 * values, and randomly damaged bytes.
 */

import assert from "node:assert/strict";
import {
  decodeFlowEvent,
  decodeStoredEvent,
  encodeFlowEvent,
  type FlowEventMessage,
  flowEventToStored,
  ProtoError,
  recordToFlowEvent,
  UnstorableEventError,
} from "../../lib/flowapi/proto.ts";
import { windowRecord } from "../_fakes/fake_flow_transport.ts";

/** mulberry32: a failure can be replayed from its seed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Outcome =
  | { kind: "event"; event: unknown; id: number[] }
  | { kind: "initiator" | "unstorable" | "malformed" };

function reference(b: Uint8Array): Outcome {
  let e: FlowEventMessage;
  try {
    e = decodeFlowEvent(b);
  } catch {
    return { kind: "malformed" };
  }
  if (e.isInitiator) return { kind: "initiator" };
  try {
    return { kind: "event", event: flowEventToStored(e), id: [...e.eventId] };
  } catch {
    return { kind: "unstorable" };
  }
}

function fast(b: Uint8Array): Outcome {
  try {
    const d = decodeStoredEvent(b);
    return d === null
      ? { kind: "initiator" }
      : { kind: "event", event: d.event, id: [...d.eventId] };
  } catch (err) {
    assert.ok(err instanceof ProtoError, `only ProtoErrors: ${err}`);
    return { kind: err instanceof UnstorableEventError ? "unstorable" : "malformed" };
  }
}

function randomEvent(rnd: () => number): FlowEventMessage {
  const int = (n: number): number => Math.floor(rnd() * n);
  const bytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => int(256));
  const u64 = (): bigint =>
    [0n, 1n, 127n, 128n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n + 1n, 2n ** 64n - 1n][int(8)]! +
    BigInt(int(3));
  const date = (): Date =>
    new Date([0, 1_790_000_000_123, -1000, 8.64e15 - 1000, 1][int(5)]! + int(1000));
  const ip = (): Uint8Array =>
    [new Uint8Array(0), bytes(4), bytes(16), bytes(5), new Uint8Array(16)][int(5)]!;
  const text = (): Uint8Array =>
    [
      new Uint8Array(0),
      new TextEncoder().encode("res-ü"),
      new TextEncoder().encode("web"),
      bytes(70),
    ][
      int(4)
    ]!;
  const e: FlowEventMessage = {
    eventId: [bytes(16), bytes(16), bytes(2), new Uint8Array(0)][int(4)]!,
    publicKey: [bytes(32), new Uint8Array(32).fill(7), new Uint8Array(0)][int(3)]!,
    isInitiator: int(10) === 0,
  };
  if (int(5) > 0) e.timestamp = date();
  if (int(3) === 0) e.windowStart = date();
  if (int(3) === 0) e.windowEnd = date();
  if (int(6) > 0) {
    e.flowFields = {
      flowId: [bytes(16), bytes(3)][int(2)]!,
      type: int(6),
      ruleId: text(),
      direction: int(5),
      protocol: [6, 17, 1, 58, 132, 0, 2 ** 32 - 1][int(7)]!,
      sourceIp: ip(),
      destIp: ip(),
      rxPackets: u64(),
      txPackets: u64(),
      rxBytes: u64(),
      txBytes: u64(),
      sourceResourceId: text(),
      destResourceId: text(),
      numOfStarts: u64(),
      numOfEnds: u64(),
      numOfDrops: u64(),
    };
    if (int(2) === 0) e.flowFields.portInfo = { sourcePort: int(65536), destPort: int(65536) };
    else e.flowFields.icmpInfo = { icmpType: int(256), icmpCode: int(256) };
  }
  return e;
}

function check(b: Uint8Array, what: string): Outcome {
  const want = reference(b);
  assert.deepEqual(fast(b), want, what);
  return want;
}

Deno.test("decodeStoredEvent() equals flowEventToStored(decodeFlowEvent()) on random events", () => {
  const rnd = random(20260501);
  const kinds = new Map<string, number>();
  for (let i = 0; i < 3000; i++) {
    const a = encodeFlowEvent(randomEvent(rnd));
    const kind = check(a, `event ${i}`).kind;
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    // Concatenated messages: later scalar and message fields replace earlier ones.
    const b = encodeFlowEvent(randomEvent(rnd));
    const joined = new Uint8Array(a.length + b.length);
    joined.set(a);
    joined.set(b, a.length);
    check(joined, `joined ${i}`);
  }
  for (const kind of ["event", "initiator", "unstorable"]) {
    assert.ok((kinds.get(kind) ?? 0) > 50, `covers ${kind}: ${JSON.stringify([...kinds])}`);
  }
});

Deno.test("decodeStoredEvent() fails like decodeFlowEvent() on damaged bytes", () => {
  const rnd = random(7);
  const kinds = new Map<string, number>();
  for (let i = 0; i < 4000; i++) {
    const b = encodeFlowEvent(randomEvent(rnd)).slice();
    const cut = Math.floor(rnd() * (b.length + 1));
    const variants = [
      b.subarray(0, cut), // truncated
      b.map((x, j) => j === cut ? Math.floor(rnd() * 256) : x), // one byte changed
      Uint8Array.from([...b.subarray(0, cut), Math.floor(rnd() * 256), ...b.subarray(cut)]),
    ];
    for (const v of variants) {
      const kind = check(v, `variant of ${i}`).kind;
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    }
  }
  assert.ok((kinds.get("malformed") ?? 0) > 500, JSON.stringify([...kinds]));
  // Hand-made cases: wire types, field 0, long varints, unknown fields skipped.
  for (
    const hex of [
      "0a10" + "01".repeat(16) + "28ffffffffffffffffff01", // initiator varint of 10 bytes
      "0a10" + "01".repeat(16) + "2880808080808080808002", // bit 64 only: false
      "0a10" + "01".repeat(16) + "0b", // wire type 3
      "0a10" + "01".repeat(16) + "00", // field 0
      "0a10" + "01".repeat(16) + "28ffffffffffffffffffff01", // varint of 11 bytes
      "0a10" + "01".repeat(16) + "9906" + "0102030405060708" + "d506" + "01020304", // fixed64/32
      "0a10" + "01".repeat(16) + "0801", // field 1 as a varint
      "0a10" + "01".repeat(16) + "120c08ffffffffffffffff7f1000", // seconds 2^63-1: no Date
      "0a10" + "01".repeat(16) + "120b08808080808080808001", // seconds -2^63
      "0a10" + "01".repeat(16) + "120708ffffffff0f10ff", // truncated nanos
    ]
  ) {
    check(new Uint8Array(hex.match(/../g)!.map((h) => parseInt(h, 16))), hex);
  }
});

Deno.test("recordToFlowEvent sends the record's rule ID as bytes, empty without one", () => {
  const key = new Uint8Array(32).fill(7);
  const withRule = recordToFlowEvent(windowRecord({ ruleId: "rule-ssh-deny" }), key);
  assert.equal(new TextDecoder().decode(withRule.flowFields!.ruleId), "rule-ssh-deny");
  const decoded = decodeFlowEvent(encodeFlowEvent(withRule));
  assert.equal(new TextDecoder().decode(decoded.flowFields!.ruleId), "rule-ssh-deny");
  for (const ruleId of [null, ""]) {
    const none = recordToFlowEvent(windowRecord({ ruleId }), key);
    assert.equal(none.flowFields!.ruleId.length, 0, String(ruleId));
  }
});
