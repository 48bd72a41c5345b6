import assert from "node:assert/strict";
import { AddressError, formatIp, ipv4ToNumber, parseIp, Prefix } from "../../lib/net.ts";

/** Parses then formats, failing when the text does not parse. */
function canonical(text: string): string {
  const bytes = parseIp(text);
  assert.ok(bytes !== undefined, `expected "${text}" to parse`);
  return formatIp(bytes);
}

Deno.test("parseIp() returns the four bytes of an IPv4 address", () => {
  assert.deepEqual(parseIp("100.64.0.1"), new Uint8Array([100, 64, 0, 1]));
});

Deno.test("parseIp() returns the sixteen bytes of an IPv6 address in network order", () => {
  assert.deepEqual(
    parseIp("2001:db8::ff00:42"),
    new Uint8Array([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0x00, 0x00, 0x42]),
  );
});

Deno.test("parseIp() places the bytes of an embedded IPv4 address in the last two groups", () => {
  assert.deepEqual(
    parseIp("::ffff:192.0.2.1"),
    new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]),
  );
});

Deno.test("parseIp() and formatIp() give the canonical form of valid addresses", async (t) => {
  const cases: [input: string, expected: string][] = [
    ["0.0.0.0", "0.0.0.0"],
    ["255.255.255.255", "255.255.255.255"],
    ["100.64.0.1", "100.64.0.1"],
    ["::", "::"],
    ["::1", "::1"],
    ["1::", "1::"],
    ["FD00:0:0:0::01", "fd00::1"],
    ["2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // tie: the first run is compressed
    ["1:0:0:2:0:0:0:3", "1:0:0:2::3"], // the longest run wins over an earlier shorter one
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // a single zero group stays
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"], // "::" for one group is expanded again
    ["::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"],
    ["0:0:0:0:0:0:0:0", "::"],
    ["::ffff:100.64.0.1", "::ffff:100.64.0.1"],
    ["::FFFF:6440:0001", "::ffff:100.64.0.1"], // IPv4-mapped is written as a dotted quad
    ["0:0:0:0:0:ffff:c000:0201", "::ffff:192.0.2.1"],
    ["1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"],
    ["::1.2.3.4", "::102:304"], // IPv4-compatible (not mapped) stays hexadecimal
  ];
  for (const [input, expected] of cases) {
    await t.step(`${input} -> ${expected}`, () => {
      assert.equal(canonical(input), expected);
    });
  }
});

Deno.test("parseIp() rejects text that is not an address", async (t) => {
  const cases: [input: string, why: string][] = [
    ["", "empty"],
    ["100.64.0", "three octets"],
    ["100.64.0.1.2", "five octets"],
    ["100.064.0.1", "leading zero in an octet"],
    ["01.2.3.4", "leading zero in the first octet"],
    ["100.64.0.256", "octet 256"],
    ["256.0.0.0", "octet 256 first"],
    ["100.64.0.-1", "negative octet"],
    ["100.64..1", "empty octet"],
    [" 100.64.0.1", "leading space"],
    ["100.64.0.1 ", "trailing space"],
    ["0x64.0.0.1", "hex octet"],
    ["fe80::1%eth0", "zone"],
    ["fe80::1%1", "numeric zone"],
    ["1:2:3:4:5:6:7:8:9", "nine groups"],
    ["1:2:3:4:5:6:7", "seven groups without ::"],
    ["1::2:3:4:5:6:7:8", ":: standing for no group"],
    ["::1:2:3:4:5:6:7:8", ":: in front of eight groups"],
    ["1::2::3", "two ::"],
    ["::1::", "two :: at the ends"],
    [":::", "three colons"],
    [":1:2:3:4:5:6:7", "single leading colon"],
    ["1:2:3:4:5:6:7:", "single trailing colon"],
    ["12345::", "group of five digits"],
    ["g::1", "non-hex digit"],
    ["::ffff:1.2.3.256", "bad embedded IPv4"],
    ["::1.2.3.4:5", "embedded IPv4 not at the end"],
    ["1.2.3.4::", "embedded IPv4 before ::"],
    ["1.2.3.4::5", "embedded IPv4 in the head"],
    ["1:2:3:4:5:6:7:1.2.3.4", "embedded IPv4 making nine groups"],
    ["100.64.0.0/10", "prefix"],
  ];
  for (const [input, why] of cases) {
    await t.step(`${JSON.stringify(input)} (${why})`, () => {
      assert.equal(parseIp(input), undefined);
    });
  }
});

Deno.test("ipv4ToNumber() returns the unsigned 32-bit value of an IPv4 address", async (t) => {
  const cases: [input: string, expected: number][] = [
    ["0.0.0.0", 0],
    ["0.0.0.1", 1],
    ["100.64.0.1", 0x64400001],
    ["10.0.128.0", 0x0a008000],
    ["128.0.0.0", 0x80000000],
    ["192.168.1.100", 0xc0a80164],
    ["255.255.255.255", 0xffffffff],
  ];
  for (const [input, expected] of cases) {
    await t.step(input, () => {
      assert.equal(ipv4ToNumber(input), expected);
    });
  }
});

Deno.test("ipv4ToNumber() returns -1 for everything parseIp() rejects as IPv4", async (t) => {
  const cases = [
    "",
    "1.2.3",
    "1.2.3.4.5",
    "1.2.3.4.",
    ".1.2.3",
    "1..2.3",
    "01.2.3.4",
    "100.064.0.1",
    "1.2.3.00",
    "256.0.0.0",
    "1.2.3.256",
    "1.2.3.1000",
    " 1.2.3.4",
    "1.2.3.4 ",
    "1.2.3.-4",
    "1.2.3.4/32",
    "0x1.2.3.4",
    "::1",
    "::ffff:1.2.3.4",
  ];
  for (const input of cases) {
    await t.step(JSON.stringify(input), () => {
      assert.equal(parseIp(input)?.length === 4, false);
      assert.equal(ipv4ToNumber(input), -1);
    });
  }
});

Deno.test("formatIp() writes IPv4 bytes as a dotted quad", () => {
  assert.equal(formatIp(new Uint8Array([10, 0, 0, 255])), "10.0.0.255");
});

Deno.test("formatIp() rejects byte arrays that are neither 4 nor 16 long", () => {
  assert.throws(() => formatIp(new Uint8Array(5)), AddressError);
});

Deno.test("Prefix.parse() clears the host bits", async (t) => {
  const cases: [input: string, expected: string][] = [
    ["100.64.7.9/10", "100.64.0.0/10"],
    ["100.127.255.255/10", "100.64.0.0/10"],
    ["10.0.200.1/17", "10.0.128.0/17"],
    ["192.168.1.77/24", "192.168.1.0/24"],
    ["fd00:1234:5678::1/8", "fd00::/8"],
    ["FD00:ABCD::1/17", "fd00:8000::/17"],
    ["2001:db8:ffff:ffff::1/33", "2001:db8:8000::/33"],
  ];
  for (const [input, expected] of cases) {
    await t.step(`${input} -> ${expected}`, () => {
      assert.equal(Prefix.parse(input).toString(), expected);
    });
  }
});

Deno.test("Prefix.parse() accepts /0, /32 and /128", async (t) => {
  const cases: [input: string, expected: string, bits: number][] = [
    ["1.2.3.4/0", "0.0.0.0/0", 0],
    ["1.2.3.4/32", "1.2.3.4/32", 32],
    ["fd00::1/0", "::/0", 0],
    ["fd00::1/128", "fd00::1/128", 128],
  ];
  for (const [input, expected, bits] of cases) {
    await t.step(input, () => {
      const prefix = Prefix.parse(input);
      assert.equal(prefix.toString(), expected);
      assert.equal(prefix.bits, bits);
    });
  }
});

Deno.test("Prefix.parse() treats a bare address as a host prefix", () => {
  assert.equal(Prefix.parse("100.64.0.7").toString(), "100.64.0.7/32");
  assert.equal(Prefix.parse("fd00::7").toString(), "fd00::7/128");
});

Deno.test("Prefix.parse() reports the address family", () => {
  assert.equal(Prefix.parse("100.64.0.0/10").family, 4);
  assert.equal(Prefix.parse("fd00::/8").family, 6);
});

Deno.test("Prefix.parse() rejects bad addresses and lengths", async (t) => {
  const cases = [
    "300.1.1.1/33",
    "300.1.1.1/8",
    "1.2.3.4/33",
    "fd00::/129",
    "1.2.3.4/",
    "1.2.3.4/-1",
    "1.2.3.4/1000",
    "1.2.3.4/8/8",
    "1.2.3.4/ 8",
    "1.2.3.4/0x8",
    "fe80::%eth0/64",
    "/8",
    "",
  ];
  for (const input of cases) {
    await t.step(JSON.stringify(input), () => {
      assert.throws(() => Prefix.parse(input), AddressError);
    });
  }
});

Deno.test("new Prefix() rejects lengths outside the family's range", () => {
  assert.throws(() => new Prefix(new Uint8Array(4), 33), AddressError);
  assert.throws(() => new Prefix(new Uint8Array(16), 129), AddressError);
  assert.throws(() => new Prefix(new Uint8Array(4), -1), AddressError);
  assert.throws(() => new Prefix(new Uint8Array(4), 1.5), AddressError);
});

Deno.test("new Prefix() does not modify the bytes it is given", () => {
  const bytes = new Uint8Array([100, 64, 7, 9]);
  new Prefix(bytes, 10);
  assert.deepEqual(bytes, new Uint8Array([100, 64, 7, 9]));
});

Deno.test("Prefix.contains() decides membership at the bit boundary", async (t) => {
  const cases: [prefix: string, address: string, expected: boolean][] = [
    ["100.64.0.0/10", "100.64.0.0", true],
    ["100.64.0.0/10", "100.127.255.255", true],
    ["100.64.0.0/10", "100.63.255.255", false],
    ["100.64.0.0/10", "100.128.0.0", false],
    ["10.0.0.0/17", "10.0.127.255", true],
    ["10.0.0.0/17", "10.0.128.0", false],
    ["10.0.128.0/17", "10.0.128.0", true],
    ["10.0.128.0/17", "10.0.255.255", true],
    ["10.0.128.0/17", "10.0.127.255", false],
    ["10.0.128.0/17", "10.1.128.0", false],
    ["100.64.0.7/32", "100.64.0.7", true],
    ["100.64.0.7/32", "100.64.0.6", false],
    ["0.0.0.0/0", "255.255.255.255", true],
    ["fd00::/8", "fdff:ffff::1", true],
    ["fd00::/8", "fe00::", false],
    ["fd00::/10", "fd3f:ffff::", true],
    ["fd00::/10", "fd40::", false],
    ["fd00:8000::/17", "fd00:ffff:ffff::1", true],
    ["fd00:8000::/17", "fd00:7fff:ffff::1", false],
    ["fd00::1/128", "fd00::1", true],
    ["fd00::1/128", "fd00::2", false],
    ["::/0", "2001:db8::1", true],
  ];
  for (const [prefix, address, expected] of cases) {
    await t.step(`${prefix} ${expected ? "contains" : "does not contain"} ${address}`, () => {
      assert.equal(Prefix.parse(prefix).contains(address), expected);
    });
  }
});

Deno.test("Prefix.contains() rejects addresses of the other family", async (t) => {
  const cases: [prefix: string, address: string][] = [
    ["0.0.0.0/0", "::"],
    ["0.0.0.0/0", "fd00::1"],
    ["100.64.0.0/10", "::ffff:100.64.0.1"],
    ["::/0", "0.0.0.0"],
    ["::/0", "100.64.0.1"],
  ];
  for (const [prefix, address] of cases) {
    await t.step(`${prefix} vs ${address}`, () => {
      assert.equal(Prefix.parse(prefix).contains(address), false);
    });
  }
});

Deno.test("Prefix.containsIpv4() agrees with Prefix.contains() at the bit boundaries", async (t) => {
  const cases: [prefix: string, address: string, expected: boolean][] = [
    ["100.64.0.0/10", "100.64.0.0", true],
    ["100.64.0.0/10", "100.127.255.255", true],
    ["100.64.0.0/10", "100.63.255.255", false],
    ["100.64.0.0/10", "100.128.0.0", false],
    ["10.0.128.0/17", "10.0.128.0", true],
    ["10.0.128.0/17", "10.0.127.255", false],
    ["192.168.0.0/16", "192.168.255.255", true],
    ["192.168.0.0/16", "192.169.0.0", false],
    ["224.0.0.0/4", "239.255.255.255", true],
    ["224.0.0.0/4", "240.0.0.0", false],
    ["128.0.0.0/1", "128.0.0.0", true],
    ["128.0.0.0/1", "127.255.255.255", false],
    ["255.255.255.255/32", "255.255.255.255", true],
    ["255.255.255.255/32", "255.255.255.254", false],
    ["0.0.0.0/0", "0.0.0.0", true],
    ["0.0.0.0/0", "255.255.255.255", true],
  ];
  for (const [prefix, address, expected] of cases) {
    await t.step(`${prefix} ${expected ? "contains" : "does not contain"} ${address}`, () => {
      const p = Prefix.parse(prefix);
      assert.equal(p.containsIpv4(ipv4ToNumber(address)), expected);
      assert.equal(p.contains(address), expected);
    });
  }
});

Deno.test("Prefix.containsIpv4() never matches -1 or an IPv6 prefix", () => {
  assert.equal(Prefix.parse("0.0.0.0/0").containsIpv4(-1), false);
  assert.equal(Prefix.parse("::/0").containsIpv4(ipv4ToNumber("100.64.0.1")), false);
});

Deno.test("Prefix.contains() accepts address bytes as well as text", () => {
  const prefix = Prefix.parse("100.64.0.0/10");
  assert.equal(prefix.contains(new Uint8Array([100, 100, 1, 1])), true);
  assert.equal(prefix.contains(new Uint8Array([100, 128, 1, 1])), false);
});

Deno.test("Prefix.contains() returns false for text that is not an address", () => {
  assert.equal(Prefix.parse("0.0.0.0/0").contains("not-an-address"), false);
});

Deno.test("formatIp() and parseIp() round-trip random IPv6 addresses with zero runs", () => {
  let seed = 7;
  const rand = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  for (let n = 0; n < 5000; n++) {
    const b = new Uint8Array(16);
    for (let g = 0; g < 8; g++) {
      if (rand() < 0.5) continue; // leave zero groups, often in runs
      const v = Math.floor(rand() * 65536);
      b[g * 2] = v >> 8;
      b[g * 2 + 1] = v & 0xff;
    }
    const text = formatIp(b);
    assert.deepEqual(parseIp(text), b, text);
    assert.ok(!/(^|:)0[0-9a-f]/.test(text), `no leading zeros: ${text}`);
    assert.ok((text.match(/::/g) ?? []).length <= 1, `at most one "::": ${text}`);
    assert.ok(!/(^|:)0:0(:|$)/.test(text) || text.includes("::"), `zero runs compressed: ${text}`);
  }
});
