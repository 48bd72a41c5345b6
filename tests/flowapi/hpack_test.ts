/**
 * HPACK against the examples of RFC 7541 Appendix C (C.2–C.6, with and without Huffman coding,
 * with evictions), the Huffman code table of Appendix B, and malformed input.
 */

import assert from "node:assert/strict";
import {
  type HeaderField,
  HpackDecoder,
  HpackEncoder,
  HpackError,
  HUFFMAN_CODES,
  huffmanDecode,
  huffmanEncode,
} from "../../lib/flowapi/h2/hpack.ts";

function hex(text: string): Uint8Array {
  const digits = text.replace(/\s+/g, "");
  return new Uint8Array(digits.match(/../g)!.map((h) => parseInt(h, 16)));
}

/** One header block of an example: its encoding, the decoded list, the table after it. */
interface Block {
  encoded: string;
  headers: HeaderField[];
  /** Dynamic table after decoding, newest first. */
  table: HeaderField[];
  tableSize: number;
}

/** A sequence of blocks decoded by one decoder (one connection). */
interface Example {
  name: string;
  /** SETTINGS_HEADER_TABLE_SIZE. */
  tableLimit: number;
  blocks: Block[];
}

const REQ1: HeaderField[] = [
  [":method", "GET"],
  [":scheme", "http"],
  [":path", "/"],
  [":authority", "www.example.com"],
];
const REQ2: HeaderField[] = [...REQ1, ["cache-control", "no-cache"]];
const REQ3: HeaderField[] = [
  [":method", "GET"],
  [":scheme", "https"],
  [":path", "/index.html"],
  [":authority", "www.example.com"],
  ["custom-key", "custom-value"],
];
const REQ_TABLES: [HeaderField[], number][] = [
  [[[":authority", "www.example.com"]], 57],
  [[["cache-control", "no-cache"], [":authority", "www.example.com"]], 110],
  [[["custom-key", "custom-value"], ["cache-control", "no-cache"], [
    ":authority",
    "www.example.com",
  ]], 164],
];

const DATE1 = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE2 = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOCATION = "https://www.example.com";
const COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const RES1: HeaderField[] = [
  [":status", "302"],
  ["cache-control", "private"],
  ["date", DATE1],
  ["location", LOCATION],
];
const RES2: HeaderField[] = [[":status", "307"], ...RES1.slice(1)];
const RES3: HeaderField[] = [
  [":status", "200"],
  ["cache-control", "private"],
  ["date", DATE2],
  ["location", LOCATION],
  ["content-encoding", "gzip"],
  ["set-cookie", COOKIE],
];
const RES_TABLES: [HeaderField[], number][] = [
  [
    [["location", LOCATION], ["date", DATE1], ["cache-control", "private"], [":status", "302"]],
    222,
  ],
  [
    [[":status", "307"], ["location", LOCATION], ["date", DATE1], ["cache-control", "private"]],
    222,
  ],
  [[["set-cookie", COOKIE], ["content-encoding", "gzip"], ["date", DATE2]], 215],
];

const EXAMPLES: Example[] = [
  {
    name: "C.2.1 literal with indexing",
    tableLimit: 4096,
    blocks: [{
      encoded: "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
      headers: [["custom-key", "custom-header"]],
      table: [["custom-key", "custom-header"]],
      tableSize: 55,
    }],
  },
  {
    name: "C.2.2 literal without indexing",
    tableLimit: 4096,
    blocks: [{
      encoded: "040c 2f73 616d 706c 652f 7061 7468",
      headers: [[":path", "/sample/path"]],
      table: [],
      tableSize: 0,
    }],
  },
  {
    name: "C.2.3 literal never indexed",
    tableLimit: 4096,
    blocks: [{
      encoded: "1008 7061 7373 776f 7264 0673 6563 7265 74",
      headers: [["password", "secret"]],
      table: [],
      tableSize: 0,
    }],
  },
  {
    name: "C.2.4 indexed",
    tableLimit: 4096,
    blocks: [{ encoded: "82", headers: [[":method", "GET"]], table: [], tableSize: 0 }],
  },
  {
    name: "C.3 requests without Huffman coding",
    tableLimit: 4096,
    blocks: [
      "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
      "8286 84be 5808 6e6f 2d63 6163 6865",
      "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ].map((encoded, i) => ({
      encoded,
      headers: [REQ1, REQ2, REQ3][i]!,
      table: REQ_TABLES[i]![0],
      tableSize: REQ_TABLES[i]![1],
    })),
  },
  {
    name: "C.4 requests with Huffman coding",
    tableLimit: 4096,
    blocks: [
      "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
      "8286 84be 5886 a8eb 1064 9cbf",
      "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ].map((encoded, i) => ({
      encoded,
      headers: [REQ1, REQ2, REQ3][i]!,
      table: REQ_TABLES[i]![0],
      tableSize: REQ_TABLES[i]![1],
    })),
  },
  {
    name: "C.5 responses without Huffman coding (table of 256 bytes, evictions)",
    tableLimit: 256,
    blocks: [
      "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 " +
      "2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 " +
      "6c65 2e63 6f6d",
      "4803 3330 37c1 c0bf",
      "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d " +
      "54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 " +
      "5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e " +
      "3d31",
    ].map((encoded, i) => ({
      encoded,
      headers: [RES1, RES2, RES3][i]!,
      table: RES_TABLES[i]![0],
      tableSize: RES_TABLES[i]![1],
    })),
  },
  {
    name: "C.6 responses with Huffman coding (table of 256 bytes, evictions)",
    tableLimit: 256,
    blocks: [
      "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 " +
      "2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
      "4883 640e ffc1 c0bf",
      "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab " +
      "77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f " +
      "9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ].map((encoded, i) => ({
      encoded,
      headers: [RES1, RES2, RES3][i]!,
      table: RES_TABLES[i]![0],
      tableSize: RES_TABLES[i]![1],
    })),
  },
];

for (const example of EXAMPLES) {
  Deno.test(`HPACK RFC 7541 ${example.name}`, () => {
    const decoder = new HpackDecoder(example.tableLimit);
    example.blocks.forEach((block, i) => {
      const { headers, size, tooLarge } = decoder.decode(hex(block.encoded));
      assert.deepEqual(headers, block.headers, `block ${i + 1}: header list`);
      assert.equal(tooLarge, false);
      assert.equal(size, block.headers.reduce((n, [k, v]) => n + k.length + v.length + 32, 0));
      assert.deepEqual(decoder.entries, block.table, `block ${i + 1}: dynamic table`);
      assert.equal(decoder.tableSize, block.tableSize, `block ${i + 1}: table size`);
    });
  });
}

Deno.test("HPACK Huffman codes match RFC 7541 Appendix B", () => {
  // [symbol, code as printed (hex, LSB-aligned), bits] from the table.
  const rows: [number, number, number][] = [
    [0, 0x1ff8, 13],
    [1, 0x7fffd8, 23],
    [10, 0x3ffffffc, 30],
    [32, 0x14, 6],
    [47, 0x18, 6],
    [48, 0x0, 5],
    [97, 0x3, 5],
    [122, 0x7b, 7],
    [127, 0xffffffc, 28],
    [128, 0xfffe6, 20],
    [199, 0x1ffffec, 25],
    [254, 0x7fffff0, 27],
    [255, 0x3ffffee, 26],
    [256, 0x3fffffff, 30],
  ];
  for (const [sym, code, bits] of rows) {
    assert.deepEqual(HUFFMAN_CODES[sym], [code, bits], `symbol ${sym}`);
  }
  // A complete prefix code: the Kraft sum is exactly 1.
  const kraft = HUFFMAN_CODES.reduce((sum, [, len]) => sum + 2 ** (30 - len), 0);
  assert.equal(kraft, 2 ** 30);
});

Deno.test("HPACK Huffman encoding reproduces the RFC's coded strings and round-trips all bytes", () => {
  const enc = new TextEncoder();
  for (
    const [text, coded] of [
      ["www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"],
      ["no-cache", "a8eb 1064 9cbf"],
      ["custom-key", "25a8 49e9 5ba9 7d7f"],
      ["custom-value", "25a8 49e9 5bb8 e8b4 bf"],
      ["302", "6402"],
      ["private", "aec3 771a 4b"],
      [DATE1, "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff"],
      [LOCATION, "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3"],
      ["gzip", "9bd9 ab"],
    ] as const
  ) {
    assert.deepEqual(huffmanEncode(enc.encode(text)), hex(coded), text);
    assert.equal(new TextDecoder().decode(huffmanDecode(hex(coded))), text);
  }
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.deepEqual(huffmanDecode(huffmanEncode(all)), all);
});

Deno.test("HPACK rejects malformed blocks", () => {
  const cases: [string, string, number?][] = [
    ["index 0", "80"],
    ["index beyond the tables", "be"],
    ["truncated integer", "ff"],
    ["integer too large", "ff ff ff ff ff 0f"],
    ["string longer than the block", "400a 6375 7374"],
    ["table size update above the limit", "3fe2 1f"], // 4097
    ["table size update after a field", "82 20"],
    ["Huffman EOS in the string", "0085 ffff fffc ff 00", 4096],
    ["Huffman padding of 8 bits", "0082 f1ff 00"],
    ["Huffman padding not all ones", "0081 00 00"],
  ];
  for (const [name, block] of cases) {
    assert.throws(() => new HpackDecoder().decode(hex(block)), HpackError, name);
  }
});

Deno.test("HPACK table size updates shrink and evict; an oversized entry empties the table", () => {
  const d = new HpackDecoder();
  d.decode(hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"));
  assert.equal(d.tableSize, 55);
  d.decode(hex("3f11 82")); // update to 48, then :method GET
  assert.deepEqual([d.maxTableSize, d.tableSize, d.entries.length], [48, 0, 0]);
  d.decode(hex("20 3f11")); // two updates at the start: 0, then 48
  assert.equal(d.maxTableSize, 48);
  d.decode(hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")); // 55 > 48
  assert.deepEqual([d.tableSize, d.entries.length], [0, 0]);
});

Deno.test("HPACK header list size limit: fields beyond it are dropped, the table kept in step", () => {
  const d = new HpackDecoder();
  const block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572 be be");
  const { headers, size, tooLarge } = d.decode(block, 100);
  assert.equal(tooLarge, true);
  assert.equal(size, 3 * 55);
  assert.equal(headers.length, 1);
  assert.equal(d.tableSize, 55);
});

Deno.test("HpackEncoder: static matches indexed, literals without indexing, round trip", () => {
  const e = new HpackEncoder();
  const fields: HeaderField[] = [
    [":status", "200"],
    ["content-type", "application/grpc"],
    ["grpc-status", "0"],
    ["grpc-message", "x".repeat(200)],
    ["authorization", "Bearer abc.123"],
  ];
  const block = e.encode(fields);
  assert.equal(block[0], 0x20, "the first block starts with a table size update to 0");
  assert.equal(block[1], 0x88, ":status 200 is static index 8");
  const d = new HpackDecoder();
  assert.deepEqual(d.decode(block).headers, fields);
  assert.equal(d.tableSize, 0, "nothing indexed");
  const again = e.encode([[":status", "200"]]);
  assert.deepEqual(again, new Uint8Array([0x88]), "no size update after the first block");
  e.peerTableSizeChanged();
  assert.deepEqual(e.encode([[":status", "200"]]), new Uint8Array([0x20, 0x88]));
});
