/**
 * Capture file reading: classic pcap (both byte orders, micro- and nanosecond timestamps, and
 * the "modified" Kuznetzov variant) and pcapng (sections of either byte order, several interfaces
 * each with its own link type and timestamp resolution, enhanced/simple/obsolete packet blocks;
 * other blocks are skipped). The format is told by the magic number.
 *
 * Reading is incremental: {@linkcode CaptureDecoder} takes chunks as they arrive and holds only
 * the bytes of the record it is waiting for, so {@linkcode CaptureReader} can stream a file of
 * any size. {@linkcode parseCapture} is the synchronous form for a buffer already in memory.
 *
 * A malformed file throws a {@linkcode CaptureError} that names the byte offset. A file cut off
 * inside its last record is not an error by default: the records before it are delivered and the
 * cut is reported as a {@linkcode CaptureError} with `truncated: true`.
 *
 * @module
 */

/** The two capture file formats. */
export type CaptureFormat = "pcap" | "pcapng";

/** Direction of a packet relative to the capturing host, where the capture records it. */
export type CaptureDirection = "inbound" | "outbound" | "unknown";

/** Options of {@linkcode CaptureError}. */
export interface CaptureErrorOptions extends ErrorOptions {
  /** Byte offset in the file where the problem is. */
  offset: number;
  /** The file ends inside a record (default `false`). */
  truncated?: boolean;
}

/**
 * Error for a capture file that cannot be read: bad magic, impossible lengths, a block that
 * contradicts itself, or a file that ends too early. The message has the form
 * `Cannot parse pcap at offset N: detail`.
 */
export class CaptureError extends Error {
  /** The error name, `"CaptureError"`. */
  override name = "CaptureError";
  /** Byte offset in the file where the problem is. */
  readonly offset: number;
  /** Whether the file ends inside a record; the records before it were readable. */
  readonly truncated: boolean;

  /**
   * Creates the error.
   *
   * @param message The full message.
   * @param options The offset, whether it is a truncation, and an optional cause.
   */
  constructor(message: string, options: CaptureErrorOptions) {
    super(message, options);
    this.offset = options.offset;
    this.truncated = options.truncated ?? false;
  }
}

/** One capture interface: the single link of a pcap file, or an interface block of a pcapng. */
export interface CaptureInterface {
  /** Index across the whole file: the order of the interface blocks, all sections together. */
  readonly index: number;
  /** pcapng section the interface belongs to (0-based); 0 for pcap. */
  readonly section: number;
  /** Link-layer header type (LINKTYPE_* value, see `LinkType`). */
  readonly linkType: number;
  /** Snapshot length; 0 means no limit. */
  readonly snapLength: number;
  /** Interface name (pcapng `if_name`), or `""`. */
  readonly name: string;
}

/** One packet record as stored in the file. */
export interface CaptureRecord {
  /** Link-layer header type of `data`. */
  readonly linkType: number;
  /**
   * Capture time in nanoseconds since the Unix epoch. A pcapng simple packet block has no time
   * of its own: it gets the last time seen in the file (see `hasTimestamp`).
   */
  readonly timestampNs: bigint;
  /** Whether the record carries its own timestamp (all but pcapng simple packet blocks). */
  readonly hasTimestamp: boolean;
  /**
   * The captured bytes, starting with the link-layer header. A view that may share memory with
   * the input chunks; copy it to keep it beyond the input's lifetime.
   */
  readonly data: Uint8Array;
  /** Length of the packet on the wire, which is more than `data.length` when it was cut. */
  readonly originalLength: number;
  /** {@linkcode CaptureInterface.index} of the interface it was captured on. */
  readonly interfaceIndex: number;
  /** Direction, from the pcapng `epb_flags` option; `"unknown"` otherwise. */
  readonly direction: CaptureDirection;
  /** Byte offset of the record (or block) in the file. */
  readonly offset: number;
}

/** Options for reading a capture. */
export interface CaptureOptions {
  /**
   * Largest pcap record or pcapng block accepted, in bytes (default 16 MiB). A larger length
   * field is taken as corruption. It also bounds the memory held while waiting for a record.
   */
  maxRecordLength?: number;
  /** Throw the truncation error instead of reporting it (default `false`). */
  strict?: boolean;
}

/** Default of {@linkcode CaptureOptions.maxRecordLength}: 16 MiB. */
export const DEFAULT_MAX_RECORD_LENGTH = 16 * 1024 * 1024;

// Classic pcap magic numbers, as read in big-endian order.
const PCAP_MICRO = 0xa1b2c3d4;
const PCAP_NANO = 0xa1b23c4d;
const PCAP_MODIFIED = 0xa1b2cd34; // Alexey Kuznetzov's patched libpcap: 24-byte record headers
const PCAP_HEADER_LENGTH = 24;

// pcapng block types and constants.
const BLOCK_SHB = 0x0a0d0d0a;
const BLOCK_IDB = 0x00000001;
const BLOCK_OPB = 0x00000002; // obsolete packet block
const BLOCK_SPB = 0x00000003;
const BLOCK_EPB = 0x00000006;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
const OPTION_END = 0;
const IF_NAME = 2;
const IF_TSRESOL = 9;
const IF_TSOFFSET = 14;
const EPB_FLAGS = 2;

const STATE_START = 0;
const STATE_PCAP = 1;
const STATE_PCAPNG = 2;

const NS_PER_SECOND = 1_000_000_000n;

/** Per-interface timestamp conversion: ns = ticks * multiplier / divisor + offsetNs. */
interface Clock {
  multiplier: bigint;
  divisor: bigint;
  offsetNs: bigint;
}

const MICROSECOND_CLOCK: Clock = Object.freeze({ multiplier: 1000n, divisor: 1n, offsetNs: 0n });

const utf8 = new TextDecoder();

/**
 * Incremental capture decoder: {@linkcode CaptureDecoder.push} chunks in file order, call
 * {@linkcode CaptureDecoder.next} until it returns `undefined` (more bytes needed), and call
 * {@linkcode CaptureDecoder.finish} at the end of the file. Only unconsumed bytes are kept.
 *
 * @example Usage
 * ```ts
 * import { CaptureDecoder } from "./pcap.ts";
 *
 * // A little-endian, microsecond pcap header (link type 101, raw IP) and no records.
 * const header = new Uint8Array([
 *   0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0, 0, 0,
 * ]);
 * const decoder = new CaptureDecoder();
 * decoder.push(header.subarray(0, 10));
 * decoder.push(header.subarray(10));
 * if (decoder.next() !== undefined) throw new Error("no record expected");
 * if (decoder.finish() !== undefined) throw new Error("the file is complete");
 * if (decoder.format !== "pcap" || decoder.interfaces[0]?.linkType !== 101) {
 *   throw new Error("header not read");
 * }
 * ```
 */
export class CaptureDecoder {
  #chunks: Uint8Array[] = [];
  #head = 0; // read position inside #chunks[0]
  #available = 0;
  #offset = 0; // file offset of the first unconsumed byte
  #state = STATE_START;
  #format: CaptureFormat | undefined;
  #maxRecordLength: number;
  #strict: boolean;
  #interfaces: CaptureInterface[] = [];
  #clocks: Clock[] = [];
  #skippedBlocks = 0;
  #records = 0;
  // Classic pcap.
  #littleEndian = false;
  #fractionNs = 1000n;
  #recordHeaderLength = 16;
  // pcapng: the current section, and its interfaces as global indices.
  #section = -1;
  #sectionInterfaces: number[] = [];
  #lastTimestampNs = 0n;

  /**
   * Creates a decoder.
   *
   * @param options Limits and strictness.
   */
  constructor(options: CaptureOptions = {}) {
    const max = options.maxRecordLength ?? DEFAULT_MAX_RECORD_LENGTH;
    if (!Number.isSafeInteger(max) || max < 64) {
      throw new RangeError(`Cannot use maxRecordLength ${max}: must be an integer of at least 64`);
    }
    this.#maxRecordLength = max;
    this.#strict = options.strict ?? false;
  }

  /** The file format, once the magic number has been read. */
  get format(): CaptureFormat | undefined {
    return this.#format;
  }

  /** The interfaces seen so far, indexed by {@linkcode CaptureInterface.index}. */
  get interfaces(): readonly CaptureInterface[] {
    return this.#interfaces;
  }

  /** Number of pcapng blocks skipped because they hold no packet (or are of an unknown type). */
  get skippedBlocks(): number {
    return this.#skippedBlocks;
  }

  /** Number of packet records returned so far. */
  get recordCount(): number {
    return this.#records;
  }

  /**
   * Bytes pushed but not consumed yet. Once {@linkcode CaptureDecoder.next} has returned
   * `undefined`, this is less than one record (or block).
   */
  get buffered(): number {
    return this.#available;
  }

  /** File offset of the first byte not yet consumed. */
  get offset(): number {
    return this.#offset;
  }

  /**
   * Appends the next chunk of the file. The chunk is kept by reference until consumed: do not
   * modify it afterwards.
   *
   * @param chunk The bytes that follow the previous chunk.
   */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#available += chunk.length;
  }

  /**
   * Decodes the next packet record from the bytes pushed so far.
   *
   * @returns The record, or `undefined` when more bytes are needed.
   * @throws {CaptureError} When the file is malformed.
   */
  next(): CaptureRecord | undefined {
    for (;;) {
      switch (this.#state) {
        case STATE_START:
          if (!this.#readMagic()) return undefined;
          continue;
        case STATE_PCAP:
          return this.#nextPcapRecord();
        default: {
          const result = this.#nextPcapngBlock();
          if (result === SKIPPED) continue;
          return result;
        }
      }
    }
  }

  /**
   * Ends the input. Call it after the last chunk, once {@linkcode CaptureDecoder.next} has
   * returned `undefined`.
   *
   * @returns `undefined` when the file ended cleanly, or the truncation error when it ends inside
   * a record.
   * @throws {CaptureError} When the file is empty or its file header (pcap header, first pcapng
   * section header block) is incomplete, and for a truncation in strict mode.
   */
  finish(): CaptureError | undefined {
    if (this.#state === STATE_START || (this.#state === STATE_PCAPNG && this.#section < 0)) {
      if (this.#available === 0) throw this.#error(this.#offset, "file is empty");
      throw this.#error(this.#offset, "file header is truncated", true);
    }
    if (this.#available === 0) return undefined;
    let detail: string;
    if (this.#state === STATE_PCAP) {
      if (this.#available < this.#recordHeaderLength) {
        detail = `record header is truncated (${this.#available} of ${this.#recordHeaderLength} ` +
          "bytes present)";
      } else {
        const view = this.#view(this.#recordHeaderLength);
        const captured = view.getUint32(8, this.#littleEndian);
        detail = `record is truncated (${this.#available} of ${
          this.#recordHeaderLength + captured
        } bytes present)`;
      }
    } else if (this.#available < 8) {
      detail = `block header is truncated (${this.#available} of 8 bytes present)`;
    } else if (this.#available < 12 && this.#view(4).getUint32(0, false) === BLOCK_SHB) {
      // The byte order of this section's lengths is not known yet.
      detail = `section header block is truncated (${this.#available} bytes present)`;
    } else {
      const length = this.#view(8).getUint32(4, this.#littleEndian);
      detail = `block is truncated (${this.#available} of ${length} bytes present)`;
    }
    const error = this.#error(this.#offset, detail, true);
    if (this.#strict) throw error;
    return error;
  }

  #error(offset: number, detail: string, truncated = false): CaptureError {
    const what = this.#format ?? "capture";
    return new CaptureError(`Cannot parse ${what} at offset ${offset}: ${detail}`, {
      offset,
      truncated,
    });
  }

  /** A view of the next `n` bytes (which must be available), without consuming them. */
  #peek(n: number): Uint8Array {
    const first = this.#chunks[0]!;
    if (first.length - this.#head >= n) return first.subarray(this.#head, this.#head + n);
    const out = new Uint8Array(n);
    let at = 0;
    for (let i = 0; at < n; i++) {
      const chunk = this.#chunks[i]!;
      const part = i === 0 ? chunk.subarray(this.#head) : chunk;
      const take = Math.min(part.length, n - at);
      out.set(take === part.length ? part : part.subarray(0, take), at);
      at += take;
    }
    return out;
  }

  #view(n: number): DataView {
    const bytes = this.#peek(n);
    return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  #consume(n: number): void {
    this.#available -= n;
    this.#offset += n;
    let head = this.#head + n;
    while (this.#chunks.length > 0 && head >= this.#chunks[0]!.length) {
      head -= this.#chunks[0]!.length;
      this.#chunks.shift();
    }
    this.#head = head;
  }

  #readMagic(): boolean {
    if (this.#available < 4) return false;
    const magic = this.#view(4).getUint32(0, false);
    const swapped = this.#view(4).getUint32(0, true);
    if (magic === BLOCK_SHB) {
      this.#format = "pcapng";
      this.#state = STATE_PCAPNG;
      return true;
    }
    for (const [value, little] of [[magic, false], [swapped, true]] as const) {
      if (value === PCAP_MICRO || value === PCAP_NANO || value === PCAP_MODIFIED) {
        if (this.#available < PCAP_HEADER_LENGTH) return false;
        this.#format = "pcap";
        this.#littleEndian = little;
        this.#fractionNs = value === PCAP_NANO ? 1n : 1000n;
        this.#recordHeaderLength = value === PCAP_MODIFIED ? 24 : 16;
        this.#readPcapHeader();
        return true;
      }
    }
    const hex = magic.toString(16).padStart(8, "0");
    const hint = (magic >>> 16) === 0x1f8b ? " (the file is gzip-compressed)" : "";
    throw this.#error(0, `unknown magic number 0x${hex}${hint}`);
  }

  #readPcapHeader(): void {
    const view = this.#view(PCAP_HEADER_LENGTH);
    const little = this.#littleEndian;
    const major = view.getUint16(4, little);
    const minor = view.getUint16(6, little);
    if (major !== 2) {
      throw this.#error(this.#offset + 4, `unsupported pcap version ${major}.${minor}`);
    }
    const snapLength = view.getUint32(16, little);
    // The low 16 bits are the link type; the high bits may carry FCS information.
    const linkType = view.getUint32(20, little) & 0xffff;
    this.#interfaces.push(Object.freeze({ index: 0, section: 0, linkType, snapLength, name: "" }));
    this.#clocks.push(MICROSECOND_CLOCK);
    this.#state = STATE_PCAP;
    this.#consume(PCAP_HEADER_LENGTH);
  }

  #nextPcapRecord(): CaptureRecord | undefined {
    const headerLength = this.#recordHeaderLength;
    if (this.#available < headerLength) return undefined;
    const little = this.#littleEndian;
    const view = this.#view(headerLength);
    const captured = view.getUint32(8, little);
    if (captured > this.#maxRecordLength - headerLength) {
      throw this.#error(
        this.#offset + 8,
        `record captured length ${captured} exceeds the limit of ` +
          `${this.#maxRecordLength - headerLength} bytes`,
      );
    }
    if (this.#available < headerLength + captured) return undefined;
    const seconds = view.getUint32(0, little);
    const fraction = view.getUint32(4, little);
    const originalLength = view.getUint32(12, little);
    const data = this.#peek(headerLength + captured).subarray(headerLength);
    const record: CaptureRecord = {
      linkType: this.#interfaces[0]!.linkType,
      timestampNs: BigInt(seconds) * NS_PER_SECOND + BigInt(fraction) * this.#fractionNs,
      hasTimestamp: true,
      data,
      originalLength,
      interfaceIndex: 0,
      direction: "unknown",
      offset: this.#offset,
    };
    this.#consume(headerLength + captured);
    this.#records++;
    return record;
  }

  #nextPcapngBlock(): CaptureRecord | undefined | typeof SKIPPED {
    if (this.#available < 8) return undefined;
    const start = this.#offset;
    const head = this.#view(8);
    const type = head.getUint32(0, this.#littleEndian);
    if (type === BLOCK_SHB) {
      // A section header sets the byte order of everything up to the next one.
      if (this.#available < 12) return undefined;
      const bom = this.#view(12).getUint32(8, false);
      if (bom === BYTE_ORDER_MAGIC) this.#littleEndian = false;
      else if (bom === 0x4d3c2b1a) this.#littleEndian = true;
      else {
        throw this.#error(
          start + 8,
          `unknown byte-order magic 0x${bom.toString(16).padStart(8, "0")}`,
        );
      }
    } else if (this.#section < 0) {
      throw this.#error(start, "file does not start with a section header block");
    }
    const little = this.#littleEndian;
    const length = head.getUint32(4, little);
    const minimum = MINIMUM_BLOCK_LENGTH.get(type) ?? 12;
    if (length < minimum) {
      throw this.#error(
        start + 4,
        `block length ${length} is below the minimum of ${minimum} for block type ${hex(type)}`,
      );
    }
    if (length % 4 !== 0) {
      throw this.#error(start + 4, `block length ${length} is not a multiple of 4`);
    }
    if (length > this.#maxRecordLength) {
      throw this.#error(
        start + 4,
        `block length ${length} exceeds the limit of ${this.#maxRecordLength} bytes`,
      );
    }
    if (this.#available < length) return undefined;
    const block = this.#peek(length);
    const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
    const trailer = view.getUint32(length - 4, little);
    if (trailer !== length) {
      throw this.#error(
        start + length - 4,
        `block trailing length ${trailer} does not match its leading length ${length}`,
      );
    }
    let record: CaptureRecord | undefined;
    switch (type) {
      case BLOCK_SHB:
        this.#readSectionHeader(view, start);
        break;
      case BLOCK_IDB:
        this.#readInterface(view, start);
        break;
      case BLOCK_EPB:
      case BLOCK_OPB:
        record = this.#readPacketBlock(type, block, view, start);
        break;
      case BLOCK_SPB:
        record = this.#readSimplePacket(block, view, start);
        break;
      default:
        this.#skippedBlocks++;
    }
    this.#consume(length);
    if (record === undefined) return SKIPPED;
    this.#records++;
    return record;
  }

  #readSectionHeader(view: DataView, start: number): void {
    const major = view.getUint16(12, this.#littleEndian);
    const minor = view.getUint16(14, this.#littleEndian);
    if (major !== 1) throw this.#error(start + 12, `unsupported pcapng version ${major}.${minor}`);
    this.#section++;
    this.#sectionInterfaces = [];
  }

  #readInterface(view: DataView, start: number): void {
    const little = this.#littleEndian;
    const linkType = view.getUint16(8, little);
    const snapLength = view.getUint32(12, little);
    let name = "";
    let resolution = 6;
    let offsetSeconds = 0n;
    this.#forEachOption(view, 16, start, (code, value) => {
      if (code === IF_NAME) {
        name = utf8.decode(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
      } else if (code === IF_TSRESOL && value.byteLength >= 1) {
        resolution = value.getUint8(0);
      } else if (code === IF_TSOFFSET && value.byteLength >= 8) {
        offsetSeconds = value.getBigInt64(0, little);
      }
    });
    // if_tsresol: the high bit selects a power of 2, else a power of 10; the rest is the
    // (negative) exponent.
    const exponent = BigInt(resolution & 0x7f);
    let clock: Clock;
    if (resolution & 0x80) {
      clock = { multiplier: NS_PER_SECOND, divisor: 1n << exponent, offsetNs: 0n };
    } else if (exponent <= 9n) {
      clock = { multiplier: 10n ** (9n - exponent), divisor: 1n, offsetNs: 0n };
    } else {
      clock = { multiplier: 1n, divisor: 10n ** (exponent - 9n), offsetNs: 0n };
    }
    clock.offsetNs = offsetSeconds * NS_PER_SECOND;
    const index = this.#interfaces.length;
    this.#interfaces.push(
      Object.freeze({ index, section: this.#section, linkType, snapLength, name }),
    );
    this.#clocks.push(clock);
    this.#sectionInterfaces.push(index);
  }

  /** Walks the options from `from` to the block trailer; an end-of-options option stops. */
  #forEachOption(
    view: DataView,
    from: number,
    start: number,
    visit: (code: number, value: DataView) => void,
  ): void {
    const end = view.byteLength - 4;
    let at = from;
    while (at + 4 <= end) {
      const code = view.getUint16(at, this.#littleEndian);
      const length = view.getUint16(at + 2, this.#littleEndian);
      if (code === OPTION_END) return;
      if (at + 4 + length > end) {
        throw this.#error(
          start + at,
          `option ${code} of length ${length} overruns its block of ${view.byteLength} bytes`,
        );
      }
      visit(code, new DataView(view.buffer, view.byteOffset + at + 4, length));
      at += 4 + ((length + 3) & ~3);
    }
  }

  #interfaceFor(id: number, fieldOffset: number): number {
    const index = this.#sectionInterfaces[id];
    if (index === undefined) {
      throw this.#error(
        fieldOffset,
        `interface ${id} is not defined (the section has ${this.#sectionInterfaces.length})`,
      );
    }
    return index;
  }

  #readPacketBlock(
    type: number,
    block: Uint8Array,
    view: DataView,
    start: number,
  ): CaptureRecord {
    const little = this.#littleEndian;
    const id = type === BLOCK_EPB ? view.getUint32(8, little) : view.getUint16(8, little);
    const index = this.#interfaceFor(id, start + 8);
    const ticks = (BigInt(view.getUint32(12, little)) << 32n) | BigInt(view.getUint32(16, little));
    const captured = view.getUint32(20, little);
    const originalLength = view.getUint32(24, little);
    const room = block.length - 32;
    if (captured > room) {
      throw this.#error(
        start + 20,
        `captured length ${captured} overruns its block (room for ${room} bytes)`,
      );
    }
    let direction: CaptureDirection = "unknown";
    if (type === BLOCK_EPB) {
      this.#forEachOption(view, 28 + ((captured + 3) & ~3), start, (code, value) => {
        if (code === EPB_FLAGS && value.byteLength >= 4) {
          const bits = value.getUint32(0, little) & 3;
          direction = bits === 1 ? "inbound" : bits === 2 ? "outbound" : "unknown";
        }
      });
    }
    const clock = this.#clocks[index]!;
    const timestampNs = ticks * clock.multiplier / clock.divisor + clock.offsetNs;
    this.#lastTimestampNs = timestampNs;
    return {
      linkType: this.#interfaces[index]!.linkType,
      timestampNs,
      hasTimestamp: true,
      data: block.subarray(28, 28 + captured),
      originalLength,
      interfaceIndex: index,
      direction,
      offset: start,
    };
  }

  #readSimplePacket(block: Uint8Array, view: DataView, start: number): CaptureRecord {
    const index = this.#interfaceFor(0, start);
    const iface = this.#interfaces[index]!;
    const originalLength = view.getUint32(8, this.#littleEndian);
    // The captured length is implied: the packet, cut to the snapshot length and the block.
    let captured = Math.min(originalLength, block.length - 16);
    if (iface.snapLength > 0) captured = Math.min(captured, iface.snapLength);
    return {
      linkType: iface.linkType,
      timestampNs: this.#lastTimestampNs,
      hasTimestamp: false,
      data: block.subarray(12, 12 + captured),
      originalLength,
      interfaceIndex: index,
      direction: "unknown",
      offset: start,
    };
  }
}

const SKIPPED = Symbol("skipped");

const MINIMUM_BLOCK_LENGTH: ReadonlyMap<number, number> = new Map([
  [BLOCK_SHB, 28],
  [BLOCK_IDB, 20],
  [BLOCK_EPB, 32],
  [BLOCK_OPB, 32],
  [BLOCK_SPB, 16],
]);

function hex(value: number): string {
  return `0x${value.toString(16).padStart(8, "0")}`;
}

/** Where capture bytes come from: a byte stream (e.g. `Deno.FsFile.readable`) or chunks. */
export type CaptureSource =
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array>
  | Iterable<Uint8Array>;

/**
 * Streams the packet records of a capture file. Iterate it once; afterwards
 * {@linkcode CaptureReader.truncation} tells whether the file was cut off in its last record.
 * Breaking out of the loop cancels the source.
 *
 * @example Usage
 * ```ts
 * import { CaptureReader } from "./pcap.ts";
 *
 * // A big-endian, nanosecond pcap holding one 4-byte record.
 * const file = new Uint8Array([
 *   0xa1, 0xb2, 0x3c, 0x4d, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 101,
 *   0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 4, 0, 0, 0, 4, 0x45, 0, 0, 0,
 * ]);
 * const reader = new CaptureReader(ReadableStream.from([file.subarray(0, 30), file.subarray(30)]));
 * const times: bigint[] = [];
 * for await (const record of reader) times.push(record.timestampNs);
 * if (times.length !== 1 || times[0] !== 1_000_000_007n) throw new Error("unexpected records");
 * if (reader.truncation !== undefined) throw new Error("the file is complete");
 * ```
 */
export class CaptureReader implements AsyncIterable<CaptureRecord> {
  #source: CaptureSource;
  #decoder: CaptureDecoder;
  #truncation: CaptureError | undefined;
  #started = false;

  /**
   * Creates a reader; nothing is read until iteration starts.
   *
   * @param source The file's bytes, in order.
   * @param options Limits and strictness.
   */
  constructor(source: CaptureSource, options: CaptureOptions = {}) {
    this.#source = source;
    this.#decoder = new CaptureDecoder(options);
  }

  /** The file format, once the first bytes have been read. */
  get format(): CaptureFormat | undefined {
    return this.#decoder.format;
  }

  /** The interfaces seen so far. */
  get interfaces(): readonly CaptureInterface[] {
    return this.#decoder.interfaces;
  }

  /** Number of pcapng blocks skipped so far (no packet in them, or an unknown type). */
  get skippedBlocks(): number {
    return this.#decoder.skippedBlocks;
  }

  /** Set after iteration when the file ends inside a record (non-strict mode only). */
  get truncation(): CaptureError | undefined {
    return this.#truncation;
  }

  /**
   * Yields the records in file order.
   *
   * @returns The record iterator.
   * @throws {CaptureError} When the file is malformed (and, in strict mode, truncated).
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<CaptureRecord, void, undefined> {
    if (this.#started) throw new Error("Cannot read capture: the reader was already iterated");
    this.#started = true;
    const decoder = this.#decoder;
    for await (const chunk of this.#source) {
      decoder.push(chunk);
      for (let record = decoder.next(); record !== undefined; record = decoder.next()) {
        yield record;
      }
    }
    this.#truncation = decoder.finish();
  }
}

/** The result of {@linkcode parseCapture}. */
export interface ParsedCapture {
  /** The file format. */
  readonly format: CaptureFormat;
  /** The interfaces, indexed by {@linkcode CaptureInterface.index}. */
  readonly interfaces: readonly CaptureInterface[];
  /** The packet records, in file order. */
  readonly records: readonly CaptureRecord[];
  /** Set when the file ends inside a record. */
  readonly truncation: CaptureError | undefined;
  /** Number of pcapng blocks skipped (no packet in them, or an unknown type). */
  readonly skippedBlocks: number;
}

/**
 * Parses a whole capture file held in memory. Record data are views into `bytes`.
 *
 * @param bytes The file.
 * @param options Limits and strictness.
 * @returns The records and what else the file says.
 * @throws {CaptureError} When the file is malformed (and, in strict mode, truncated).
 *
 * @example Usage
 * ```ts
 * import { parseCapture } from "./pcap.ts";
 *
 * // A little-endian pcap header followed by half a record header.
 * const file = new Uint8Array([
 *   0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
 *   1, 2, 3, 4, 5, 6, 7, 8,
 * ]);
 * const parsed = parseCapture(file);
 * if (parsed.records.length !== 0 || parsed.truncation?.offset !== 24) {
 *   throw new Error("expected a truncation at offset 24");
 * }
 * ```
 */
export function parseCapture(bytes: Uint8Array, options: CaptureOptions = {}): ParsedCapture {
  const decoder = new CaptureDecoder(options);
  decoder.push(bytes);
  const records: CaptureRecord[] = [];
  for (let record = decoder.next(); record !== undefined; record = decoder.next()) {
    records.push(record);
  }
  const truncation = decoder.finish();
  return {
    format: decoder.format!,
    interfaces: decoder.interfaces,
    records,
    truncation,
    skippedBlocks: decoder.skippedBlocks,
  };
}

/**
 * Packets captured live, as {@linkcode CaptureRecord}s in batches: the seam between the native
 * capture socket (`ffi/packet_socket.ts`) and `netbird-ct capture`. Failures are thrown as
 * `SourceError`s (lib/source.ts).
 */
export interface LivePacketSource {
  /**
   * Yields batches of frames until closed; an empty batch when a poll timed out without frames
   * (so idle state can expire).
   */
  batches(): AsyncIterable<readonly CaptureRecord[]>;
  /** Counters; `kernelDrops` = frames the kernel dropped because the socket buffer was full. */
  stats(): { kernelDrops: number };
  /** Stops the capture. Idempotent. */
  close(): void;
}
