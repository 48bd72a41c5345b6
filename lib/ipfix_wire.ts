/**
 * IPFIX wire encoding of single records: template records, options template records and data
 * records, written with a DataView. Internal to the encoder in `ipfix.ts`, which re-exports only
 * {@linkcode IpfixError}.
 *
 * @module
 */

import type { DataTemplate, InformationElement, OptionsTemplate } from "./ipfix_elements.ts";
import { directionCode, endReasonCode, type IpfixFlow } from "./ipfix_flow.ts";
import { ipv4ToNumber, parseIp } from "./net.ts";

/** Error thrown for unusable encoder options or records that cannot be encoded. */
export class IpfixError extends Error {
  /** Always `IpfixError`. */
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
 * @param t The template.
 * @returns The record's bytes.
 */
export function templateRecord(t: DataTemplate): Uint8Array {
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
