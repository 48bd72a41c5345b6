import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  bytesToUuid,
  FlowIdGenerator,
  flowNamespace,
  NETBIRD_CT_NAMESPACE,
  uuidToBytes,
  uuidV4,
  uuidV5,
} from "../../lib/uuid.ts";

const NAMESPACE_DNS = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
const NAMESPACE_URL = "6ba7b811-9dad-11d1-80b4-00c04fd430c8";
const NAMESPACE_OID = "6ba7b812-9dad-11d1-80b4-00c04fd430c8";
const BOOT_ID = "0b3e5c7a-1f7d-4c1e-9f2a-6d2c1b8e4a11";
const NETNS_INODE = 4026531840;

// Vectors from Python's uuid.uuid5(namespace, name), which agrees with Go's uuid.NewSHA1.
Deno.test("uuidV5() matches Python's uuid.uuid5 on known vectors", async (t) => {
  const cases: [namespace: string, name: string, expected: string][] = [
    [NAMESPACE_DNS, "www.example.com", "2ed6657d-e927-568b-95e1-2665a8aea6a2"],
    [NAMESPACE_DNS, "python.org", "886313e1-3b8a-5372-9b90-0c9aee199e5d"],
    [NAMESPACE_URL, "http://www.example.com/", "fcde3c85-2270-590f-9e7c-ee003d65e0e2"],
    [NAMESPACE_OID, "1.3.6.1", "1447fa61-5277-5fef-a9b3-fbc6e44f4af3"],
    [NAMESPACE_DNS, "", "4ebd0208-8328-5d69-8c44-ec50939c0967"],
    [NAMESPACE_DNS, "héllo", "5ca283f8-ff14-58cb-ba86-bf52120a3414"],
  ];
  for (const [namespace, name, expected] of cases) {
    await t.step(JSON.stringify(name), () => {
      assert.equal(uuidV5(namespace, name), expected);
    });
  }
});

Deno.test("uuidV5() matches Python's uuid.uuid5 around the one-block SHA-1 limit", async (t) => {
  // 16 namespace bytes + name: 55 bytes is the most that fits one SHA-1 block with its padding.
  const cases: [nameLength: number, expected: string][] = [
    [39, "5824f981-4282-59d4-9716-acb6d741350e"],
    [40, "39f39c20-db47-5131-8879-62f8f67f9014"],
    [55, "ab36061e-9983-59b3-a171-f60bda1e5897"],
    [56, "3fa6c3cd-527c-5c97-b3b3-25a1c8b0e0ba"],
  ];
  for (const [nameLength, expected] of cases) {
    await t.step(`${nameLength} x "a"`, () => {
      assert.equal(uuidV5(NAMESPACE_DNS, "a".repeat(nameLength)), expected);
    });
  }
});

Deno.test("uuidV5() agrees with node:crypto SHA-1 for every name length up to 100 bytes", () => {
  const ns = uuidToBytes(NETBIRD_CT_NAMESPACE);
  const mismatches: number[] = [];
  for (let n = 0; n <= 100; n++) {
    const name = Uint8Array.from({ length: n }, (_, i) => (i * 37 + 200) & 0xff);
    const digest = createHash("sha1").update(ns).update(name).digest();
    const expected = new Uint8Array(digest.buffer, digest.byteOffset, 16).slice();
    expected[6] = (expected[6]! & 0x0f) | 0x50;
    expected[8] = (expected[8]! & 0x3f) | 0x80;
    if (uuidV5(ns, name) !== bytesToUuid(expected)) mismatches.push(n);
  }
  assert.deepEqual(mismatches, []);
});

Deno.test('NETBIRD_CT_NAMESPACE is UUIDv5(DNS, "netbird-ct.flow")', () => {
  assert.equal(NETBIRD_CT_NAMESPACE, "1cc4bb85-0ca9-5a5d-a913-81b334076105");
  assert.equal(uuidV5(NAMESPACE_DNS, "netbird-ct.flow"), NETBIRD_CT_NAMESPACE);
});

Deno.test("uuidV5() sets version 5 and the RFC 9562 variant", async (t) => {
  for (const name of ["a", "b", "www.example.com", "\u0000", "x".repeat(1000)]) {
    await t.step(`${name.slice(0, 16)} (${name.length} chars)`, () => {
      const bytes = uuidToBytes(uuidV5(NAMESPACE_DNS, name));
      assert.equal(bytes[6]! >> 4, 5);
      assert.equal(bytes[8]! >> 6, 0b10);
    });
  }
});

Deno.test("uuidV5() hashes string names as their UTF-8 bytes", () => {
  assert.equal(
    uuidV5(NAMESPACE_DNS, new TextEncoder().encode("héllo")),
    uuidV5(NAMESPACE_DNS, "héllo"),
  );
});

Deno.test("uuidV5() accepts the namespace as bytes or text", () => {
  assert.equal(
    uuidV5(uuidToBytes(NAMESPACE_DNS), "www.example.com"),
    "2ed6657d-e927-568b-95e1-2665a8aea6a2",
  );
});

Deno.test("uuidToBytes() and bytesToUuid() round-trip and lower-case the text", () => {
  const bytes = uuidToBytes("6BA7B810-9DAD-11D1-80B4-00C04FD430C8");
  assert.equal(bytes.length, 16);
  assert.equal(
    Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""),
    "6ba7b8109dad11d180b400c04fd430c8",
  );
  assert.equal(bytesToUuid(bytes), NAMESPACE_DNS);
});

Deno.test("uuidToBytes() rejects text that is not a UUID", async (t) => {
  const cases = [
    "",
    "6ba7b8109dad11d180b400c04fd430c8",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8a",
    "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",
    "6ba7b810-9dad-11d1-80b4-00c04fd430cg",
  ];
  for (const text of cases) {
    await t.step(JSON.stringify(text), () => {
      assert.throws(() => uuidToBytes(text), TypeError);
    });
  }
});

// Expected values: sha1(ns.bytes + struct.pack(">I", id)) with the version/variant bits set by
// hand (Python's uuid5 only takes str names), the same as Go's uuid.NewSHA1(ns, buf[:4]).
Deno.test("FlowIdGenerator.flowId() is UUIDv5 of the 4-byte big-endian conntrack id", async (t) => {
  const cases: [namespace: string, id: number, expected: string][] = [
    [NETBIRD_CT_NAMESPACE, 0, "4ac3920b-db54-5d7b-b641-ecbe8e0af6a7"],
    [NETBIRD_CT_NAMESPACE, 1, "3bd1bd56-e54d-5779-95ba-5ded2bfbf188"],
    [NETBIRD_CT_NAMESPACE, 0x12345678, "b2addcfe-de59-5a33-8b75-6fd6c3a21cea"],
    [NETBIRD_CT_NAMESPACE, 0xffffffff, "f62b974c-cbc8-5a37-bc35-be161dd23db7"],
    [NAMESPACE_DNS, 1, "c7fc5697-28bc-5774-9156-a53e2a58bc6b"],
  ];
  for (const [namespace, id, expected] of cases) {
    await t.step(`${namespace} / ${id}`, () => {
      assert.equal(new FlowIdGenerator(namespace).flowId(id), expected);
    });
  }
});

Deno.test("FlowIdGenerator.flowId() equals uuidV5() over the big-endian id bytes", () => {
  const name = new Uint8Array([0x12, 0x34, 0x56, 0x78]);
  assert.equal(
    new FlowIdGenerator(NETBIRD_CT_NAMESPACE).flowId(0x12345678),
    uuidV5(NETBIRD_CT_NAMESPACE, name),
  );
});

Deno.test("FlowIdGenerator.flowId() returns the same id for the same conntrack id", () => {
  const ids = new FlowIdGenerator(NETBIRD_CT_NAMESPACE);
  const first = ids.flowId(4242);
  ids.flowId(4243);
  assert.equal(ids.flowId(4242), first);
  assert.equal(new FlowIdGenerator(NETBIRD_CT_NAMESPACE).flowId(4242), first);
});

Deno.test("FlowIdGenerator.flowId() returns different ids for different conntrack ids", () => {
  const ids = new FlowIdGenerator(NETBIRD_CT_NAMESPACE);
  assert.notEqual(ids.flowId(1), ids.flowId(2));
});

Deno.test("FlowIdGenerator.flowId() returns different ids in different namespaces", () => {
  assert.notEqual(
    new FlowIdGenerator(NETBIRD_CT_NAMESPACE).flowId(1),
    new FlowIdGenerator(NAMESPACE_DNS).flowId(1),
  );
});

Deno.test("§7.11 derived: NEW and DESTROY of the same conntrack id share a flow id", () => {
  const namespace = flowNamespace(BOOT_ID, NETNS_INODE);
  const atNew = new FlowIdGenerator(namespace).flowId(3735928559);
  const atDestroy = new FlowIdGenerator(namespace).flowId(3735928559);
  assert.equal(atDestroy, atNew);
});

Deno.test("FlowIdGenerator keeps its namespace in lower case", () => {
  assert.equal(new FlowIdGenerator(NAMESPACE_DNS.toUpperCase()).namespace, NAMESPACE_DNS);
});

Deno.test("new FlowIdGenerator() rejects a namespace that is not a UUID", () => {
  assert.throws(() => new FlowIdGenerator("not-a-uuid"), TypeError);
});

Deno.test("flowNamespace() is UUIDv5 of the boot id and netns inode", () => {
  // Python: uuid.uuid5(uuid.UUID(NETBIRD_CT_NAMESPACE), "boot:<boot id>/netns:4026531840")
  assert.equal(flowNamespace(BOOT_ID, NETNS_INODE), "5d753403-2ceb-5c20-9125-193707f26d90");
});

Deno.test("flowNamespace() is deterministic", () => {
  assert.equal(flowNamespace(BOOT_ID, NETNS_INODE), flowNamespace(BOOT_ID, NETNS_INODE));
});

Deno.test("flowNamespace() ignores the newline and case of the boot_id file", () => {
  assert.equal(
    flowNamespace(BOOT_ID.toUpperCase() + "\n", NETNS_INODE),
    flowNamespace(BOOT_ID, NETNS_INODE),
  );
});

Deno.test("flowNamespace() accepts the inode as a bigint", () => {
  assert.equal(flowNamespace(BOOT_ID, BigInt(NETNS_INODE)), flowNamespace(BOOT_ID, NETNS_INODE));
});

Deno.test("flowNamespace() differs by boot id", () => {
  assert.notEqual(
    flowNamespace(BOOT_ID, NETNS_INODE),
    flowNamespace("7e0f6a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", NETNS_INODE),
  );
});

Deno.test("flowNamespace() differs by network namespace inode", () => {
  assert.notEqual(flowNamespace(BOOT_ID, NETNS_INODE), flowNamespace(BOOT_ID, NETNS_INODE + 1));
});

Deno.test("uuidV4() returns a random version 4 UUID", () => {
  const re = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  const a = uuidV4();
  const b = uuidV4();
  assert.match(a, re);
  assert.match(b, re);
  assert.notEqual(a, b);
});
