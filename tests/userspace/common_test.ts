import assert from "node:assert/strict";
import { connKeyString } from "../../lib/userspace/common.ts";
import { conntrackOptionsFromEnv, parseGoDuration, parseGoInt } from "../../lib/userspace/env.ts";
import { createPacket } from "../../lib/userspace/packet.ts";

Deno.test("connKeyString() formats keys as NetBird's ConnKey.String()", async (t) => {
  const cases = [
    {
      name: "IPv4",
      key: {
        source: "192.168.1.1",
        destination: "10.0.0.1",
        sourcePort: 12345,
        destinationPort: 80,
      },
      expected: "192.168.1.1:12345 → 10.0.0.1:80",
    },
    {
      name: "IPv6 in brackets",
      key: {
        source: "2001:db8::1",
        destination: "2001:db8::2",
        sourcePort: 54321,
        destinationPort: 443,
      },
      expected: "[2001:db8::1]:54321 → [2001:db8::2]:443",
    },
    {
      name: "IPv4-mapped IPv6 unmapped",
      key: {
        source: "::ffff:10.0.0.1",
        destination: "::ffff:10.0.0.2",
        sourcePort: 1000,
        destinationPort: 2000,
      },
      expected: "10.0.0.1:1000 → 10.0.0.2:2000",
    },
  ];
  for (const c of cases) await t.step(c.name, () => assert.equal(connKeyString(c.key), c.expected));
});

Deno.test("parseGoDuration() accepts what Go's time.ParseDuration accepts, in ms", async (t) => {
  const cases: [string, number | undefined][] = [
    ["50ms", 50],
    ["2m", 120_000],
    ["1h30m", 5_400_000],
    ["1.5s", 1_500],
    [".5s", 500],
    ["1.s", 1_000],
    ["100us", 0.1],
    ["100µs", 0.1],
    ["250ns", 0.00025],
    ["0", 0],
    ["-0", 0],
    ["-2s", -2_000],
    ["+3s", 3_000],
    ["30", undefined],
    ["", undefined],
    ["-", undefined],
    [".s", undefined],
    ["1d", undefined],
    ["1h 30m", undefined],
    ["3000000h", undefined], // beyond int64 nanoseconds
  ];
  for (const [text, expected] of cases) {
    await t.step(JSON.stringify(text), () => assert.equal(parseGoDuration(text), expected));
  }
});

Deno.test("parseGoInt() accepts what Go's strconv.Atoi accepts", async (t) => {
  const cases: [string, number | undefined][] = [
    ["4", 4],
    ["+4", 4],
    ["-4", -4],
    ["0", 0],
    ["007", 7],
    ["4k", undefined],
    [" 4", undefined],
    ["1e3", undefined],
    ["", undefined],
  ];
  for (const [text, expected] of cases) {
    await t.step(JSON.stringify(text), () => assert.equal(parseGoInt(text), expected));
  }
});

Deno.test("conntrackOptionsFromEnv() keeps defaults for empty, invalid and non-positive values", async (t) => {
  const cases = [
    {
      name: "all set",
      env: {
        NB_CONNTRACK_TCP_FIN_WAIT_TIMEOUT: "50ms",
        NB_CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT: "80ms",
        NB_CONNTRACK_TCP_LAST_ACK_TIMEOUT: "30ms",
        NB_CONNTRACK_TCP_MAX: "4",
        NB_CONNTRACK_UDP_MAX: "5",
        NB_CONNTRACK_ICMP_MAX: "3",
      },
      expected: {
        tcp: { finWaitTimeoutMs: 50, closeWaitTimeoutMs: 80, lastAckTimeoutMs: 30, maxEntries: 4 },
        udp: { maxEntries: 5 },
        icmp: { maxEntries: 3 },
        warnings: [],
      },
    },
    {
      name: "nothing set",
      env: {},
      expected: { tcp: {}, udp: {}, icmp: {}, warnings: [] },
    },
    {
      name: "empty, invalid and non-positive",
      env: {
        NB_CONNTRACK_TCP_FIN_WAIT_TIMEOUT: "",
        NB_CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT: "60",
        NB_CONNTRACK_TCP_LAST_ACK_TIMEOUT: "-1s",
        NB_CONNTRACK_TCP_MAX: "0",
        NB_CONNTRACK_UDP_MAX: "many",
      },
      expected: {
        tcp: {},
        udp: {},
        icmp: {},
        warnings: [
          'Invalid NB_CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT="60", using the default',
          'Invalid NB_CONNTRACK_TCP_LAST_ACK_TIMEOUT="-1s": must be positive, using the default',
          'Invalid NB_CONNTRACK_TCP_MAX="0": must be positive, using the default',
          'Invalid NB_CONNTRACK_UDP_MAX="many", using the default',
        ],
      },
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const env: Record<string, string> = c.env;
      assert.deepEqual(conntrackOptionsFromEnv((name) => env[name]), c.expected);
    });
  }
});

Deno.test("createPacket() infers the family and zero-fills the rest", () => {
  assert.deepEqual(
    createPacket({ source: "fd00::1", destination: "fd00::2", protocol: 58, icmpType: 128 }),
    {
      family: 6,
      source: "fd00::1",
      destination: "fd00::2",
      protocol: 58,
      sourcePort: 0,
      destinationPort: 0,
      tcpFlags: 0,
      icmpType: 128,
      icmpCode: 0,
      icmpId: 0,
      ipLength: 0,
    },
  );
  assert.equal(
    createPacket({ source: "10.0.0.1", destination: "10.0.0.2", protocol: 6 }).family,
    4,
  );
});
