/**
 * A fake Flow API receiver behind the {@linkcode FlowDialer} seam of `lib/flowapi/client.ts`:
 * records every connection, stream and decoded message, and acks, withholds acks, refuses or
 * drops streams on command. Handlers run on a later macrotask, never inline (as the real
 * transport's events do).
 *
 * Also builds synthetic window records.
 */

import type {
  FlowConnection,
  FlowDialer,
  FlowStream,
  FlowStreamHandlers,
} from "../../lib/flowapi/client.ts";
import { decodeFlowEvent, type FlowEventMessage as FlowEvent } from "../../lib/flowapi/proto.ts";
import type { FlowRecord } from "../../lib/record.ts";

/** One message a fake stream received. */
export interface Received {
  /** The raw bytes written. */
  bytes: Uint8Array;
  /** Decoded. */
  event: FlowEvent;
  /** `performance.now()` at the write. */
  at: number;
}

/** One stream of the fake receiver. */
export class FakeStream implements FlowStream {
  /** Messages, in order. */
  readonly received: Received[] = [];
  /** `cancel()` was called. */
  cancelled = false;
  /** The stream ended (failed, dropped or cancelled). */
  ended = false;
  #h: FlowStreamHandlers;
  #receiver: FakeReceiver;
  #timers = new Set<ReturnType<typeof setTimeout>>();

  constructor(h: FlowStreamHandlers, receiver: FakeReceiver) {
    this.#h = h;
    this.#receiver = receiver;
  }

  /** Non-initiator events received. */
  get events(): FlowEvent[] {
    return this.received.filter((r) => !r.event.isInitiator).map((r) => r.event);
  }

  write(bytes: Uint8Array): boolean {
    if (this.ended) return false;
    const event = decodeFlowEvent(bytes);
    this.received.push({ bytes: bytes.slice(), event, at: performance.now() });
    if (this.#receiver.autoAck && !event.isInitiator) this.ack(event.eventId);
    return !this.#receiver.full;
  }

  cancel(): void {
    this.cancelled = true;
    this.ended = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }

  /** Sends the response headers (the stream becomes ready). */
  ready(): void {
    this.#later(() => this.#h.onReady());
  }

  /**
   * Acks an event.
   *
   * @param eventId 16 bytes (or anything, to test bad acks).
   * @param isInitiator The initiator flag.
   */
  ack(eventId: Uint8Array, isInitiator = false): void {
    this.#later(() => this.#h.onAck({ eventId, isInitiator }));
  }

  /** Signals that the buffer has room again. */
  drain(): void {
    this.#later(() => this.#h.onDrain());
  }

  /**
   * Ends the stream with an error (a dropped stream, a restarted server).
   *
   * @param message The error message.
   */
  fail(message = "stream dropped"): void {
    this.#later(() => {
      this.ended = true;
      this.#h.onClose(new Error(message));
    });
  }

  #later(fn: () => void): void {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      if (!this.cancelled) fn();
    }, 0);
    this.#timers.add(t);
  }
}

/** The fake receiver: a {@linkcode FlowDialer} and what it saw. */
export class FakeReceiver {
  /** Ack every event at once. */
  autoAck = true;
  /** New streams get their headers at once (else call `ready()`). */
  autoReady = true;
  /** New streams fail at once (connection refused). */
  refuse = false;
  /** `write` returns false (buffer full). */
  full = false;
  /** Every stream, in order. */
  readonly streams: FakeStream[] = [];
  /** `performance.now()` of every dial. */
  readonly dials: number[] = [];
  /** The interval passed to every dial. */
  readonly dialIntervals: number[] = [];
  /** Connections closed. */
  closedConnections = 0;

  /** The dialer to give the client. */
  readonly dial: FlowDialer = ({ intervalMs }): FlowConnection => {
    this.dials.push(performance.now());
    this.dialIntervals.push(intervalMs);
    return {
      openStream: (h: FlowStreamHandlers): FlowStream => {
        const s = new FakeStream(h, this);
        this.streams.push(s);
        if (this.refuse) s.fail("connection refused");
        else if (this.autoReady) s.ready();
        return s;
      },
      close: () => {
        this.closedConnections++;
      },
    };
  };

  /** The latest stream. */
  get last(): FakeStream {
    const s = this.streams.at(-1);
    if (s === undefined) throw new Error("no stream yet");
    return s;
  }

  /** Every non-initiator event on every stream, in order. */
  get events(): FlowEvent[] {
    return this.streams.flatMap((s) => s.events);
  }
}

let seq = 0;

/**
 * A synthetic aggregated (`window`) record; every call gets new event and flow IDs.
 *
 * @param overrides Fields to set.
 * @returns The record.
 */
export function windowRecord(overrides: Partial<FlowRecord> = {}): FlowRecord {
  seq++;
  return {
    eventId: crypto.randomUUID(),
    timestamp: new Date(Date.UTC(2026, 0, 2, 3, 4, 5, seq % 1000)),
    flowId: crypto.randomUUID(),
    type: "window",
    direction: "egress",
    protocol: 6,
    sourceIp: "100.64.0.1",
    destIp: "100.64.0.2",
    sourcePort: 40000 + (seq % 20000),
    destPort: 443,
    icmpType: 0,
    icmpCode: 0,
    rxPackets: 10n,
    txPackets: 12n,
    rxBytes: 2048n,
    txBytes: 1024n,
    conntrackId: seq,
    sourceResourceId: null,
    destResourceId: null,
    window: {
      windowStart: new Date(Date.UTC(2026, 0, 2, 3, 4, 0)),
      windowEnd: new Date(Date.UTC(2026, 0, 2, 3, 5, 0)),
      numOfStarts: 1,
      numOfEnds: 1,
      numOfDrops: 0,
      numOfUpdates: 0,
    },
    ...overrides,
  };
}

/**
 * Polls until `cond` holds; throws after `timeoutMs` with `what`.
 *
 * @param what For the error.
 * @param cond The condition.
 * @param timeoutMs Deadline.
 */
export async function until(
  what: string | (() => string),
  cond: () => boolean,
  timeoutMs = 3000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) {
      throw new Error(`timed out waiting for ${typeof what === "string" ? what : what()}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Waits.
 *
 * @param ms Milliseconds.
 */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
