/**
 * A small pcap/pcapng writer for tests. It shares no code with lib/capture: magic numbers, block
 * layouts and option codes are written out here again from the formats' specifications
 * (tcpdump.org pcap-savefile(5), IETF draft-ietf-opsawg-pcapng).
 */

/** One classic pcap record. */
export interface PcapRecordInit {
  /** Seconds field. */
  seconds: number;
  /** Microseconds, or nanoseconds in a nanosecond file. */
  fraction: number;
  /** Captured bytes. */
  data: Uint8Array;
  /** Wire length; defaults to `data.length`. */
  originalLength?: number;
}

/** How the classic pcap file is written. */
export interface PcapFileOptions {
  /** Link type in the file header. */
  linkType: number;
  /** Byte order (default little-endian). */
  littleEndian?: boolean;
  /** Nanosecond magic 0xa1b23c4d (default microsecond 0xa1b2c3d4). */
  nanosecond?: boolean;
  /** Kuznetzov's modified format, magic 0xa1b2cd34, 24-byte record headers. */
  modified?: boolean;
  /** Snapshot length (default 262144). */
  snapLength?: number;
  /** Major version (default 2). */
  versionMajor?: number;
}

class ByteWriter {
  #parts: number[] = [];
  littleEndian: boolean;

  constructor(littleEndian: boolean) {
    this.littleEndian = littleEndian;
  }

  get length(): number {
    return this.#parts.length;
  }

  u8(value: number): this {
    this.#parts.push(value & 0xff);
    return this;
  }

  u16(value: number): this {
    const b = [(value >>> 8) & 0xff, value & 0xff];
    if (this.littleEndian) b.reverse();
    this.#parts.push(...b);
    return this;
  }

  u32(value: number): this {
    const b = [(value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
    if (this.littleEndian) b.reverse();
    this.#parts.push(...b);
    return this;
  }

  i64(value: bigint): this {
    const v = BigInt.asUintN(64, value);
    const high = Number(v >> 32n);
    const low = Number(v & 0xffffffffn);
    return this.littleEndian ? this.u32(low).u32(high) : this.u32(high).u32(low);
  }

  bytes(data: Uint8Array | number[]): this {
    for (const b of data) this.#parts.push(b);
    return this;
  }

  pad4(): this {
    while (this.#parts.length % 4 !== 0) this.#parts.push(0);
    return this;
  }

  toBytes(): Uint8Array {
    return new Uint8Array(this.#parts);
  }
}

/** Writes a classic pcap file. */
export function writePcap(
  options: PcapFileOptions,
  records: readonly PcapRecordInit[],
): Uint8Array {
  const w = new ByteWriter(options.littleEndian ?? true);
  const magic = options.modified ? 0xa1b2cd34 : options.nanosecond ? 0xa1b23c4d : 0xa1b2c3d4;
  w.u32(magic).u16(options.versionMajor ?? 2).u16(4).u32(0).u32(0);
  w.u32(options.snapLength ?? 262144).u32(options.linkType);
  for (const r of records) {
    w.u32(r.seconds).u32(r.fraction).u32(r.data.length).u32(r.originalLength ?? r.data.length);
    if (options.modified) w.u32(3).u16(0x0800).u8(0).u8(0); // ifindex, protocol, pkt_type, pad
    w.bytes(r.data);
  }
  return w.toBytes();
}

/** One pcapng option: code and value (padded by the writer). */
export interface PcapngOption {
  code: number;
  value: Uint8Array | number[];
}

/** pcapng blocks, written in order; a section block sets the byte order of what follows. */
export type PcapngBlock =
  | { type: "section"; littleEndian?: boolean; major?: number; options?: PcapngOption[] }
  | {
    type: "interface";
    linkType: number;
    snapLength?: number;
    /** if_tsresol byte. */
    tsresol?: number;
    /** if_tsoffset seconds. */
    tsoffset?: bigint;
    name?: string;
    options?: PcapngOption[];
  }
  | {
    type: "enhanced";
    interfaceId: number;
    /** Timestamp in interface units. */
    ticks: bigint;
    data: Uint8Array;
    originalLength?: number;
    /** epb_flags value. */
    flags?: number;
  }
  | { type: "simple"; data: Uint8Array; originalLength?: number }
  | {
    type: "obsolete";
    interfaceId: number;
    ticks: bigint;
    data: Uint8Array;
    originalLength?: number;
  }
  | { type: "raw"; blockType: number; body: Uint8Array | number[] };

function options(w: ByteWriter, list: PcapngOption[]): void {
  if (list.length === 0) return;
  for (const option of list) {
    w.u16(option.code).u16(option.value.length).bytes(option.value).pad4();
  }
  w.u16(0).u16(0); // opt_endofopt
}

function block(littleEndian: boolean, type: number, body: (w: ByteWriter) => void): number[] {
  const inner = new ByteWriter(littleEndian);
  body(inner);
  inner.pad4();
  const total = inner.length + 12;
  const w = new ByteWriter(littleEndian);
  w.u32(type).u32(total).bytes(inner.toBytes()).u32(total);
  return Array.from(w.toBytes());
}

function append(out: number[], bytes: number[]): void {
  for (const b of bytes) out.push(b);
}

function i64Bytes(value: bigint, littleEndian: boolean): Uint8Array {
  return new ByteWriter(littleEndian).i64(value).toBytes();
}

/** Writes a pcapng file. It should start with a section block. */
export function writePcapng(blocks: readonly PcapngBlock[]): Uint8Array {
  const out: number[] = [];
  let little = true;
  for (const b of blocks) {
    switch (b.type) {
      case "section":
        little = b.littleEndian ?? true;
        append(
          out,
          block(little, 0x0a0d0d0a, (w) => {
            w.u32(0x1a2b3c4d).u16(b.major ?? 1).u16(0).i64(-1n);
            options(w, b.options ?? []);
          }),
        );
        break;
      case "interface": {
        const opts: PcapngOption[] = [...(b.options ?? [])];
        if (b.name !== undefined) opts.push({ code: 2, value: new TextEncoder().encode(b.name) });
        if (b.tsresol !== undefined) opts.push({ code: 9, value: [b.tsresol] });
        if (b.tsoffset !== undefined) opts.push({ code: 14, value: i64Bytes(b.tsoffset, little) });
        append(
          out,
          block(little, 1, (w) => {
            w.u16(b.linkType).u16(0).u32(b.snapLength ?? 0);
            options(w, opts);
          }),
        );
        break;
      }
      case "enhanced":
        append(
          out,
          block(little, 6, (w) => {
            w.u32(b.interfaceId).u32(Number(b.ticks >> 32n)).u32(Number(b.ticks & 0xffffffffn));
            w.u32(b.data.length).u32(b.originalLength ?? b.data.length).bytes(b.data).pad4();
            if (b.flags !== undefined) {
              options(w, [{ code: 2, value: new ByteWriter(little).u32(b.flags).toBytes() }]);
            }
          }),
        );
        break;
      case "obsolete":
        append(
          out,
          block(little, 2, (w) => {
            w.u16(b.interfaceId).u16(0).u32(Number(b.ticks >> 32n))
              .u32(Number(b.ticks & 0xffffffffn));
            w.u32(b.data.length).u32(b.originalLength ?? b.data.length).bytes(b.data);
          }),
        );
        break;
      case "simple":
        append(
          out,
          block(little, 3, (w) => {
            w.u32(b.originalLength ?? b.data.length).bytes(b.data);
          }),
        );
        break;
      case "raw":
        append(
          out,
          block(little, b.blockType, (w) => {
            w.bytes(b.body);
          }),
        );
        break;
    }
  }
  return new Uint8Array(out);
}
