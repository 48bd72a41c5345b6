/**
 * Test helpers for the Flow API receiver: stored events with defaults, and a fake gRPC stream.
 *
 * @module
 */

import {
  decodeFlowEventAck,
  encodeFlowEvent,
  type FlowEventAck,
  type FlowEventMessage as FlowEvent,
  type StoredEvent,
} from "../../lib/flowapi/proto.ts";
import type { EventsCall, EventsCallHandlers, StreamStatus } from "../../lib/flowapi/server.ts";
import type { EventQuery, EventStore, QueryResult } from "../../lib/flowapi/store.ts";

/** A 32-byte secret for tokens. */
export const SECRET: Uint8Array = new TextEncoder().encode("0123456789abcdef0123456789abcdef");

/**
 * A stored event: `n` makes the event ID, the rest are overrides.
 *
 * @param n Number for the event ID (`00000000-0000-4000-8000-00000000000n`).
 * @param over Fields to set.
 * @returns The event.
 */
export function stored(n: number, over: Partial<StoredEvent> = {}): StoredEvent {
  return {
    eventId: `00000000-0000-4000-8000-${n.toString(16).padStart(12, "0")}`,
    timestamp: "2026-03-01T12:00:00.000Z",
    reporterId: "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
    flowId: "11111111-2222-4333-8444-555555555555",
    type: "start",
    direction: "egress",
    protocol: 6,
    sourceIp: "100.64.0.1",
    destIp: "100.64.0.2",
    sourcePort: 40000,
    destPort: 443,
    icmpType: 0,
    icmpCode: 0,
    rxPackets: "1",
    txPackets: "2",
    rxBytes: "60",
    txBytes: "120",
    sourceResourceId: "",
    destResourceId: "",
    ruleId: "",
    numOfStarts: "0",
    numOfEnds: "0",
    numOfDrops: "0",
    windowStart: "",
    windowEnd: "",
    ...over,
  };
}

/**
 * A wire event with a 16-byte ID whose last byte is `n`.
 *
 * @param n Last byte of the event ID.
 * @returns The event.
 */
export function wireEvent(n: number): FlowEvent {
  const eventId = new Uint8Array(16);
  eventId[15] = n;
  return {
    eventId,
    timestamp: new Date(Date.UTC(2026, 2, 1, 12, 0, n)),
    publicKey: new Uint8Array(32).fill(7),
    isInitiator: false,
    flowFields: {
      flowId: new Uint8Array(16).fill(n),
      type: 1,
      ruleId: new Uint8Array(0),
      direction: 2,
      protocol: 6,
      sourceIp: new Uint8Array([100, 64, 0, 1]),
      destIp: new Uint8Array([100, 64, 0, 2]),
      portInfo: { sourcePort: 40000 + n, destPort: 443 },
      rxPackets: 1n,
      txPackets: 1n,
      rxBytes: 60n,
      txBytes: 60n,
      sourceResourceId: new Uint8Array(0),
      destResourceId: new Uint8Array(0),
      numOfStarts: 0n,
      numOfEnds: 0n,
      numOfDrops: 0n,
    },
  };
}

/** A stream that records what the receiver does with it. */
export class FakeCall implements EventsCall {
  /** The authorization metadata. */
  readonly authorization: readonly string[];
  /** The peer. */
  readonly peer = "fake:1";
  /** Decoded acks, in order. */
  readonly acks: FlowEventAck[] = [];
  /** The status the receiver ended the stream with. */
  status: StreamStatus | undefined;
  /** Whether the receiver paused reading. */
  paused = false;
  /** What `write` returns. */
  writeResult = true;
  #handlers: EventsCallHandlers | undefined;

  /**
   * Creates the stream.
   *
   * @param authorization The authorization metadata values.
   */
  constructor(authorization: readonly string[]) {
    this.authorization = authorization;
  }

  /** Records the handlers. */
  listen(handlers: EventsCallHandlers): void {
    this.#handlers = handlers;
  }

  /** Records an ack. */
  write(message: Uint8Array): boolean {
    if (this.status !== undefined) throw new Error("write after close");
    this.acks.push(decodeFlowEventAck(message));
    return this.writeResult;
  }

  /** Records the status. */
  close(status: StreamStatus): void {
    if (this.status !== undefined) throw new Error("closed twice");
    this.status = status;
  }

  /** Records the pause. */
  pause(): void {
    this.paused = true;
  }

  /** Records the resume. */
  resume(): void {
    this.paused = false;
  }

  /** Delivers an event as the client would send it. */
  send(event: FlowEvent): void {
    this.#handlers!.message(encodeFlowEvent(event));
  }

  /** Delivers raw bytes. */
  sendRaw(bytes: Uint8Array): void {
    this.#handlers!.message(bytes);
  }

  /** The client half-closes. */
  end(): void {
    this.#handlers!.end();
  }

  /** The client goes away. */
  cancel(): void {
    this.#handlers!.cancel();
  }

  /** The transport flushed. */
  drain(): void {
    this.#handlers!.drain();
  }

  /** The event IDs acked so far (last byte), initiator acks excluded. */
  ackedIds(): number[] {
    return this.acks.filter((a) => !a.isInitiator).map((a) => a.eventId[15]!);
  }
}

/** A store whose writes wait until the test settles them. */
export class ManualStore implements EventStore {
  /** Writes not yet settled. */
  readonly pending: {
    event: StoredEvent;
    resolve: (isNew: boolean) => void;
    reject: (err: Error) => void;
  }[] = [];
  /** Events stored. */
  readonly events: StoredEvent[] = [];

  /** Waits for the test. */
  put(event: StoredEvent): Promise<boolean> {
    const { promise, resolve, reject } = Promise.withResolvers<boolean>();
    this.pending.push({ event, resolve, reject });
    return promise;
  }

  /** Settles the oldest pending write as stored (new). */
  storeNext(): void {
    const p = this.pending.shift()!;
    this.events.push(p.event);
    p.resolve(true);
  }

  /** Settles the oldest pending write as failed. */
  failNext(message = "Redis is down"): void {
    this.pending.shift()!.reject(new Error(message));
  }

  /** Not used. */
  query(_q: EventQuery): Promise<QueryResult> {
    return Promise.resolve({ events: this.events, total: this.events.length });
  }

  /** Nothing to close. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Lets promise callbacks run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
  await new Promise((r) => setTimeout(r, 0));
}
