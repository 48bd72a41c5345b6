import assert from "node:assert/strict";
import { Prefix } from "../../lib/net.ts";
import { loadRoutes, type RouteMatch, RoutesError, RouteTable } from "../../lib/routes.ts";

/** Runs fn and returns the RoutesError it must throw. */
function routesError(fn: () => unknown): RoutesError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof RoutesError, `expected a RoutesError, got ${err}`);
    return err;
  }
  assert.fail("expected a RoutesError");
}

const SOURCE = 'routes file "/etc/netbird-ct/routes.json"';

Deno.test("RouteTable.fromJson() rejects an invalid file with a message naming the file and the entry", async (t) => {
  const cases: [name: string, json: unknown, message: string][] = [
    [
      "not an object (array)",
      [],
      `Cannot use ${SOURCE}: expected a JSON object with "routes" and "resolved"`,
    ],
    [
      "not an object (null)",
      null,
      `Cannot use ${SOURCE}: expected a JSON object with "routes" and "resolved"`,
    ],
    [
      "not an object (string)",
      "routes",
      `Cannot use ${SOURCE}: expected a JSON object with "routes" and "resolved"`,
    ],
    ["unknown key", { routes: [], exits: [] }, `Cannot use ${SOURCE}: unknown key "exits"`],
    ["routes not an array", { routes: {} }, `Cannot use ${SOURCE}: "routes" must be an array`],
    ["routes null", { routes: null }, `Cannot use ${SOURCE}: "routes" must be an array`],
    ["resolved an array", { resolved: [] }, `Cannot use ${SOURCE}: "resolved" must be an object`],
    [
      "route not an object",
      { routes: [{ network: "192.0.2.0/24", resource_id: "web" }, "10.0.0.0/8"] },
      `Cannot use ${SOURCE}: routes[1]: not an object`,
    ],
    [
      "route null",
      { routes: [null] },
      `Cannot use ${SOURCE}: routes[0]: not an object`,
    ],
    [
      "network missing",
      { routes: [{ resource_id: "web" }] },
      `Cannot use ${SOURCE}: routes[0]: "network" must be a string`,
    ],
    [
      "bad network (length)",
      { routes: [{ network: "192.0.2.0/33", resource_id: "web" }] },
      `Cannot use ${SOURCE}: routes[0]: invalid network "192.0.2.0/33"`,
    ],
    [
      "bad network (address)",
      { routes: [{ network: "192.0.2/24", resource_id: "web" }] },
      `Cannot use ${SOURCE}: routes[0]: invalid network "192.0.2/24"`,
    ],
    [
      "bad network (IPv6 length)",
      { routes: [{ network: "2001:db8::/129", resource_id: "web" }] },
      `Cannot use ${SOURCE}: routes[0]: invalid network "2001:db8::/129"`,
    ],
    [
      "empty resource_id",
      { routes: [{ network: "192.0.2.0/24", resource_id: "" }] },
      `Cannot use ${SOURCE}: routes[0]: "resource_id" must be a non-empty string`,
    ],
    [
      "non-string resource_id",
      { routes: [{ network: "192.0.2.0/24", resource_id: 7 }] },
      `Cannot use ${SOURCE}: routes[0]: "resource_id" must be a non-empty string`,
    ],
    [
      "bad resolved address",
      { resolved: { "198.51.100.300": "api" } },
      `Cannot use ${SOURCE}: resolved address "198.51.100.300" is not an IP address`,
    ],
    [
      "resolved prefix instead of address",
      { resolved: { "198.51.100.0/24": "api" } },
      `Cannot use ${SOURCE}: resolved address "198.51.100.0/24" is not an IP address`,
    ],
    [
      "non-string resolved id",
      { resolved: { "198.51.100.7": 7 } },
      `Cannot use ${SOURCE}: resolved["198.51.100.7"] must be a non-empty string`,
    ],
    [
      "empty resolved id",
      { resolved: { "198.51.100.7": "" } },
      `Cannot use ${SOURCE}: resolved["198.51.100.7"] must be a non-empty string`,
    ],
  ];
  for (const [name, json, message] of cases) {
    await t.step(name, () => {
      const err = routesError(() => RouteTable.fromJson(json, SOURCE));
      assert.equal(err.message, message);
      assert.equal(err.name, "RoutesError");
    });
  }
});

Deno.test('RouteTable.fromJson() names the source "routes file" by default', () => {
  assert.equal(
    routesError(() => RouteTable.fromJson({ extra: 1 })).message,
    'Cannot use routes file: unknown key "extra"',
  );
});

Deno.test("RouteTable.fromJson() accepts an empty object and omitted keys", () => {
  assert.equal(RouteTable.fromJson({}).size, 0);
  assert.equal(RouteTable.fromJson({ routes: [] }).size, 0);
  assert.equal(RouteTable.fromJson({ resolved: { "198.51.100.7": "api" } }).size, 1);
});

const TABLE = RouteTable.fromJson({
  routes: [
    { network: "0.0.0.0/0", resource_id: "exit4" },
    { network: "10.0.0.0/8", resource_id: "corp" },
    { network: "10.1.0.0/16", resource_id: "lab" },
    { network: "10.1.2.3/32", resource_id: "host" },
    { network: "::/0", resource_id: "exit6" },
    { network: "2001:db8::/32", resource_id: "doc6" },
    { network: "2001:db8:1::/48", resource_id: "lab6" },
  ],
  resolved: {
    "10.1.2.4": "resolved-lab",
    "8.8.8.8": "dns-google",
    "2001:DB8:0:0::1": "resolved6",
  },
});

Deno.test("RouteTable.lookup() prefers resolved addresses, then the most specific route, then a /0 exit", async (t) => {
  const cases: [address: string, expected: RouteMatch][] = [
    ["10.1.2.3", { resourceId: "host", exitNode: false }],
    ["10.1.2.4", { resourceId: "resolved-lab", exitNode: false }],
    ["10.1.9.9", { resourceId: "lab", exitNode: false }],
    ["10.200.0.1", { resourceId: "corp", exitNode: false }],
    ["8.8.8.8", { resourceId: "dns-google", exitNode: false }],
    ["8.8.4.4", { resourceId: "exit4", exitNode: true }],
    ["2001:db8::1", { resourceId: "resolved6", exitNode: false }],
    ["2001:db8:1::5", { resourceId: "lab6", exitNode: false }],
    ["2001:db8:2::5", { resourceId: "doc6", exitNode: false }],
    ["2606:4700::1111", { resourceId: "exit6", exitNode: true }],
  ];
  for (const [address, expected] of cases) {
    await t.step(address, () => {
      assert.deepEqual(TABLE.lookup(address), expected);
    });
  }
});

Deno.test("RouteTable.lookup() gives no match without a containing route", async (t) => {
  const table = RouteTable.fromJson({
    routes: [
      { network: "10.0.0.0/8", resource_id: "corp" },
      { network: "2001:db8::/32", resource_id: "doc6" },
    ],
  });
  const cases = ["192.0.2.1", "2606:4700::1111", "not-an-address"];
  for (const address of cases) {
    await t.step(address, () => {
      assert.deepEqual(table.lookup(address), { resourceId: undefined, exitNode: false });
    });
  }
});

Deno.test("RouteTable.lookup() never matches an address against a route of the other family", () => {
  const v6exit = RouteTable.fromJson({ routes: [{ network: "::/0", resource_id: "exit6" }] });
  assert.deepEqual(v6exit.lookup("8.8.8.8"), { resourceId: undefined, exitNode: false });
  const v4exit = RouteTable.fromJson({ routes: [{ network: "0.0.0.0/0", resource_id: "exit4" }] });
  assert.deepEqual(v4exit.lookup("2606:4700::1"), { resourceId: undefined, exitNode: false });
});

Deno.test("RouteTable.EMPTY matches nothing", () => {
  assert.equal(RouteTable.EMPTY.size, 0);
  assert.deepEqual(RouteTable.EMPTY.lookup("8.8.8.8"), { resourceId: undefined, exitNode: false });
});

Deno.test("RouteTable.lookup() keeps file order for routes of equal length (netbird-ct: stable sort; NetBird: not stable)", () => {
  const table = RouteTable.fromJson({
    routes: [
      { network: "10.9.0.0/16", resource_id: "other" },
      { network: "10.1.0.0/16", resource_id: "first" },
      { network: "10.1.0.0/16", resource_id: "second" },
      { network: "10.1.255.255/16", resource_id: "third" },
    ],
  });
  assert.equal(table.lookup("10.1.0.1").resourceId, "first");
});

Deno.test("RouteTable.lookup() keeps file order for equal lengths when built from prefixes", () => {
  const table = new RouteTable([
    { prefix: Prefix.parse("0.0.0.0/0"), resourceId: "exit-a" },
    { prefix: Prefix.parse("10.0.0.0/8"), resourceId: "corp" },
    { prefix: Prefix.parse("0.0.0.0/0"), resourceId: "exit-b" },
  ]);
  assert.deepEqual(table.lookup("192.0.2.1"), { resourceId: "exit-a", exitNode: true });
});

Deno.test("RouteTable.size counts routes and resolved addresses", () => {
  assert.equal(TABLE.size, 10);
});

Deno.test("loadRoutes() reads and validates a routes file", async () => {
  const path = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        routes: [{ network: "192.0.2.0/24", resource_id: "web" }],
        resolved: { "198.51.100.7": "api" },
      }),
    );
    const table = await loadRoutes(path);
    assert.equal(table.size, 2);
    assert.deepEqual(table.lookup("192.0.2.9"), { resourceId: "web", exitNode: false });
    assert.deepEqual(table.lookup("198.51.100.7"), { resourceId: "api", exitNode: false });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("loadRoutes() rejects a missing file with a message naming it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/missing.json`;
    await assert.rejects(loadRoutes(path), (e: unknown) => {
      assert.ok(e instanceof RoutesError);
      assert.ok(e.message.startsWith(`Cannot read routes file "${path}": `), e.message);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadRoutes() rejects a file that is not JSON with a message naming it", async () => {
  const path = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(path, '{"routes": [');
    await assert.rejects(loadRoutes(path), (e: unknown) => {
      assert.ok(e instanceof RoutesError);
      assert.ok(e.message.startsWith(`Cannot parse routes file "${path}": `), e.message);
      return true;
    });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("loadRoutes() rejects an invalid entry with a message naming the file and the entry", async () => {
  const path = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(path, '{"routes": [{"network": "bad", "resource_id": "x"}]}');
    await assert.rejects(loadRoutes(path), (e: unknown) => {
      assert.ok(e instanceof RoutesError);
      assert.equal(e.message, `Cannot use routes file "${path}": routes[0]: invalid network "bad"`);
      return true;
    });
  } finally {
    await Deno.remove(path);
  }
});
