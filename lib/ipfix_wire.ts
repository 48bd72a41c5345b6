/**
 * IPFIX wire encoding of single records: template records, options template records and data
 * records, written with a DataView. Internal to the encoder in `ipfix.ts`, which re-exports only
 * {@linkcode IpfixError}.
 *
 * @module
 */

import {
  type DataTemplate,
  type DropTemplate,
  FirewallEvent,
  ForwardingStatus,
  type InformationElement,
  type OptionsTemplate,
} from "./ipfix_elements.ts";
import { directionCode, endReasonCode, type IpfixDrop, type IpfixFlow } from "./ipfix_flow.ts";
import { ipv4ToNumber, parseIp } from "./net.ts";

/** Error thrown for unusable encoder options or records that cannot be encoded. */
export class IpfixError extends Error {
  /** The error name, `"IpfixError"`. */
  override name = "IpfixError";
}

const TWO_64 = 1n << 64n;

/**
 * Checks an encoder's `nowMs` argument.
 *
 * @param nowMs Time, ms since the epoch.
 * @throws {IpfixError} When it is negative or not finite.
 */
export function checkNow(nowMs: number): void {
  if (!Number.isFinite(nowMs) || nowMs < 0) {
    throw new IpfixError(`Cannot encode at time ${nowMs}: must be ms since the epoch`);
  }
}

/**
 * Converts a counter or time to an unsigned 64-bit value (numbers lose their fraction).
 *
 * @param v The value.
 * @param ie The element it is written as (named in the error).
 * @returns The value as a bigint.
 * @throws {IpfixError} When it is negative, not finite, or above 2^64 - 1.
 */
export function u64(v: number | bigint, ie: InformationElement): bigint {
  const b = typeof v === "bigint" ? v : Number.isFinite(v) ? BigInt(Math.floor(v)) : -1n;
  if (b < 0n || b >= TWO_64) {
    throw new IpfixError(`Cannot encode ${ie.name} ${v}: must be 0 to 2^64-1`);
  }
  return b;
}

function uint(v: number, max: number, ie: InformationElement): number {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new IpfixError(`Cannot encode ${ie.name} ${v}: must be 0 to ${max}`);
  }
  return v;
}

function writeAddress(
  view: DataView,
  off: number,
  text: string,
  family: 4 | 6,
  ie: InformationElement,
): number {
  if (family === 4) {
    const n = ipv4ToNumber(text);
    if (n < 0) throw new IpfixError(`Cannot encode ${ie.name} "${text}": not an IPv4 address`);
    view.setUint32(off, n);
    return off + 4;
  }
  const bytes = text.includes(":") ? parseIp(text) : undefined;
  if (bytes === undefined) {
    throw new IpfixError(`Cannot encode ${ie.name} "${text}": not an IPv6 address`);
  }
  new Uint8Array(view.buffer, off, 16).set(bytes);
  return off + 16;
}

/**
 * Writes one data record field by field, following the template's layout.
 *
 * @param view The message buffer.
 * @param off Where the record starts; the caller has checked that it fits.
 * @param t The record's template.
 * @param flow The record.
 * @returns The offset after the record.
 * @throws {IpfixError} When a value does not fit its element (bad address, port, counter...).
 */
export function writeFlow(view: DataView, off: number, t: DataTemplate, flow: IpfixFlow): number {
  for (const { ie, slot } of t.fields) {
    switch (slot) {
      case "source":
        off = writeAddress(view, off, flow.source, t.family, ie);
        break;
      case "destination":
        off = writeAddress(view, off, flow.destination, t.family, ie);
        break;
      case "postNatSource":
        off = writeAddress(view, off, flow.postNat!.source, t.family, ie);
        break;
      case "postNatDestination":
        off = writeAddress(view, off, flow.postNat!.destination, t.family, ie);
        break;
      case "sourcePort":
        view.setUint16(off, uint(flow.sourcePort, 0xffff, ie));
        off += 2;
        break;
      case "destinationPort":
        view.setUint16(off, uint(flow.destinationPort, 0xffff, ie));
        off += 2;
        break;
      case "postNatSourcePort":
        view.setUint16(off, uint(flow.postNat!.sourcePort, 0xffff, ie));
        off += 2;
        break;
      case "postNatDestinationPort":
        view.setUint16(off, uint(flow.postNat!.destinationPort, 0xffff, ie));
        off += 2;
        break;
      case "icmpTypeCode":
        view.setUint16(off, uint(flow.icmpType, 0xff, ie) * 256 + uint(flow.icmpCode, 0xff, ie));
        off += 2;
        break;
      case "protocol":
        view.setUint8(off++, uint(flow.protocol, 0xff, ie));
        break;
      case "direction":
        view.setUint8(off++, directionCode(flow.direction));
        break;
      case "endReason":
        view.setUint8(off++, endReasonCode(flow.endReason));
        break;
      case "startMs":
        view.setBigUint64(off, u64(flow.startMs, ie));
        off += 8;
        break;
      case "endMs":
        view.setBigUint64(off, u64(flow.endMs, ie));
        off += 8;
        break;
      case "flowId":
        view.setBigUint64(off, u64(flow.flowId, ie));
        off += 8;
        break;
      case "originalBytes":
        view.setBigUint64(off, u64(flow.originalBytes, ie));
        off += 8;
        break;
      case "originalPackets":
        view.setBigUint64(off, u64(flow.originalPackets, ie));
        off += 8;
        break;
      case "replyBytes":
        view.setBigUint64(off, u64(flow.replyBytes, ie));
        off += 8;
        break;
      case "replyPackets":
        view.setBigUint64(off, u64(flow.replyPackets, ie));
        off += 8;
        break;
    }
  }
  return off;
}

/**
 * Writes one drop record field by field, following the drop template's layout.
 *
 * @param view The message buffer.
 * @param off Where the record starts; the caller has checked that it fits.
 * @param t The record's template.
 * @param drop The record.
 * @returns The offset after the record.
 * @throws {IpfixError} When a value does not fit its element (bad address, port, counter...).
 */
export function writeDrop(view: DataView, off: number, t: DropTemplate, drop: IpfixDrop): number {
  for (const { ie, slot } of t.fields) {
    switch (slot) {
      case "source":
        off = writeAddress(view, off, drop.source, t.family, ie);
        break;
      case "destination":
        off = writeAddress(view, off, drop.destination, t.family, ie);
        break;
      case "sourcePort":
        view.setUint16(off, uint(drop.sourcePort, 0xffff, ie));
        off += 2;
        break;
      case "destinationPort":
        view.setUint16(off, uint(drop.destinationPort, 0xffff, ie));
        off += 2;
        break;
      case "icmpTypeCode":
        view.setUint16(off, uint(drop.icmpType, 0xff, ie) * 256 + uint(drop.icmpCode, 0xff, ie));
        off += 2;
        break;
      case "protocol":
        view.setUint8(off++, uint(drop.protocol, 0xff, ie));
        break;
      case "direction":
        view.setUint8(off++, directionCode(drop.direction));
        break;
      case "firewallEvent":
        view.setUint8(off++, FirewallEvent.FLOW_DENIED);
        break;
      case "forwardingStatus":
        view.setUint8(off++, ForwardingStatus.DROPPED_ACL_DENY);
        break;
      case "startMs":
      case "endMs":
        view.setBigUint64(off, u64(drop.timeMs, ie));
        off += 8;
        break;
      case "flowId":
        view.setBigUint64(off, u64(drop.flowId, ie));
        off += 8;
        break;
      case "bytes":
        view.setBigUint64(off, u64(drop.bytes, ie));
        off += 8;
        break;
      case "packets":
        view.setBigUint64(off, u64(drop.packets, ie));
        off += 8;
        break;
      case "ruleId":
        new Uint8Array(view.buffer, view.byteOffset + off, ie.length).set(
          ruleIdBytes(drop.ruleId, ie.length),
        );
        off += ie.length;
        break;
    }
  }
  return off;
}

const utf8 = new TextEncoder();

/**
 * A rule ID as a fixed-length IPFIX string: UTF-8, cut at a character boundary when longer than
 * `length`, zero-padded; all zeros for `null`.
 *
 * @param ruleId The rule ID.
 * @param length The field length in bytes.
 * @returns `length` bytes.
 *
 * @example Usage
 * ```ts
 * import { ruleIdBytes } from "./ipfix_wire.ts";
 * const b = ruleIdBytes("ü-rule", 2); // "ü" is 2 bytes: it fits, "-" does not
 * if (b[0] !== 0xc3 || b[1] !== 0xbc) throw new Error("cut in the wrong place");
 * ```
 */
export function ruleIdBytes(ruleId: string | null, length: number): Uint8Array {
  const out = new Uint8Array(length);
  if (ruleId === null) return out;
  const bytes = utf8.encode(ruleId);
  let n = Math.min(bytes.length, length);
  // Cut before a continuation byte would split a character: back off to its first byte.
  if (n < bytes.length) { while (n > 0 && (bytes[n]! & 0xc0) === 0x80) n--; }
  out.set(bytes.subarray(0, n));
  return out;
}

function writeSpecifiers(view: DataView, off: number, ies: readonly InformationElement[]): number {
  for (const ie of ies) {
    view.setUint16(off, ie.enterprise === undefined ? ie.id : 0x8000 | ie.id);
    view.setUint16(off + 2, ie.length);
    off += 4;
    if (ie.enterprise !== undefined) {
      view.setUint32(off, ie.enterprise);
      off += 4;
    }
  }
  return off;
}

/**
 * Serializes a template record: template ID, field count, field specifiers (enterprise bit and
 * number for enterprise-specific elements).
 *
 * @param t The template (a flow or a drop template).
 * @returns The record's bytes.
 */
export function templateRecord(t: DataTemplate | DropTemplate): Uint8Array {
  const bytes = new Uint8Array(t.templateRecordLength);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, t.id);
  view.setUint16(2, t.fields.length);
  writeSpecifiers(view, 4, t.fields.map((x) => x.ie));
  return bytes;
}

/**
 * Serializes an options template record: template ID, field count, scope field count, then the
 * scope specifiers and the other specifiers.
 *
 * @param t The options template.
 * @returns The record's bytes (unpadded).
 */
export function optionsTemplateRecord(t: OptionsTemplate): Uint8Array {
  const bytes = new Uint8Array(t.templateRecordLength);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, t.id);
  view.setUint16(2, t.scope.length + t.fields.length);
  view.setUint16(4, t.scope.length);
  writeSpecifiers(view, 6, [...t.scope, ...t.fields]);
  return bytes;
}
