/**
 * NetBird's Flow API wire format (`flow/proto/flow.proto`, package `flow`): the messages of the
 * `FlowService.Events` bidi stream, encoded and decoded by hand (proto3, no reflection), plus the
 * mapping between netbird-ct's records and `FlowEvent`.
 *
 * @module
 */

import type { FlowRecord } from "../record.ts";
import { formatIp, parseIp } from "../net.ts";
import { bytesToUuid, uuidToBytes } from "../uuid.ts";

/** The `.proto` file, as NetBird publishes it (field numbers and types are the contract). */
export const FLOW_PROTO = `syntax = "proto3";

import "google/protobuf/timestamp.proto";

option go_package = "/proto";

package flow;

service FlowService {
  // Client to receiver streams of events and acknowledgements
  rpc Events(stream FlowEvent) returns (stream FlowEventAck) {}
}

message FlowEvent {
  // Unique client event identifier
  bytes event_id = 1;

  // When the event occurred
  google.protobuf.Timestamp timestamp = 2;

  // Public key of the sending peer
  bytes public_key = 3;

  FlowFields flow_fields = 4;

  bool isInitiator = 5;

  google.protobuf.Timestamp window_start = 6;
  google.protobuf.Timestamp window_end = 7;
}

message FlowEventAck {
  // Unique client event identifier that has been ack'ed
  bytes event_id = 1;
  bool isInitiator = 2;
}

message FlowFields {
  // Unique client flow session identifier
  bytes flow_id = 1;

  // Flow type
  Type type = 2;

  // RuleId identifies the rule that allowed or denied the connection
  bytes rule_id = 3;

  // Initiating traffic direction
  Direction direction = 4;

  // IP protocol number
  uint32 protocol = 5;

  // Source IP address
  bytes source_ip = 6;

  // Destination IP address
  bytes dest_ip = 7;

  // Layer 4 -specific information
  oneof connection_info {
    // TCP/UDP port information
    PortInfo port_info = 8;

    // ICMP type and code
    ICMPInfo icmp_info = 9;
  }

  // Number of packets
  uint64 rx_packets = 10;
  uint64 tx_packets = 11;

  // Number of bytes
  uint64 rx_bytes = 12;
  uint64 tx_bytes = 13;

  // Resource ID
  bytes source_resource_id = 14;
  bytes dest_resource_id = 15;

  uint64 num_of_starts = 16;
  uint64 num_of_ends = 17;
  uint64 num_of_drops = 18;
}

// Flow event types
enum Type {
  TYPE_UNKNOWN = 0;
  TYPE_START = 1;
  TYPE_END = 2;
  TYPE_DROP = 3;
}

// Flow direction
enum Direction {
  DIRECTION_UNKNOWN = 0;
  INGRESS = 1;
  EGRESS = 2;
}

// TCP/UDP port information
message PortInfo {
  uint32 source_port = 1;
  uint32 dest_port = 2;
}

// ICMP message information
message ICMPInfo {
  uint32 icmp_type = 1;
  uint32 icmp_code = 2;
}
`;

/** `flow.Type`. */
export const ProtoType = { UNKNOWN: 0, START: 1, END: 2, DROP: 3 } as const;
/** `flow.Direction`. */
export const ProtoDirection = { UNKNOWN: 0, INGRESS: 1, EGRESS: 2 } as const;

/** `flow.PortInfo`. */
export interface PortInfo {
  /** Source port. */
  sourcePort: number;
  /** Destination port. */
  destPort: number;
}

/** `flow.ICMPInfo`. */
export interface IcmpInfo {
  /** ICMP type. */
  icmpType: number;
  /** ICMP code. */
  icmpCode: number;
}

/** `flow.FlowFields`. Absent scalars decode as zero, absent bytes as empty. */
export interface FlowFields {
  /** 16-byte flow UUID. */
  flowId: Uint8Array;
  /** `flow.Type`. */
  type: number;
  /** Rule (policy) ID bytes. */
  ruleId: Uint8Array;
  /** `flow.Direction`. */
  direction: number;
  /** IP protocol number. */
  protocol: number;
  /** 4 bytes (IPv4) or 16 (IPv6), empty when unknown. */
  sourceIp: Uint8Array;
  /** 4 bytes (IPv4) or 16 (IPv6), empty when unknown. */
  destIp: Uint8Array;
  /** Set for every protocol but ICMP/ICMPv6 (oneof `connection_info`). */
  portInfo?: PortInfo;
  /** Set for ICMP and ICMPv6 (oneof `connection_info`). */
  icmpInfo?: IcmpInfo;
  /** Packets received. */
  rxPackets: bigint;
  /** Packets sent. */
  txPackets: bigint;
  /** Bytes received. */
  rxBytes: bigint;
  /** Bytes sent. */
  txBytes: bigint;
  /** Resource ID bytes of the source, empty when none. */
  sourceResourceId: Uint8Array;
  /** Resource ID bytes of the destination, empty when none. */
  destResourceId: Uint8Array;
  /** Aggregated start count. */
  numOfStarts: bigint;
  /** Aggregated end count. */
  numOfEnds: bigint;
  /** Aggregated drop count. */
  numOfDrops: bigint;
}

/** `flow.FlowEvent`. */
export interface FlowEventMessage {
  /** 16-byte event UUID. */
  eventId: Uint8Array;
  /** When the event occurred. */
  timestamp?: Date;
  /** The sending peer's WireGuard public key (32 bytes). */
  publicKey: Uint8Array;
  /** The flow. */
  flowFields?: FlowFields;
  /** The stream's first message from a client sets this (and nothing else). */
  isInitiator: boolean;
  /** Aggregation window start. */
  windowStart?: Date;
  /** Aggregation window end. */
  windowEnd?: Date;
}

/** `flow.FlowEventAck`. */
export interface FlowEventAck {
  /** The acknowledged event's ID. */
  eventId: Uint8Array;
  /** The receiver's first message on a stream sets this. */
  isInitiator: boolean;
}

/** Error for bytes that are not a valid message. */
export class ProtoError extends Error {
  /** The error name, `"ProtoError"`. */
  override name = "ProtoError";
}

// --- writer -------------------------------------------------------------------------------

class Writer {
  #buf = new Uint8Array(256);
  #len = 0;

  #ensure(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const bigger = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + n));
    bigger.set(this.#buf.subarray(0, this.#len));
    this.#buf = bigger;
  }

  varint(v: bigint | number): void {
    let x = BigInt.asUintN(64, BigInt(v));
    this.#ensure(10);
    while (x >= 0x80n) {
      this.#buf[this.#len++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.#buf[this.#len++] = Number(x);
  }

  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  bytes(field: number, b: Uint8Array): void {
    if (b.length === 0) return;
    this.tag(field, 2);
    this.varint(b.length);
    this.#ensure(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
  }

  uint(field: number, v: bigint | number): void {
    if (BigInt(v) === 0n) return;
    this.tag(field, 0);
    this.varint(v);
  }

  bool(field: number, v: boolean): void {
    if (v) this.uint(field, 1);
  }

  message(field: number, inner: Writer): void {
    this.tag(field, 2);
    const b = inner.finish();
    this.varint(b.length);
    this.#ensure(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
  }

  finish(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }
}

function timestampWriter(d: Date): Writer {
  const w = new Writer();
  const ms = d.getTime();
  const seconds = Math.floor(ms / 1000);
  w.uint(1, seconds < 0 ? BigInt.asUintN(64, BigInt(seconds)) : seconds);
  w.uint(2, (ms - seconds * 1000) * 1_000_000);
  return w;
}

// --- reader -------------------------------------------------------------------------------

class Reader {
  #b: Uint8Array;
  #pos = 0;

  constructor(b: Uint8Array) {
    this.#b = b;
  }

  get done(): boolean {
    return this.#pos >= this.#b.length;
  }

  varint(): bigint {
    let shift = 0n;
    let v = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.#pos >= this.#b.length) {
        throw new ProtoError("Cannot decode message: truncated varint");
      }
      const byte = this.#b[this.#pos++]!;
      v |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return BigInt.asUintN(64, v);
      shift += 7n;
    }
    throw new ProtoError("Cannot decode message: varint longer than 10 bytes");
  }

  bytes(): Uint8Array {
    const n = Number(this.varint());
    if (this.#pos + n > this.#b.length) {
      throw new ProtoError("Cannot decode message: field longer than the message");
    }
    const out = this.#b.slice(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  skip(wire: number): void {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        this.#advance(8);
        return;
      case 2:
        this.bytes();
        return;
      case 5:
        this.#advance(4);
        return;
      default:
        throw new ProtoError(`Cannot decode message: unsupported wire type ${wire}`);
    }
  }

  #advance(n: number): void {
    if (this.#pos + n > this.#b.length) throw new ProtoError("Cannot decode message: truncated");
    this.#pos += n;
  }

  /** Calls `fn(field, wire)` per field; `fn` must consume the value or return false to skip. */
  fields(fn: (field: number, wire: number) => boolean): void {
    while (!this.done) {
      const key = Number(this.varint());
      const field = key >>> 3;
      const wire = key & 7;
      if (field === 0) throw new ProtoError("Cannot decode message: field number 0");
      if (!fn(field, wire)) this.skip(wire);
    }
  }
}

function expectWire(field: number, wire: number, want: number): void {
  if (wire !== want) {
    throw new ProtoError(
      `Cannot decode message: field ${field} has wire type ${wire}, want ${want}`,
    );
  }
}

function readTimestamp(b: Uint8Array): Date {
  let seconds = 0n;
  let nanos = 0n;
  const r = new Reader(b);
  r.fields((field, wire) => {
    if (field === 1) {
      expectWire(field, wire, 0);
      seconds = BigInt.asIntN(64, r.varint());
    } else if (field === 2) {
      expectWire(field, wire, 0);
      nanos = BigInt.asIntN(32, r.varint());
    } else return false;
    return true;
  });
  return new Date(Number(seconds) * 1000 + Math.floor(Number(nanos) / 1_000_000));
}

// --- FlowFields ---------------------------------------------------------------------------

function writeFlowFields(f: FlowFields): Writer {
  const w = new Writer();
  w.bytes(1, f.flowId);
  w.uint(2, f.type);
  w.bytes(3, f.ruleId);
  w.uint(4, f.direction);
  w.uint(5, f.protocol);
  w.bytes(6, f.sourceIp);
  w.bytes(7, f.destIp);
  if (f.portInfo !== undefined) {
    const p = new Writer();
    p.uint(1, f.portInfo.sourcePort);
    p.uint(2, f.portInfo.destPort);
    w.message(8, p);
  } else if (f.icmpInfo !== undefined) {
    const i = new Writer();
    i.uint(1, f.icmpInfo.icmpType);
    i.uint(2, f.icmpInfo.icmpCode);
    w.message(9, i);
  }
  w.uint(10, f.rxPackets);
  w.uint(11, f.txPackets);
  w.uint(12, f.rxBytes);
  w.uint(13, f.txBytes);
  w.bytes(14, f.sourceResourceId);
  w.bytes(15, f.destResourceId);
  w.uint(16, f.numOfStarts);
  w.uint(17, f.numOfEnds);
  w.uint(18, f.numOfDrops);
  return w;
}

function emptyFields(): FlowFields {
  return {
    flowId: new Uint8Array(0),
    type: 0,
    ruleId: new Uint8Array(0),
    direction: 0,
    protocol: 0,
    sourceIp: new Uint8Array(0),
    destIp: new Uint8Array(0),
    rxPackets: 0n,
    txPackets: 0n,
    rxBytes: 0n,
    txBytes: 0n,
    sourceResourceId: new Uint8Array(0),
    destResourceId: new Uint8Array(0),
    numOfStarts: 0n,
    numOfEnds: 0n,
    numOfDrops: 0n,
  };
}

function readPair(b: Uint8Array): [number, number] {
  let a = 0;
  let c = 0;
  const r = new Reader(b);
  r.fields((field, wire) => {
    if (field === 1) {
      expectWire(field, wire, 0);
      a = Number(r.varint() & 0xffffffffn);
    } else if (field === 2) {
      expectWire(field, wire, 0);
      c = Number(r.varint() & 0xffffffffn);
    } else return false;
    return true;
  });
  return [a, c];
}

function readFlowFields(b: Uint8Array): FlowFields {
  const f = emptyFields();
  const r = new Reader(b);
  const u32 = (): number => Number(r.varint() & 0xffffffffn);
  r.fields((field, wire) => {
    switch (field) {
      case 1:
      case 3:
      case 6:
      case 7:
      case 14:
      case 15: {
        expectWire(field, wire, 2);
        const v = r.bytes();
        if (field === 1) f.flowId = v;
        else if (field === 3) f.ruleId = v;
        else if (field === 6) f.sourceIp = v;
        else if (field === 7) f.destIp = v;
        else if (field === 14) f.sourceResourceId = v;
        else f.destResourceId = v;
        return true;
      }
      case 2:
        expectWire(field, wire, 0);
        f.type = u32();
        return true;
      case 4:
        expectWire(field, wire, 0);
        f.direction = u32();
        return true;
      case 5:
        expectWire(field, wire, 0);
        f.protocol = u32();
        return true;
      case 8: {
        expectWire(field, wire, 2);
        const [sourcePort, destPort] = readPair(r.bytes());
        f.portInfo = { sourcePort, destPort };
        delete f.icmpInfo;
        return true;
      }
      case 9: {
        expectWire(field, wire, 2);
        const [icmpType, icmpCode] = readPair(r.bytes());
        f.icmpInfo = { icmpType, icmpCode };
        delete f.portInfo;
        return true;
      }
      case 10:
      case 11:
      case 12:
      case 13:
      case 16:
      case 17:
      case 18: {
        expectWire(field, wire, 0);
        const v = r.varint();
        if (field === 10) f.rxPackets = v;
        else if (field === 11) f.txPackets = v;
        else if (field === 12) f.rxBytes = v;
        else if (field === 13) f.txBytes = v;
        else if (field === 16) f.numOfStarts = v;
        else if (field === 17) f.numOfEnds = v;
        else f.numOfDrops = v;
        return true;
      }
      default:
        return false;
    }
  });
  return f;
}

// --- FlowEvent / FlowEventAck -------------------------------------------------------------

/**
 * Encodes a `flow.FlowEvent`.
 *
 * @param e The message.
 * @returns Its protobuf bytes.
 */
export function encodeFlowEvent(e: FlowEventMessage): Uint8Array {
  const w = new Writer();
  w.bytes(1, e.eventId);
  if (e.timestamp !== undefined) w.message(2, timestampWriter(e.timestamp));
  w.bytes(3, e.publicKey);
  if (e.flowFields !== undefined) w.message(4, writeFlowFields(e.flowFields));
  w.bool(5, e.isInitiator);
  if (e.windowStart !== undefined) w.message(6, timestampWriter(e.windowStart));
  if (e.windowEnd !== undefined) w.message(7, timestampWriter(e.windowEnd));
  return w.finish();
}

/**
 * Decodes a `flow.FlowEvent`. Unknown fields are skipped.
 *
 * @param b Protobuf bytes.
 * @returns The message.
 * @throws {ProtoError} On malformed input.
 */
export function decodeFlowEvent(b: Uint8Array): FlowEventMessage {
  const e: FlowEventMessage = {
    eventId: new Uint8Array(0),
    publicKey: new Uint8Array(0),
    isInitiator: false,
  };
  const r = new Reader(b);
  r.fields((field, wire) => {
    switch (field) {
      case 1:
        expectWire(field, wire, 2);
        e.eventId = r.bytes();
        return true;
      case 2:
        expectWire(field, wire, 2);
        e.timestamp = readTimestamp(r.bytes());
        return true;
      case 3:
        expectWire(field, wire, 2);
        e.publicKey = r.bytes();
        return true;
      case 4:
        expectWire(field, wire, 2);
        e.flowFields = readFlowFields(r.bytes());
        return true;
      case 5:
        expectWire(field, wire, 0);
        e.isInitiator = r.varint() !== 0n;
        return true;
      case 6:
        expectWire(field, wire, 2);
        e.windowStart = readTimestamp(r.bytes());
        return true;
      case 7:
        expectWire(field, wire, 2);
        e.windowEnd = readTimestamp(r.bytes());
        return true;
      default:
        return false;
    }
  });
  return e;
}

/**
 * Encodes a `flow.FlowEventAck`.
 *
 * @param a The message.
 * @returns Its protobuf bytes.
 */
export function encodeFlowEventAck(a: FlowEventAck): Uint8Array {
  const w = new Writer();
  w.bytes(1, a.eventId);
  w.bool(2, a.isInitiator);
  return w.finish();
}

/**
 * Decodes a `flow.FlowEventAck`.
 *
 * @param b Protobuf bytes.
 * @returns The message.
 * @throws {ProtoError} On malformed input.
 */
export function decodeFlowEventAck(b: Uint8Array): FlowEventAck {
  const a: FlowEventAck = { eventId: new Uint8Array(0), isInitiator: false };
  const r = new Reader(b);
  r.fields((field, wire) => {
    if (field === 1) {
      expectWire(field, wire, 2);
      a.eventId = r.bytes();
    } else if (field === 2) {
      expectWire(field, wire, 0);
      a.isInitiator = r.varint() !== 0n;
    } else return false;
    return true;
  });
  return a;
}

// --- records ↔ messages -------------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const TYPE_OF: Record<FlowRecord["type"], number> = {
  start: ProtoType.START,
  end: ProtoType.END,
  drop: ProtoType.DROP,
  update: ProtoType.UNKNOWN,
  window: ProtoType.UNKNOWN,
};
const DIRECTION_OF: Record<FlowRecord["direction"], number> = {
  unknown: ProtoDirection.UNKNOWN,
  ingress: ProtoDirection.INGRESS,
  egress: ProtoDirection.EGRESS,
};

/**
 * Maps a record to the `FlowEvent` NetBird's manager sends (its `toProto`): 16-byte event and
 * flow IDs, 4- or 16-byte addresses, ICMP info for ICMP/ICMPv6 and port info for every other
 * protocol, window times and counts for aggregated records (whose type is UNKNOWN on the wire).
 *
 * @param r The record.
 * @param publicKey The peer's WireGuard public key (32 bytes).
 * @returns The message.
 */
export function recordToFlowEvent(r: FlowRecord, publicKey: Uint8Array): FlowEventMessage {
  const icmp = r.protocol === 1 || r.protocol === 58;
  const flowFields: FlowFields = {
    flowId: uuidToBytes(r.flowId),
    type: TYPE_OF[r.type],
    ruleId: new Uint8Array(0),
    direction: DIRECTION_OF[r.direction],
    protocol: r.protocol,
    sourceIp: parseIp(r.sourceIp) ?? new Uint8Array(0),
    destIp: parseIp(r.destIp) ?? new Uint8Array(0),
    rxPackets: r.rxPackets,
    txPackets: r.txPackets,
    rxBytes: r.rxBytes,
    txBytes: r.txBytes,
    sourceResourceId: encoder.encode(r.sourceResourceId ?? ""),
    destResourceId: encoder.encode(r.destResourceId ?? ""),
    numOfStarts: BigInt(r.window?.numOfStarts ?? 0),
    numOfEnds: BigInt(r.window?.numOfEnds ?? 0),
    numOfDrops: BigInt(r.window?.numOfDrops ?? 0),
  };
  if (icmp) flowFields.icmpInfo = { icmpType: r.icmpType, icmpCode: r.icmpCode };
  else flowFields.portInfo = { sourcePort: r.sourcePort, destPort: r.destPort };
  const e: FlowEventMessage = {
    eventId: uuidToBytes(r.eventId),
    timestamp: r.timestamp,
    publicKey,
    flowFields,
    isInitiator: false,
  };
  if (r.window !== undefined) {
    e.windowStart = r.window.windowStart;
    e.windowEnd = r.window.windowEnd;
  }
  return e;
}

/** What a receiver stores: the event in plain values, with its sender. */
export interface StoredEvent {
  /** Event UUID text. */
  eventId: string;
  /** When the event occurred (ISO 8601 UTC). */
  timestamp: string;
  /** Sender's public key, base64. */
  reporterId: string;
  /** Flow UUID text, or "" when not 16 bytes. */
  flowId: string;
  /** `unknown` | `start` | `end` | `drop`. */
  type: "unknown" | "start" | "end" | "drop";
  /** `unknown` | `ingress` | `egress`. */
  direction: "unknown" | "ingress" | "egress";
  /** IP protocol number. */
  protocol: number;
  /** Source address text, or "". */
  sourceIp: string;
  /** Destination address text, or "". */
  destIp: string;
  /** Ports, when the event carried port info. */
  sourcePort: number;
  /** Ports, when the event carried port info. */
  destPort: number;
  /** ICMP type/code, when the event carried ICMP info. */
  icmpType: number;
  /** ICMP code. */
  icmpCode: number;
  /** Counters as decimal strings (uint64). */
  rxPackets: string;
  /** Packets sent. */
  txPackets: string;
  /** Bytes received. */
  rxBytes: string;
  /** Bytes sent. */
  txBytes: string;
  /** Resource IDs as text, or "". */
  sourceResourceId: string;
  /** Destination resource ID, or "". */
  destResourceId: string;
  /** Rule ID as text, or "". */
  ruleId: string;
  /** Aggregation counts (decimal strings). */
  numOfStarts: string;
  /** Ends. */
  numOfEnds: string;
  /** Drops. */
  numOfDrops: string;
  /** Window, ISO 8601, or "". */
  windowStart: string;
  /** Window end, or "". */
  windowEnd: string;
}

const TYPE_NAMES = ["unknown", "start", "end", "drop"] as const;
const DIRECTION_NAMES = ["unknown", "ingress", "egress"] as const;

function base64(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s);
}

/**
 * Turns a received `FlowEvent` into plain values for storage and queries.
 *
 * @param e The message (not an initiator message).
 * @returns The stored form.
 * @throws {ProtoError} When the event ID is not 16 bytes or flow fields are missing.
 */
export function flowEventToStored(e: FlowEventMessage): StoredEvent {
  if (e.eventId.length !== 16) {
    throw new ProtoError(`Cannot store event: event_id has ${e.eventId.length} bytes, want 16`);
  }
  const f = e.flowFields ?? emptyFields();
  const ip = (b: Uint8Array): string => b.length === 4 || b.length === 16 ? formatIp(b) : "";
  return {
    eventId: bytesToUuid(e.eventId),
    timestamp: (e.timestamp ?? new Date(0)).toISOString(),
    reporterId: base64(e.publicKey),
    flowId: f.flowId.length === 16 ? bytesToUuid(f.flowId) : "",
    type: TYPE_NAMES[f.type] ?? "unknown",
    direction: DIRECTION_NAMES[f.direction] ?? "unknown",
    protocol: f.protocol,
    sourceIp: ip(f.sourceIp),
    destIp: ip(f.destIp),
    sourcePort: f.portInfo?.sourcePort ?? 0,
    destPort: f.portInfo?.destPort ?? 0,
    icmpType: f.icmpInfo?.icmpType ?? 0,
    icmpCode: f.icmpInfo?.icmpCode ?? 0,
    rxPackets: String(f.rxPackets),
    txPackets: String(f.txPackets),
    rxBytes: String(f.rxBytes),
    txBytes: String(f.txBytes),
    sourceResourceId: decoder.decode(f.sourceResourceId),
    destResourceId: decoder.decode(f.destResourceId),
    ruleId: decoder.decode(f.ruleId),
    numOfStarts: String(f.numOfStarts),
    numOfEnds: String(f.numOfEnds),
    numOfDrops: String(f.numOfDrops),
    windowStart: e.windowStart?.toISOString() ?? "",
    windowEnd: e.windowEnd?.toISOString() ?? "",
  };
}
