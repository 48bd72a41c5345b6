import assert from "node:assert/strict";
import { AddressError, Prefix } from "../../lib/net.ts";
import {
  DATA_PLANE_MARK_IN,
  DATA_PLANE_MARK_MAX,
  DATA_PLANE_MARK_MIN,
  DATA_PLANE_MARK_OUT,
  type Direction,
  mapCounters,
  Overlay,
} from "../../lib/overlay.ts";
import { flow, type FlowSpec } from "../_fakes/flows.ts";

/** Overlay 100.64.0.0/16 + fd00:4e42::/64, own addresses 100.64.0.5 and fd00:4e42::5. */
function dualStack(): Overlay {
  return new Overlay({
    networks: ["100.64.0.0/16", "fd00:4e42::/64"],
    addresses: ["100.64.0.5", "fd00:4e42::5"],
  });
}

Deno.test("data-plane mark constants are NetBird's values", () => {
  assert.equal(DATA_PLANE_MARK_IN, 0x1bd10);
  assert.equal(DATA_PLANE_MARK_OUT, 0x1bd11);
  assert.equal(DATA_PLANE_MARK_MIN, 0x1bd10);
  assert.equal(DATA_PLANE_MARK_MAX, 0x1bdff);
});

Deno.test("Overlay.isRelevant() accepts every mark of the data-plane range, inclusive", async (t) => {
  const overlay = dualStack();
  for (const mark of [0x1bd10, 0x1bd11, 0x1bd20, 0x1bd21, 0x1bd22, 0x1bd80, 0x1bdfe, 0x1bdff]) {
    await t.step(`0x${mark.toString(16)}`, () => {
      assert.equal(overlay.isRelevant("8.8.8.8", "1.1.1.1", mark), true);
    });
  }
});

Deno.test("Overlay.isRelevant() ignores marks just outside the data-plane range", async (t) => {
  const overlay = dualStack();
  for (const mark of [0, 0x1bd00, 0x1bd0f, 0x1be00, 0xffffffff]) {
    await t.step(`0x${mark.toString(16)}`, () => {
      assert.equal(overlay.isRelevant("8.8.8.8", "1.1.1.1", mark), false);
    });
  }
});

Deno.test("Overlay.isRelevant() accepts a source or destination in an overlay prefix", async (t) => {
  const overlay = dualStack();
  const cases: [source: string, destination: string, expected: boolean][] = [
    ["100.64.9.9", "8.8.8.8", true],
    ["8.8.8.8", "100.64.9.9", true],
    ["100.64.0.5", "100.64.0.9", true],
    ["100.65.0.1", "8.8.8.8", false],
    ["8.8.8.8", "1.1.1.1", false],
    ["fd00:4e42::9", "2001:db8::1", true],
    ["2001:db8::1", "fd00:4e42::9", true],
    ["fd00:4e43::9", "2001:db8::1", false],
    ["2001:db8::1", "2001:db8::2", false],
  ];
  for (const [source, destination, expected] of cases) {
    await t.step(`${source} -> ${destination}: ${expected}`, () => {
      assert.equal(overlay.isRelevant(source, destination, 0), expected);
    });
  }
});

Deno.test("Overlay.inOverlay() matches IPv4 prefixes above 128.0.0.0, /0 and /32", async (t) => {
  const overlay = new Overlay({
    networks: ["192.168.0.0/16", "224.0.0.0/4", "203.0.113.77/32"],
  });
  const cases: [address: string, expected: boolean][] = [
    ["192.168.0.1", true],
    ["192.169.0.1", false],
    ["239.255.255.255", true],
    ["240.0.0.0", false],
    ["203.0.113.77", true],
    ["203.0.113.78", false],
    ["100.64.0.1", false],
  ];
  for (const [address, expected] of cases) {
    await t.step(`${address}: ${expected}`, () => {
      assert.equal(overlay.inOverlay(address), expected);
    });
  }
  await t.step("0.0.0.0/0 contains 255.255.255.255", () => {
    assert.equal(new Overlay({ networks: ["0.0.0.0/0"] }).inOverlay("255.255.255.255"), true);
  });
});

Deno.test("Overlay.inOverlay() rejects text that is not a canonical address", async (t) => {
  const overlay = new Overlay({ networks: ["0.0.0.0/0", "::/0"] });
  for (const address of ["100.064.0.1", "100.64.0", "", "not-an-address", "fe80::1%eth0"]) {
    await t.step(JSON.stringify(address), () => {
      assert.equal(overlay.inOverlay(address), false);
    });
  }
});

Deno.test("Overlay.inOverlay() does not match IPv4-mapped IPv6 text against IPv4 prefixes", () => {
  const overlay = new Overlay({ networks: ["100.64.0.0/10"] });
  assert.equal(overlay.inOverlay("::ffff:100.64.0.1"), false);
});

Deno.test("Overlay.isRelevant() matches an IPv6-only overlay", () => {
  const overlay = new Overlay({ networks: ["fd00::/8"] });
  assert.equal(overlay.isRelevant("2001:db8::1", "fd12::1", 0), true);
  assert.equal(overlay.isRelevant("100.64.0.1", "100.64.0.2", 0), false);
});

Deno.test("Overlay.isRelevant() accepts nothing but marks when there are no prefixes", () => {
  const overlay = new Overlay({ networks: [] });
  assert.equal(overlay.isRelevant("100.64.0.1", "100.64.0.2", 0), false);
  assert.equal(overlay.isRelevant("100.64.0.1", "100.64.0.2", 0x1bd10), true);
});

Deno.test("Overlay.direction() applies NetBird's rules in order", async (t) => {
  const overlay = dualStack();
  const cases: [rule: string, source: string, destination: string, mark: number, Direction][] = [
    ["mark 0x1BD10 is ingress", "8.8.8.8", "1.1.1.1", 0x1bd10, "ingress"],
    ["mark 0x1BD10 beats own source", "100.64.0.5", "100.64.0.9", 0x1bd10, "ingress"],
    ["mark 0x1BD11 is egress", "8.8.8.8", "1.1.1.1", 0x1bd11, "egress"],
    ["mark 0x1BD11 beats own destination", "100.64.0.9", "100.64.0.5", 0x1bd11, "egress"],
    ["mark 0x1BD20 falls through to own source", "100.64.0.5", "8.8.8.8", 0x1bd20, "egress"],
    ["mark 0x1BD21 falls through to own destination", "8.8.8.8", "100.64.0.5", 0x1bd21, "ingress"],
    ["mark 0x1BDFF falls through to unknown", "8.8.8.8", "1.1.1.1", 0x1bdff, "unknown"],
    ["own IPv4 source is egress", "100.64.0.5", "8.8.8.8", 0, "egress"],
    ["own IPv6 source is egress", "fd00:4e42::5", "2001:db8::1", 0, "egress"],
    ["own source beats own destination", "100.64.0.5", "100.64.0.5", 0, "egress"],
    ["own source beats overlay destination", "100.64.0.5", "100.64.0.9", 0, "egress"],
    ["own IPv4 destination is ingress", "8.8.8.8", "100.64.0.5", 0, "ingress"],
    ["own IPv6 destination is ingress", "2001:db8::1", "fd00:4e42::5", 0, "ingress"],
    ["own destination beats overlay destination", "10.0.0.3", "100.64.0.5", 0, "ingress"],
    ["overlay IPv4 source is ingress", "100.64.0.9", "10.0.0.3", 0, "ingress"],
    ["overlay IPv6 source is ingress", "fd00:4e42::9", "2001:db8::1", 0, "ingress"],
    ["overlay source beats overlay destination", "100.64.0.9", "100.64.0.10", 0, "ingress"],
    ["overlay IPv4 destination is egress", "10.0.0.3", "100.64.0.9", 0, "egress"],
    ["overlay IPv6 destination is egress", "2001:db8::1", "fd00:4e42::9", 0, "egress"],
    ["anything else is unknown", "10.0.0.3", "8.8.8.8", 0, "unknown"],
    ["anything else is unknown (IPv6)", "2001:db8::1", "2001:db8::2", 0, "unknown"],
  ];
  for (const [rule, source, destination, mark, expected] of cases) {
    await t.step(rule, () => {
      assert.equal(overlay.direction(source, destination, mark), expected);
    });
  }
});

Deno.test("Overlay keeps its own addresses in canonical form", () => {
  const overlay = new Overlay({ networks: ["fd00::/8"], addresses: ["FD00:0:0::0005"] });
  assert.deepEqual(overlay.addresses, ["fd00::5"]);
  assert.equal(overlay.direction("fd00::5", "2001:db8::1", 0), "egress");
});

Deno.test("Overlay accepts Prefix objects and prefix text alike", () => {
  const overlay = new Overlay({ networks: ["100.64.7.7/10", Prefix.parse("fd00::/8")] });
  assert.deepEqual(overlay.networks.map(String), ["100.64.0.0/10", "fd00::/8"]);
});

Deno.test("new Overlay() rejects an own address that does not parse", () => {
  assert.throws(
    () => new Overlay({ networks: ["100.64.0.0/10"], addresses: ["100.64.0.256"] }),
    AddressError,
  );
});

Deno.test("new Overlay() rejects a prefix that does not parse", () => {
  assert.throws(() => new Overlay({ networks: ["100.64.0.0/33"] }), AddressError);
});

Deno.test("Overlay.classify() returns undefined for flows that are not relevant", () => {
  const overlay = dualStack();
  assert.equal(overlay.classify(flow({ src: "8.8.8.8", dst: "1.1.1.1" })), undefined);
});

Deno.test("Overlay.classify() returns the direction of relevant flows", () => {
  const overlay = dualStack();
  assert.equal(overlay.classify(flow({ src: "100.64.0.5", dst: "100.64.0.9" })), "egress");
});

const ORIGINAL = { packets: 3n, bytes: 180n };
const REPLY = { packets: 2n, bytes: 120n };

Deno.test("mapCounters() maps ingress original to rx and reply to tx", () => {
  assert.deepEqual(mapCounters("ingress", ORIGINAL, REPLY), {
    rxPackets: 3n,
    txPackets: 2n,
    rxBytes: 180n,
    txBytes: 120n,
  });
});

Deno.test("mapCounters() maps egress reply to rx and original to tx", () => {
  assert.deepEqual(mapCounters("egress", ORIGINAL, REPLY), {
    rxPackets: 2n,
    txPackets: 3n,
    rxBytes: 120n,
    txBytes: 180n,
  });
});

Deno.test("mapCounters() maps unknown like egress", () => {
  assert.deepEqual(mapCounters("unknown", ORIGINAL, REPLY), {
    rxPackets: 2n,
    txPackets: 3n,
    rxBytes: 120n,
    txBytes: 180n,
  });
});

Deno.test("mapCounters() keeps counters above 2^53 exact", () => {
  const big = { packets: 2n ** 60n + 1n, bytes: 2n ** 64n - 1n };
  assert.deepEqual(mapCounters("ingress", big, REPLY), {
    rxPackets: 2n ** 60n + 1n,
    txPackets: 2n,
    rxBytes: 2n ** 64n - 1n,
    txBytes: 120n,
  });
});

interface DerivedCase {
  name: string;
  spec: FlowSpec;
  /** `undefined`: the flow is dropped. */
  direction: Direction | undefined;
  rxTx?: { rxPackets: bigint; txPackets: bigint; rxBytes: bigint; txBytes: bigint };
}

// Spec §7.11: kernel handleEvent with overlay 100.64.0.5/16 (network 100.64.0.0/16, own address
// 100.64.0.5), no marks unless stated. NOT cases of NetBird's own suite: they follow from its code.
const DERIVED: DerivedCase[] = [
  {
    name: "NEW TCP 100.64.0.5:40000 -> 100.64.0.9:22 is egress with tx = original counters",
    spec: {
      src: "100.64.0.5",
      dst: "100.64.0.9",
      proto: 6,
      sport: 40000,
      dport: 22,
      orig: [1n, 60n],
      reply: [0n, 0n],
    },
    direction: "egress",
    rxTx: { rxPackets: 0n, txPackets: 1n, rxBytes: 0n, txBytes: 60n },
  },
  {
    name: "NEW UDP 100.64.0.9 -> 10.0.0.3 with mark 0x1BD10 is ingress",
    spec: { src: "100.64.0.9", dst: "10.0.0.3", proto: 17, mark: 0x1bd10 },
    direction: "ingress",
  },
  {
    name: "mark 0 with 8.8.8.8 -> 1.1.1.1 is dropped",
    spec: { src: "8.8.8.8", dst: "1.1.1.1", proto: 6, mark: 0 },
    direction: undefined,
  },
  {
    name: "ingress DESTROY orig {3 pkts, 180 B} reply {2, 120} gives rx 3/180, tx 2/120",
    spec: {
      src: "100.64.0.9",
      dst: "100.64.0.5",
      proto: 6,
      sport: 50000,
      dport: 22,
      orig: [3n, 180n],
      reply: [2n, 120n],
    },
    direction: "ingress",
    rxTx: { rxPackets: 3n, txPackets: 2n, rxBytes: 180n, txBytes: 120n },
  },
];

Deno.test("§7.11 derived: kernel classification and counter cases", async (t) => {
  const overlay = new Overlay({ networks: ["100.64.0.0/16"], addresses: ["100.64.0.5"] });
  for (const c of DERIVED) {
    await t.step(`§7.11 derived: ${c.name}`, () => {
      const f = flow(c.spec);
      const direction = overlay.classify(f);
      assert.equal(direction, c.direction);
      if (c.rxTx !== undefined) {
        assert.ok(direction !== undefined);
        assert.deepEqual(mapCounters(direction, f.countersOriginal, f.countersReply), c.rxTx);
      }
    });
  }
});

Deno.test("Overlay.classify() equals isRelevant() then direction() for every combination", () => {
  const overlay = new Overlay({
    networks: ["100.64.0.0/16", "fd00:64::/64"],
    addresses: ["100.64.0.1", "fd00:64::1"],
  });
  const addrs = ["100.64.0.1", "100.64.0.9", "10.0.0.1", "fd00:64::1", "fd00:64::9", "2001:db8::1"];
  const marks = [0, 0x1bd10, 0x1bd11, 0x1bd20, 0x1bdff, 0x1be00, 0x1bd0f];
  let checked = 0;
  for (const src of addrs) {
    for (const dst of addrs) {
      for (const mark of marks) {
        const f = flow({ src, dst, mark });
        const expected = overlay.isRelevant(src, dst, mark)
          ? overlay.direction(src, dst, mark)
          : undefined;
        assert.equal(overlay.classify(f), expected, `${src} → ${dst} mark ${mark.toString(16)}`);
        checked++;
      }
    }
  }
  assert.equal(checked, 252);
});

Deno.test("Overlay answers IPv6 membership right for more addresses than it remembers", () => {
  const overlay = new Overlay({ networks: ["fd00:64::/64"], addresses: [] });
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 5000; i++) {
      const hex = i.toString(16);
      assert.equal(overlay.inOverlay(`fd00:64::${hex}`), true, `fd00:64::${hex}`);
      assert.equal(overlay.inOverlay(`fd00:65::${hex}`), false, `fd00:65::${hex}`);
    }
  }
  assert.equal(overlay.inOverlay("not-an-address:"), false);
});
