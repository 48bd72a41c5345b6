import assert from "node:assert/strict";
import {
  type CliOptions,
  DEFAULT_FLOW_WINDOW,
  DEFAULT_UNACKED_MAX,
  FLOW_TOKEN_ENV,
  flowToken,
  HELP,
  parseCli,
  UsageError,
} from "../../lib/cli/args.ts";
import { formatStats } from "../../lib/cli/stats.ts";
import type { FlowClientStats } from "../../lib/flowapi/client.ts";
import type { TrackerStats } from "../../lib/tracker.ts";

/** A WireGuard public key (base64 of 32 bytes 0x01..0x20). */
const KEY = btoa(String.fromCharCode(...Array.from({ length: 32 }, (_, i) => i + 1)));
const FLOW = ["--flow-url", "https://flow.example.com", "--public-key", KEY];

function usageError(args: string[]): string {
  try {
    parseCli(args);
  } catch (err) {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${err}`);
    assert.ok(!err.message.includes("\n"), "one line");
    return err.message;
  }
  assert.fail(`expected ${JSON.stringify(args)} to be rejected`);
}

function flowApi(o: CliOptions): Record<string, unknown> {
  return {
    flowUrl: o.flowUrl,
    flowTokenFile: o.flowTokenFile,
    publicKey: o.publicKey,
    unackedMax: o.unackedMax,
    store: o.store,
    windowMs: o.windowMs,
  };
}

Deno.test("parseCli() leaves the Flow API off by default", () => {
  assert.deepEqual(flowApi(parseCli([])), {
    flowUrl: undefined,
    flowTokenFile: undefined,
    publicKey: undefined,
    unackedMax: 100_000,
    store: undefined,
    windowMs: undefined,
  });
  assert.equal(DEFAULT_UNACKED_MAX, 100_000);
  assert.equal(FLOW_TOKEN_ENV, "NB_FLOW_TOKEN");
});

Deno.test("parseCli() reads every Flow API option", () => {
  assert.deepEqual(
    flowApi(parseCli([
      ...FLOW,
      "--flow-token-file",
      "/etc/netbird-ct/flow.token",
      "--unacked-max",
      "5000",
      "--store",
      "redis://10.0.0.5:6380/2",
      "--window",
      "10s",
    ])),
    {
      flowUrl: "https://flow.example.com",
      flowTokenFile: "/etc/netbird-ct/flow.token",
      publicKey: Uint8Array.from({ length: 32 }, (_, i) => i + 1),
      unackedMax: 5000,
      store: "redis://10.0.0.5:6380/2",
      windowMs: 10_000,
    },
  );
});

Deno.test("parseCli() defaults the window to 60s with --flow-url and no --window", () => {
  assert.equal(DEFAULT_FLOW_WINDOW, "60s");
  assert.equal(parseCli(FLOW).windowMs, 60_000);
  assert.equal(parseCli([...FLOW, "--window", "5s"]).windowMs, 5000);
});

Deno.test("parseCli() accepts http:// (h2c) and https:// with ports and paths, and redis URLs", async (t) => {
  const cases: [string[], keyof CliOptions, unknown][] = [
    [["--flow-url", "http://127.0.0.1:8080"], "flowUrl", "http://127.0.0.1:8080"],
    [["--flow-url", "http://[::1]:8080"], "flowUrl", "http://[::1]:8080"],
    [
      ["--flow-url", "https://flow.example.com:8443/flow"],
      "flowUrl",
      "https://flow.example.com:8443/flow",
    ],
    [[...FLOW, "--store", "redis://localhost"], "store", "redis://localhost"],
    [
      [...FLOW, "--store", "redis://:secret@127.0.0.1:6379/0"],
      "store",
      "redis://:secret@127.0.0.1:6379/0",
    ],
    [
      [...FLOW, "--store", "rediss://cache.example.com:6380/15"],
      "store",
      "rediss://cache.example.com:6380/15",
    ],
    [[...FLOW, "--unacked-max", "1"], "unackedMax", 1],
  ];
  for (const [args, key, value] of cases) {
    await t.step(args.join(" "), () => {
      const withKey = args.includes("--public-key") ? args : [...args, "--public-key", KEY];
      assert.deepEqual(parseCli(withKey)[key], value);
    });
  }
});

Deno.test("parseCli() rejects bad Flow API values with one line naming the flag", async (t) => {
  const cases: [string[], string][] = [
    [
      ["--flow-url", "grpc://x:1", "--public-key", KEY],
      'invalid --flow-url "grpc://x:1": expected https://HOST[:PORT] or http://HOST[:PORT]',
    ],
    [
      ["--flow-url", "flow.example.com:443", "--public-key", KEY],
      'invalid --flow-url "flow.example.com:443": expected https://HOST[:PORT] or http://HOST[:PORT]',
    ],
    [
      ["--flow-url", "https://user:pw@flow.example.com", "--public-key", KEY],
      'invalid --flow-url "https://user:pw@flow.example.com": expected https://HOST[:PORT] or http://HOST[:PORT]',
    ],
    [
      ["--flow-url", "https://192.0.2.1:443", "--public-key", KEY],
      'invalid --flow-url "https://192.0.2.1:443": https:// needs a host name (the TLS server name), not an IP address',
    ],
    [
      ["--flow-url", "https://flow.example.com"],
      "--flow-url needs --public-key (this peer's WireGuard public key)",
    ],
    [
      ["--flow-url", "https://flow.example.com", "--public-key", "abc"],
      'invalid --public-key "abc": expected a WireGuard public key (base64 of 32 bytes)',
    ],
    [
      ["--flow-url", "https://flow.example.com", "--public-key", btoa("x".repeat(31))],
      `invalid --public-key "${
        btoa("x".repeat(31))
      }": expected a WireGuard public key (base64 of 32 bytes)`,
    ],
    [
      ["--flow-url", "https://flow.example.com", "--public-key", btoa("x".repeat(33))],
      `invalid --public-key "${
        btoa("x".repeat(33))
      }": expected a WireGuard public key (base64 of 32 bytes)`,
    ],
    [[...FLOW, "--unacked-max", "0"], 'invalid --unacked-max "0": expected a whole number from 1'],
    [
      [...FLOW, "--unacked-max", "1e5"],
      'invalid --unacked-max "1e5": expected a whole number from 1',
    ],
    [
      [...FLOW, "--store", "http://127.0.0.1:6379"],
      'invalid --store "http://127.0.0.1:6379": expected redis://HOST[:PORT][/DB]',
    ],
    [
      [...FLOW, "--store", "redis://127.0.0.1/x"],
      'invalid --store "redis://127.0.0.1/x": expected redis://HOST[:PORT][/DB]',
    ],
    [[...FLOW, "--flow-token-file", ""], 'invalid --flow-token-file "": expected a file path'],
    [["--public-key", KEY], "--public-key needs --flow-url"],
    [["--store", "redis://localhost"], "--store needs --flow-url"],
    [["--unacked-max", "10"], "--unacked-max needs --flow-url"],
    [["--flow-token-file", "/x"], "--flow-token-file needs --flow-url"],
    [["--flow-token", "x.y"], 'unknown option "--flow-token"'],
  ];
  for (const [args, message] of cases) {
    await t.step(args.join(" "), () => assert.equal(usageError(args), message));
  }
});

Deno.test("flowToken() takes the trimmed file contents when --flow-token-file is given, else NB_FLOW_TOKEN", () => {
  const file = parseCli([...FLOW, "--flow-token-file", "/run/token"]);
  assert.equal(flowToken(file, "sig.payload\n", "env.token"), "sig.payload");
  const env = parseCli(FLOW);
  assert.equal(flowToken(env, undefined, "c2ln+/=.1767225600"), "c2ln+/=.1767225600");
});

Deno.test("flowToken() rejects a missing, empty or malformed token with one line", async (t) => {
  const file = parseCli([...FLOW, "--flow-token-file", "/run/token"]);
  const env = parseCli(FLOW);
  const cases: [CliOptions, string | undefined, string | undefined, string][] = [
    [
      env,
      undefined,
      undefined,
      "--flow-url needs a token: --flow-token-file FILE or env NB_FLOW_TOKEN",
    ],
    [env, undefined, "  ", "--flow-url needs a token: --flow-token-file FILE or env NB_FLOW_TOKEN"],
    [file, "\n", "a.b", 'invalid --flow-token-file "/run/token": the file is empty'],
    [
      file,
      "nodot",
      undefined,
      'invalid token in --flow-token-file "/run/token": expected "<signature>.<payload>" without spaces',
    ],
    [
      env,
      undefined,
      "sig .payload",
      'invalid token in env NB_FLOW_TOKEN: expected "<signature>.<payload>" without spaces',
    ],
    [
      env,
      undefined,
      ".payload",
      'invalid token in env NB_FLOW_TOKEN: expected "<signature>.<payload>" without spaces',
    ],
    [
      env,
      undefined,
      "sig.",
      'invalid token in env NB_FLOW_TOKEN: expected "<signature>.<payload>" without spaces',
    ],
    [
      env,
      undefined,
      "sig.pay\u00e9",
      'invalid token in env NB_FLOW_TOKEN: expected "<signature>.<payload>" without spaces',
    ],
  ];
  for (const [options, text, envToken, message] of cases) {
    await t.step(JSON.stringify([text, envToken]), () => {
      assert.throws(() => flowToken(options, text, envToken), (err: unknown) => {
        assert.ok(err instanceof UsageError);
        assert.equal(err.message, message);
        return true;
      });
    });
  }
});

Deno.test("HELP documents the Flow API flags, the token sources and the 60s default window", () => {
  for (
    const s of [
      "--flow-url",
      "--public-key",
      "--flow-token-file",
      "--unacked-max",
      "--store",
      "NB_FLOW_TOKEN",
      "Without --window the window is 60s",
      "redis://",
    ]
  ) {
    assert.ok(HELP.includes(s), s);
  }
});

Deno.test("formatStats() adds the flow_ counters with a flow section", () => {
  const tracker: TrackerStats = {
    events: 0,
    records: 0,
    ignored: 0,
    filtered: 0,
    reopens: 0,
    duplicates: 0,
    live: 0,
    existing: 0,
    resyncs: 0,
    resyncFailures: 0,
    synthesizedStarts: 0,
    synthesizedEnds: 0,
    updates: 0,
    source: { received: 0, overruns: 0, kernelDrops: 0 },
  };
  const flow: FlowClientStats = {
    events: 9,
    restored: 2,
    sent: 8,
    resent: 5,
    acked: 7,
    duplicateAcks: 1,
    unacked: 3,
    overflowDrops: 1,
    reconnects: 4,
    storeErrors: 0,
    connected: true,
  };
  const without = formatStats({ tracker, written: 0, at: 0 });
  assert.ok(!without.includes("flow_"));
  const line = formatStats({ tracker, written: 0, at: 0, flow });
  assert.match(
    line,
    / flow_sent=8 flow_acked=7 flow_resent=5 flow_unacked=3 flow_overflow_drops=1 flow_reconnects=4 flow_restored=2 flow_store_errors=0 flow_connected=1/,
  );
});

// --- the entry point ------------------------------------------------------------------------

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

async function runMain(
  permissions: string[],
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...permissions, MAIN, ...args],
    env: { NO_COLOR: "1", NB_FLOW_TOKEN: "" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("netbird-ct --help needs no permission: the Flow API modules load only with --flow-url", async () => {
  const { code, stdout } = await runMain([], ["--help"]);
  assert.equal(code, 0);
  assert.ok(stdout.includes("--flow-url"));
});

Deno.test("netbird-ct exits 2 with one line for a bad --public-key, a missing token or token file", async (t) => {
  const cases: [string[], string][] = [
    [
      ["--flow-url", "https://flow.example.com", "--public-key", "AAAA"],
      'invalid --public-key "AAAA": expected a WireGuard public key (base64 of 32 bytes)',
    ],
    [
      ["-n", "100.64.0.0/10", "--flow-url", "http://127.0.0.1:1", "--public-key", KEY],
      "--flow-url needs a token: --flow-token-file FILE or env NB_FLOW_TOKEN",
    ],
  ];
  for (const [args, message] of cases) {
    await t.step(args.join(" "), async () => {
      const { code, stdout, stderr } = await runMain(["--allow-all"], args);
      assert.equal(code, 2);
      assert.equal(stdout, "");
      assert.equal(stderr, `netbird-ct: ${message} (see netbird-ct --help)\n`);
    });
  }
  await t.step("--flow-token-file /nonexistent", async () => {
    const { code, stderr } = await runMain(["--allow-all"], [
      "-n",
      "100.64.0.0/10",
      "--flow-url",
      "http://127.0.0.1:1",
      "--public-key",
      KEY,
      "--flow-token-file",
      "/nonexistent/token",
    ]);
    assert.equal(code, 2);
    assert.match(stderr, /^netbird-ct: invalid --flow-token-file "\/nonexistent\/token": .*\n$/);
  });
});
