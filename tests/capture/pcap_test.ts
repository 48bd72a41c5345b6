import assert from "node:assert/strict";
import {
  CaptureDecoder,
  CaptureError,
  CaptureReader,
  type CaptureRecord,
  LinkType,
  parseCapture,
} from "../../lib/capture/mod.ts";
import { type PcapngBlock, writePcap, writePcapng } from "../_fakes/pcap_writer.ts";

const A = new Uint8Array([0x45, 1, 2, 3, 4]);
const B = new Uint8Array([0x60, 9, 8, 7, 6, 5, 4, 3]);

/** Asserts that `fn` throws a CaptureError at `offset` whose message contains `text`. */
function assertCaptureError(fn: () => unknown, offset: number, text: string): CaptureError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof CaptureError, `expected a CaptureError, got ${caught}`);
  assert.equal(caught.offset, offset, `offset of "${caught.message}"`);
  assert.ok(caught.message.includes(text), `"${caught.message}" should mention "${text}"`);
  assert.match(caught.message, /^Cannot parse (pcap|pcapng|capture) at offset \d+: /);
  return caught;
}

/** Splits `bytes` into chunks of `size` bytes. */
function chunks(bytes: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

function summary(records: readonly CaptureRecord[]): unknown[] {
  return records.map((r) => ({
    linkType: r.linkType,
    timestampNs: r.timestampNs,
    data: Array.from(r.data),
    originalLength: r.originalLength,
    interfaceIndex: r.interfaceIndex,
    direction: r.direction,
    offset: r.offset,
    hasTimestamp: r.hasTimestamp,
  }));
}

// ---------------------------------------------------------------------------------------------
// Classic pcap

Deno.test("parseCapture() reads classic pcap in both byte orders with micro- and nanoseconds", async (t) => {
  for (const littleEndian of [true, false]) {
    for (const nanosecond of [false, true]) {
      await t.step(`${littleEndian ? "little" : "big"}-endian, ${nanosecond ? "ns" : "µs"}`, () => {
        const file = writePcap({ linkType: LinkType.RAW, littleEndian, nanosecond }, [
          { seconds: 1_700_000_000, fraction: 123_456, data: A, originalLength: 1500 },
          { seconds: 1_700_000_001, fraction: 999_999, data: B },
        ]);
        const parsed = parseCapture(file);
        assert.equal(parsed.format, "pcap");
        assert.equal(parsed.truncation, undefined);
        assert.deepEqual(parsed.interfaces, [
          { index: 0, section: 0, linkType: 101, snapLength: 262144, name: "" },
        ]);
        const unit = nanosecond ? 1n : 1000n;
        assert.deepEqual(summary(parsed.records), [
          {
            linkType: 101,
            timestampNs: 1_700_000_000_000_000_000n + 123_456n * unit,
            data: Array.from(A),
            originalLength: 1500,
            interfaceIndex: 0,
            direction: "unknown",
            offset: 24,
            hasTimestamp: true,
          },
          {
            linkType: 101,
            timestampNs: 1_700_000_001_000_000_000n + 999_999n * unit,
            data: Array.from(B),
            originalLength: B.length,
            interfaceIndex: 0,
            direction: "unknown",
            offset: 24 + 16 + A.length,
            hasTimestamp: true,
          },
        ]);
      });
    }
  }
});

Deno.test("parseCapture() reads the modified (Kuznetzov) pcap format with 24-byte record headers", () => {
  const file = writePcap({ linkType: LinkType.ETHERNET, modified: true, littleEndian: false }, [
    { seconds: 5, fraction: 7, data: A },
    { seconds: 6, fraction: 8, data: B },
  ]);
  const parsed = parseCapture(file);
  assert.deepEqual(parsed.records.map((r) => [r.timestampNs, Array.from(r.data), r.offset]), [
    [5_000_007_000n, Array.from(A), 24],
    [6_000_008_000n, Array.from(B), 24 + 24 + A.length],
  ]);
});

Deno.test("parseCapture() keeps the link type and drops the FCS bits of the pcap link field", () => {
  // FCS len 2 (4 bytes) in bits 28-31 and the F bit (26) over LINKTYPE_ETHERNET.
  const file = writePcap({ linkType: 0x24000001, littleEndian: true }, [
    { seconds: 0, fraction: 0, data: A },
  ]);
  assert.equal(parseCapture(file).records[0]?.linkType, LinkType.ETHERNET);
});

Deno.test("parseCapture() returns no records for a pcap with only a file header", () => {
  const parsed = parseCapture(writePcap({ linkType: 1 }, []));
  assert.equal(parsed.records.length, 0);
  assert.equal(parsed.truncation, undefined);
});

Deno.test("parseCapture() reports a pcap whose last record is cut, and keeps the records before it", () => {
  const file = writePcap({ linkType: 101 }, [
    { seconds: 1, fraction: 0, data: A },
    { seconds: 2, fraction: 0, data: B },
  ]);
  const secondAt = 24 + 16 + A.length;
  // Cut inside the data of the second record.
  const cutData = parseCapture(file.subarray(0, file.length - 3));
  assert.equal(cutData.records.length, 1);
  assert.ok(cutData.truncation instanceof CaptureError);
  assert.equal(cutData.truncation.truncated, true);
  assert.equal(cutData.truncation.offset, secondAt);
  assert.equal(
    cutData.truncation.message,
    `Cannot parse pcap at offset ${secondAt}: record is truncated (21 of 24 bytes present)`,
  );
  // Cut inside the record header of the second record.
  const cutHeader = parseCapture(file.subarray(0, secondAt + 5));
  assert.equal(cutHeader.records.length, 1);
  assert.equal(
    cutHeader.truncation?.message,
    `Cannot parse pcap at offset ${secondAt}: record header is truncated (5 of 16 bytes present)`,
  );
});

Deno.test("parseCapture() throws the truncation in strict mode", () => {
  const file = writePcap({ linkType: 101 }, [{ seconds: 1, fraction: 0, data: A }]);
  const error = assertCaptureError(
    () => parseCapture(file.subarray(0, file.length - 1), { strict: true }),
    24,
    "record is truncated",
  );
  assert.equal(error.truncated, true);
});

Deno.test("parseCapture() throws on an empty file, a cut file header and an unknown magic", () => {
  assertCaptureError(() => parseCapture(new Uint8Array(0)), 0, "file is empty");
  const header = writePcap({ linkType: 1 }, []);
  assertCaptureError(() => parseCapture(header.subarray(0, 3)), 0, "file header is truncated");
  assertCaptureError(() => parseCapture(header.subarray(0, 23)), 0, "file header is truncated");
  assertCaptureError(
    () => parseCapture(new TextEncoder().encode("hello, world")),
    0,
    "unknown magic number 0x68656c6c",
  );
  assertCaptureError(
    () => parseCapture(new Uint8Array([0x1f, 0x8b, 8, 0, 0, 0, 0, 0])),
    0,
    "gzip-compressed",
  );
});

Deno.test("parseCapture() throws on an unsupported pcap version", () => {
  const file = writePcap({ linkType: 1, versionMajor: 1 }, []);
  assertCaptureError(() => parseCapture(file), 4, "unsupported pcap version 1.4");
});

Deno.test("parseCapture() throws when a pcap record length exceeds the limit", () => {
  const file = writePcap({ linkType: 1, littleEndian: true }, [
    { seconds: 0, fraction: 0, data: A },
  ]);
  // incl_len of the first record: 0xffffffff.
  file.set([0xff, 0xff, 0xff, 0xff], 24 + 8);
  assertCaptureError(() => parseCapture(file), 32, "record captured length 4294967295 exceeds");
  const small = writePcap({ linkType: 1 }, [{
    seconds: 0,
    fraction: 0,
    data: new Uint8Array(100),
  }]);
  assertCaptureError(
    () => parseCapture(small, { maxRecordLength: 64 }),
    32,
    "record captured length 100 exceeds the limit of 48 bytes",
  );
});

// ---------------------------------------------------------------------------------------------
// pcapng

Deno.test("parseCapture() reads pcapng in both byte orders", async (t) => {
  for (const littleEndian of [true, false]) {
    await t.step(littleEndian ? "little-endian" : "big-endian", () => {
      const file = writePcapng([
        { type: "section", littleEndian },
        { type: "interface", linkType: LinkType.ETHERNET, snapLength: 65535, name: "eth0" },
        {
          type: "enhanced",
          interfaceId: 0,
          ticks: 1_700_000_000_123_456n,
          data: A,
          originalLength: 60,
        },
      ]);
      const parsed = parseCapture(file);
      assert.equal(parsed.format, "pcapng");
      assert.deepEqual(parsed.interfaces, [
        { index: 0, section: 0, linkType: 1, snapLength: 65535, name: "eth0" },
      ]);
      assert.deepEqual(summary(parsed.records), [{
        linkType: 1,
        timestampNs: 1_700_000_000_123_456_000n,
        data: Array.from(A),
        originalLength: 60,
        interfaceIndex: 0,
        direction: "unknown",
        offset: 28 + 32,
        hasTimestamp: true,
      }]);
    });
  }
});

Deno.test("parseCapture() applies each pcapng interface's link type, if_tsresol and if_tsoffset", () => {
  const file = writePcapng([
    { type: "section" },
    { type: "interface", linkType: LinkType.ETHERNET }, // default: microseconds
    { type: "interface", linkType: LinkType.LINUX_SLL, tsresol: 9 }, // nanoseconds
    { type: "interface", linkType: LinkType.RAW, tsresol: 0x80 | 10 }, // 1/1024 s
    { type: "interface", linkType: LinkType.IPV4, tsresol: 3, tsoffset: 100n }, // ms, +100 s
    { type: "interface", linkType: LinkType.IPV6, tsresol: 12 }, // picoseconds
    { type: "enhanced", interfaceId: 0, ticks: 1_500_000n, data: A },
    { type: "enhanced", interfaceId: 1, ticks: 1_500_000_001n, data: A },
    { type: "enhanced", interfaceId: 2, ticks: 1024n * 3n + 512n, data: A },
    { type: "enhanced", interfaceId: 3, ticks: 2_500n, data: A },
    { type: "enhanced", interfaceId: 4, ticks: 7_000_000_000_123_456n, data: A },
  ]);
  const parsed = parseCapture(file);
  assert.deepEqual(parsed.records.map((r) => [r.linkType, r.interfaceIndex, r.timestampNs]), [
    [1, 0, 1_500_000_000n],
    [113, 1, 1_500_000_001n],
    [101, 2, 3_500_000_000n],
    [228, 3, 102_500_000_000n],
    [229, 4, 7_000_000_000_123n],
  ]);
});

Deno.test("parseCapture() starts a new interface list at each pcapng section, whatever its byte order", () => {
  const file = writePcapng([
    { type: "section", littleEndian: true },
    { type: "interface", linkType: LinkType.ETHERNET, name: "a" },
    { type: "interface", linkType: LinkType.RAW, name: "b" },
    { type: "enhanced", interfaceId: 1, ticks: 1n, data: A },
    { type: "section", littleEndian: false },
    { type: "interface", linkType: LinkType.LINUX_SLL2, name: "c", tsresol: 9 },
    { type: "enhanced", interfaceId: 0, ticks: 2n, data: B },
  ]);
  const parsed = parseCapture(file);
  assert.deepEqual(parsed.interfaces.map((i) => [i.index, i.section, i.linkType, i.name]), [
    [0, 0, 1, "a"],
    [1, 0, 101, "b"],
    [2, 1, 276, "c"],
  ]);
  assert.deepEqual(parsed.records.map((r) => [r.interfaceIndex, r.linkType, r.timestampNs]), [
    [1, 101, 1000n],
    [2, 276, 2n],
  ]);
  // Interface 1 no longer exists in the second section.
  const bad = writePcapng([
    { type: "section" },
    { type: "interface", linkType: 1 },
    { type: "interface", linkType: 1 },
    { type: "section", littleEndian: false },
    { type: "interface", linkType: 1 },
    { type: "enhanced", interfaceId: 1, ticks: 0n, data: A },
  ]);
  const epbAt = 28 + 20 + 20 + 28 + 20;
  assertCaptureError(() => parseCapture(bad), epbAt + 8, "interface 1 is not defined");
});

Deno.test("parseCapture() reads pcapng simple and obsolete packet blocks", () => {
  const long = new Uint8Array(100).fill(0x45);
  const file = writePcapng([
    { type: "section" },
    { type: "interface", linkType: LinkType.RAW, snapLength: 64, tsresol: 9 },
    { type: "obsolete", interfaceId: 0, ticks: 42n, data: A, originalLength: 99 },
    { type: "simple", data: B },
    // A simple packet block holds at most the snapshot length; the original length is 100.
    { type: "simple", data: long.subarray(0, 64), originalLength: 100 },
  ]);
  const parsed = parseCapture(file);
  assert.deepEqual(
    parsed.records.map((r) => [r.timestampNs, r.hasTimestamp, r.data.length, r.originalLength]),
    [
      [42n, true, A.length, 99],
      [42n, false, B.length, B.length], // the last timestamp seen stands in
      [42n, false, 64, 100],
    ],
  );
});

Deno.test("parseCapture() reads the direction from the epb_flags option", () => {
  const file = writePcapng([
    { type: "section", littleEndian: false },
    { type: "interface", linkType: LinkType.RAW },
    { type: "enhanced", interfaceId: 0, ticks: 0n, data: A, flags: 1 },
    { type: "enhanced", interfaceId: 0, ticks: 0n, data: A, flags: 2 | (1 << 5) },
    { type: "enhanced", interfaceId: 0, ticks: 0n, data: A, flags: 0 },
    { type: "enhanced", interfaceId: 0, ticks: 0n, data: A },
  ]);
  assert.deepEqual(parseCapture(file).records.map((r) => r.direction), [
    "inbound",
    "outbound",
    "unknown",
    "unknown",
  ]);
});

Deno.test("parseCapture() skips unknown and non-packet pcapng blocks", () => {
  const file = writePcapng([
    { type: "section" },
    { type: "raw", blockType: 0x00000004, body: [0, 0, 0, 0] }, // name resolution block
    { type: "interface", linkType: LinkType.RAW },
    { type: "raw", blockType: 0x00000005, body: new Array(12).fill(0) }, // interface statistics
    { type: "raw", blockType: 0x40000bad, body: [1, 2, 3, 4, 5, 6, 7, 8] }, // custom block
    { type: "raw", blockType: 0x12345678, body: [] },
    { type: "enhanced", interfaceId: 0, ticks: 0n, data: A },
  ]);
  const parsed = parseCapture(file);
  assert.equal(parsed.records.length, 1);
  assert.equal(parsed.skippedBlocks, 4);
});

Deno.test("parseCapture() throws on malformed pcapng blocks with the offset of the bad field", async (t) => {
  const good = writePcapng([
    { type: "section" },
    { type: "interface", linkType: LinkType.RAW },
    { type: "enhanced", interfaceId: 0, ticks: 0n, data: A },
  ]);
  const idbAt = 28;
  const epbAt = 28 + 20;
  const view = (bytes: Uint8Array): DataView => new DataView(bytes.buffer, bytes.byteOffset);

  await t.step("block length not a multiple of 4", () => {
    const file = good.slice();
    view(file).setUint32(epbAt + 4, 41, true);
    assertCaptureError(
      () => parseCapture(file),
      epbAt + 4,
      "block length 41 is not a multiple of 4",
    );
  });
  await t.step("block length below the block type's minimum", () => {
    const file = good.slice();
    view(file).setUint32(epbAt + 4, 16, true);
    assertCaptureError(() => parseCapture(file), epbAt + 4, "below the minimum of 32");
  });
  await t.step("block length above the limit", () => {
    const file = good.slice();
    view(file).setUint32(epbAt + 4, 0x7ffffff0, true);
    assertCaptureError(() => parseCapture(file), epbAt + 4, "exceeds the limit");
  });
  await t.step("trailing length differs from the leading one", () => {
    const file = good.slice();
    view(file).setUint32(file.length - 4, 44, true);
    assertCaptureError(
      () => parseCapture(file),
      file.length - 4,
      "block trailing length 44 does not match its leading length 40",
    );
  });
  await t.step("captured length overruns the block", () => {
    const file = good.slice();
    view(file).setUint32(epbAt + 20, 9, true);
    assertCaptureError(
      () => parseCapture(file),
      epbAt + 20,
      "captured length 9 overruns its block",
    );
  });
  await t.step("bad byte-order magic", () => {
    const file = good.slice();
    view(file).setUint32(8, 0xdeadbeef, false);
    assertCaptureError(() => parseCapture(file), 8, "unknown byte-order magic 0xdeadbeef");
  });
  await t.step("unsupported major version", () => {
    const file = writePcapng([{ type: "section", major: 2 }]);
    assertCaptureError(() => parseCapture(file), 12, "unsupported pcapng version 2.0");
  });
  await t.step("option overrunning its block", () => {
    const file = writePcapng([
      { type: "section" },
      { type: "interface", linkType: 1, name: "eth0" },
    ]);
    view(file).setUint16(idbAt + 16 + 2, 200, true); // if_name length
    assertCaptureError(() => parseCapture(file), idbAt + 16, "option 2 of length 200 overruns");
  });
  await t.step("packet before any interface", () => {
    const file = writePcapng([
      { type: "section" },
      { type: "simple", data: A },
    ]);
    assertCaptureError(() => parseCapture(file), 28, "interface 0 is not defined");
  });
});

Deno.test("parseCapture() reports a pcapng whose last block is cut", () => {
  const file = writePcapng([
    { type: "section" },
    { type: "interface", linkType: LinkType.RAW },
    { type: "enhanced", interfaceId: 0, ticks: 0n, data: A },
    { type: "enhanced", interfaceId: 0, ticks: 1n, data: B },
  ]);
  const lastAt = 28 + 20 + 40;
  const cut = parseCapture(file.subarray(0, file.length - 1));
  assert.equal(cut.records.length, 1);
  assert.equal(
    cut.truncation?.message,
    `Cannot parse pcapng at offset ${lastAt}: block is truncated (39 of 40 bytes present)`,
  );
  const cutHeader = parseCapture(file.subarray(0, lastAt + 3));
  assert.equal(
    cutHeader.truncation?.message,
    `Cannot parse pcapng at offset ${lastAt}: block header is truncated (3 of 8 bytes present)`,
  );
  // A first section header block cut anywhere is a cut file header.
  for (const length of [2, 4, 10, 27]) {
    assertCaptureError(() => parseCapture(file.subarray(0, length)), 0, "file header is truncated");
  }
  // A later section header block cut is a truncated last block.
  const twoSections = writePcapng([{ type: "section" }, { type: "section", littleEndian: false }]);
  assert.equal(
    parseCapture(twoSections.subarray(0, 28 + 10)).truncation?.message,
    "Cannot parse pcapng at offset 28: section header block is truncated (10 bytes present)",
  );
  assert.equal(
    parseCapture(twoSections.subarray(0, 28 + 20)).truncation?.message,
    "Cannot parse pcapng at offset 28: block is truncated (20 of 28 bytes present)",
  );
});

// ---------------------------------------------------------------------------------------------
// Streaming

const MIXED: PcapngBlock[] = [
  { type: "section", littleEndian: false },
  { type: "interface", linkType: LinkType.ETHERNET, tsresol: 9 },
  { type: "raw", blockType: 0x00000005, body: new Array(12).fill(0) },
  { type: "enhanced", interfaceId: 0, ticks: 10n, data: new Uint8Array(300).fill(7) },
  { type: "section", littleEndian: true },
  { type: "interface", linkType: LinkType.RAW },
  { type: "simple", data: A },
  { type: "enhanced", interfaceId: 0, ticks: 20n, data: B, flags: 2 },
];

Deno.test("CaptureDecoder gives the same records for any chunking of the input", () => {
  const files = [
    writePcapng(MIXED),
    writePcap({ linkType: 1, nanosecond: true }, [
      { seconds: 1, fraction: 2, data: new Uint8Array(300).fill(1) },
      { seconds: 3, fraction: 4, data: A },
    ]),
  ];
  for (const file of files) {
    const expected = summary(parseCapture(file).records);
    for (const size of [1, 2, 3, 7, 13, 64, 1000]) {
      const decoder = new CaptureDecoder();
      const records: CaptureRecord[] = [];
      for (const chunk of chunks(file, size)) {
        decoder.push(chunk);
        for (let r = decoder.next(); r !== undefined; r = decoder.next()) records.push(r);
      }
      assert.equal(decoder.finish(), undefined);
      assert.deepEqual(summary(records), expected, `chunks of ${size} bytes`);
      assert.equal(decoder.offset, file.length);
    }
  }
});

Deno.test("CaptureDecoder holds no more than the unread part of a record", () => {
  const record = { seconds: 0, fraction: 0, data: new Uint8Array(1000) };
  const file = writePcap({ linkType: 1 }, new Array(100).fill(record));
  const decoder = new CaptureDecoder();
  let most = 0;
  for (const chunk of chunks(file, 4096)) {
    decoder.push(chunk);
    while (decoder.next() !== undefined) { /* drain */ }
    most = Math.max(most, decoder.buffered);
  }
  assert.equal(decoder.recordCount, 100);
  assert.equal(decoder.finish(), undefined);
  assert.ok(most < 1016, `held ${most} bytes after draining, more than one record`);
});

Deno.test("CaptureDecoder throws on a bad block length before its bytes arrive", () => {
  const decoder = new CaptureDecoder();
  const file = writePcapng([{ type: "section" }]);
  decoder.push(file);
  assert.equal(decoder.next(), undefined);
  // A block header claiming 1 GiB: rejected as soon as the 8-byte header is there.
  decoder.push(new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0x40]));
  assert.throws(() => decoder.next(), CaptureError);
});

Deno.test("CaptureReader streams a ReadableStream and reports the format and truncation", async () => {
  const file = writePcapng(MIXED);
  const reader = new CaptureReader(
    ReadableStream.from(chunks(file.subarray(0, file.length - 2), 5)),
  );
  assert.equal(reader.format, undefined);
  const records: CaptureRecord[] = [];
  for await (const record of reader) records.push(record);
  assert.equal(reader.format, "pcapng");
  assert.equal(records.length, 2);
  assert.equal(reader.interfaces.length, 2);
  assert.equal(reader.skippedBlocks, 1);
  assert.equal(reader.truncation?.truncated, true);
});

Deno.test("CaptureReader reads an async iterable and a plain array of chunks", async () => {
  const file = writePcap({ linkType: 101 }, [{ seconds: 9, fraction: 0, data: A }]);
  async function* source(): AsyncGenerator<Uint8Array> {
    yield file.subarray(0, 10);
    yield file.subarray(10);
  }
  const fromAsync: bigint[] = [];
  for await (const r of new CaptureReader(source())) fromAsync.push(r.timestampNs);
  const fromArray: bigint[] = [];
  for await (const r of new CaptureReader([file])) fromArray.push(r.timestampNs);
  assert.deepEqual(fromAsync, [9_000_000_000n]);
  assert.deepEqual(fromArray, [9_000_000_000n]);
});

Deno.test("CaptureReader throws CaptureError for a malformed stream and in strict mode", async () => {
  const bad = new CaptureReader([new Uint8Array([1, 2, 3, 4, 5])]);
  await assert.rejects(async () => {
    for await (const _ of bad) { /* read */ }
  }, CaptureError);
  const file = writePcap({ linkType: 101 }, [{ seconds: 9, fraction: 0, data: A }]);
  const strict = new CaptureReader([file.subarray(0, file.length - 1)], { strict: true });
  await assert.rejects(async () => {
    for await (const _ of strict) { /* read */ }
  }, (error: unknown) => error instanceof CaptureError && error.truncated && error.offset === 24);
});

Deno.test("CaptureReader can be iterated only once", async () => {
  const reader = new CaptureReader([writePcap({ linkType: 101 }, [])]);
  for await (const _ of reader) { /* read */ }
  await assert.rejects(async () => {
    for await (const _ of reader) { /* read */ }
  }, /already iterated/);
});

Deno.test("CaptureReader cancels the stream when the loop stops early", async () => {
  let cancelled = false;
  const file = writePcap({ linkType: 101 }, [
    { seconds: 1, fraction: 0, data: A },
    { seconds: 2, fraction: 0, data: A },
  ]);
  const stream = new ReadableStream<Uint8Array>({
    start(controller): void {
      controller.enqueue(file);
    },
    cancel(): void {
      cancelled = true;
    },
  });
  for await (const _ of new CaptureReader(stream)) break;
  assert.ok(cancelled, "the stream should be cancelled");
});

Deno.test("CaptureDecoder rejects a maxRecordLength below 64", () => {
  assert.throws(() => new CaptureDecoder({ maxRecordLength: 10 }), RangeError);
});
