import assert from "node:assert/strict";
import {
  AF,
  ATTR,
  CONNTRACK,
  ERRNO,
  NF_NETLINK_CONNTRACK,
  NFCT_CB,
  NFCT_T,
} from "../../ffi/constants.ts";
import { NFCT_CALLBACK, NFCT_SYMBOLS, type NfctSymbols } from "../../ffi/symbols.ts";

// Values from libnetfilter_conntrack.h (enum nf_conntrack_attr numbers most members implicitly).
Deno.test("ATTR pins a sample of enum nf_conntrack_attr", async (t) => {
  const cases: [name: keyof typeof ATTR, value: number][] = [
    ["ORIG_IPV4_SRC", 0],
    ["REPL_IPV4_DST", 3],
    ["ORIG_IPV6_SRC", 4],
    ["REPL_IPV6_DST", 7],
    ["ORIG_PORT_SRC", 8],
    ["REPL_PORT_DST", 11],
    ["ICMP_TYPE", 12],
    ["ICMP_CODE", 13],
    ["ICMP_ID", 14],
    ["ORIG_L3PROTO", 15],
    ["ORIG_L4PROTO", 17],
    ["MARK", 25],
    ["ORIG_COUNTER_PACKETS", 26],
    ["REPL_COUNTER_PACKETS", 27],
    ["ORIG_COUNTER_BYTES", 28],
    ["REPL_COUNTER_BYTES", 29],
    ["ID", 31],
    ["STATUS", 32],
    ["ZONE", 61],
    ["TIMESTAMP_START", 63],
    ["TIMESTAMP_STOP", 64],
    ["MAX", 75],
  ];
  for (const [name, value] of cases) {
    await t.step(`ATTR_${name} = ${value}`, () => {
      assert.equal(ATTR[name], value);
    });
  }
});

Deno.test("NFCT_T pins enum nf_conntrack_msg_type", () => {
  assert.deepEqual({ ...NFCT_T }, {
    UNKNOWN: 0,
    NEW: 1,
    UPDATE: 2,
    DESTROY: 4,
    ALL: 7,
    ERROR: 0x80000000,
  });
});

Deno.test("NFCT_CB pins the callback verdicts", () => {
  assert.deepEqual({ ...NFCT_CB }, { FAILURE: -1, STOP: 0, CONTINUE: 1, STOLEN: 2 });
});

Deno.test("NF_NETLINK_CONNTRACK pins the ctnetlink multicast group masks", () => {
  assert.deepEqual({ ...NF_NETLINK_CONNTRACK }, { NEW: 1, UPDATE: 2, DESTROY: 4 });
});

Deno.test("CONNTRACK is the ctnetlink subsystem id", () => {
  assert.equal(CONNTRACK, 1);
});

Deno.test("AF pins AF_INET and AF_INET6", () => {
  assert.deepEqual({ ...AF }, { INET: 2, INET6: 10 });
});

Deno.test("ERRNO pins ENOBUFS and EAGAIN", () => {
  assert.equal(ERRNO.ENOBUFS, 105);
  assert.equal(ERRNO.EAGAIN, 11);
});

Deno.test("NFCT_SYMBOLS declares the attribute getters with their C result types", () => {
  assert.deepEqual(
    [
      NFCT_SYMBOLS.nfct_get_attr_u8,
      NFCT_SYMBOLS.nfct_get_attr_u16,
      NFCT_SYMBOLS.nfct_get_attr_u32,
      NFCT_SYMBOLS.nfct_get_attr_u64,
      NFCT_SYMBOLS.nfct_attr_is_set,
    ],
    [
      { parameters: ["pointer", "u32"], result: "u8" },
      { parameters: ["pointer", "u32"], result: "u16" },
      { parameters: ["pointer", "u32"], result: "u32" },
      { parameters: ["pointer", "u32"], result: "u64" },
      { parameters: ["pointer", "u32"], result: "i32" },
    ],
  );
});

Deno.test("NFCT_CALLBACK matches int (*)(enum nf_conntrack_msg_type, struct nf_conntrack *, void *)", () => {
  assert.deepEqual(NFCT_CALLBACK, { parameters: ["u32", "pointer", "pointer"], result: "i32" });
});

// Type-level test: `deno check` (and `deno test`, which type-checks) fails if the bound symbol
// types stop rejecting these calls. The function is never called, so nothing is dlopened.
// deno-lint-ignore no-unused-vars
function nfctSymbolTypes(): void {
  const s = null as unknown as NfctSymbols;
  const ct: Deno.PointerValue = null;

  const u8: number = s.nfct_get_attr_u8(ct, ATTR.ORIG_L4PROTO);
  const u16: number = s.nfct_get_attr_u16(ct, ATTR.ORIG_PORT_SRC);
  const u32: number = s.nfct_get_attr_u32(ct, ATTR.ID);
  const u64: bigint = s.nfct_get_attr_u64(ct, ATTR.ORIG_COUNTER_BYTES);
  const isSet: number = s.nfct_attr_is_set(ct, ATTR.MARK);
  const handle: Deno.PointerValue = s.nfct_open(CONNTRACK, NF_NETLINK_CONNTRACK.NEW);
  void [u8, u16, u32, u64, isSet, handle];

  // @ts-expect-error the attribute number is a u32, not a string
  s.nfct_get_attr_u32(ct, "31");
  // @ts-expect-error the attribute number is a u32, not a bigint
  s.nfct_get_attr_u32(ct, 31n);
  // @ts-expect-error the conntrack object is a pointer, not a number
  s.nfct_get_attr_u16(0, ATTR.ORIG_PORT_SRC);
  // @ts-expect-error the conntrack object is a pointer, not a buffer
  s.nfct_attr_is_set(new Uint8Array(8), ATTR.MARK);
  // @ts-expect-error the attribute argument is required
  s.nfct_get_attr_u8(ct);
  // @ts-expect-error there is no third argument
  s.nfct_get_attr_u8(ct, ATTR.ICMP_TYPE, 0);
  // @ts-expect-error u64 results are bigints, not numbers
  const wrongU64: number = s.nfct_get_attr_u64(ct, ATTR.ORIG_COUNTER_PACKETS);
  // @ts-expect-error u32 results are numbers, not bigints
  const wrongU32: bigint = s.nfct_get_attr_u32(ct, ATTR.MARK);
  // @ts-expect-error nfct_open takes a u8 subsystem id, not a string
  s.nfct_open("conntrack", NF_NETLINK_CONNTRACK.NEW);
  // @ts-expect-error nfct_open returns a pointer, not a number
  const wrongHandle: number = s.nfct_open(CONNTRACK, NF_NETLINK_CONNTRACK.NEW);
  // @ts-expect-error nfct_query takes a buffer for its data, not a string
  s.nfct_query(ct, 5, "ipv4");
  // @ts-expect-error the callback is a pointer, not a JavaScript function
  s.nfct_callback_register(ct, NFCT_T.ALL, () => 1, null);
  // @ts-expect-error there is no such symbol
  s.nfct_get_attr_u128(ct, ATTR.ORIG_IPV6_SRC);
  void [wrongU64, wrongU32, wrongHandle];
}
