import assert from "node:assert/strict";
import {
  COLLECT_HELP,
  parseCollectArgs,
  parseListen,
  parseStore,
  parseTokenArgs,
  readTokenSecret,
  runSubcommand,
  TOKEN_HELP,
} from "../../lib/cli/collect.ts";
import { UsageError } from "../../lib/cli/args.ts";

function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${err}`);
    assert.ok(!err.message.includes("\n"), "one line");
    return err.message;
  }
  assert.fail("expected a usage error");
}

Deno.test("parseCollectArgs() applies the defaults", () => {
  assert.deepEqual(parseCollectArgs(["--token-secret-file", "/etc/secret"]), {
    help: false,
    listen: { hostname: "127.0.0.1", port: 8080 },
    httpListen: { hostname: "127.0.0.1", port: 8081 },
    tls: undefined,
    tokenSecretFile: "/etc/secret",
    store: { kind: "memory" },
    statsIntervalMs: 60_000,
    logLevel: "info",
  });
});

Deno.test("parseCollectArgs() reads every option", () => {
  const o = parseCollectArgs([
    "--token-secret-file=s",
    "--listen",
    "[::]:0",
    "--http-listen",
    "localhost:9000",
    "--tls-cert",
    "c.pem",
    "--tls-key",
    "k.pem",
    "--store",
    "redis://:pw@127.0.0.1:6380/3",
    "--stats-interval",
    "5s",
    "--log-level",
    "debug",
  ]);
  assert.deepEqual(o.listen, { hostname: "::", port: 0 });
  assert.deepEqual(o.httpListen, { hostname: "localhost", port: 9000 });
  assert.deepEqual(o.tls, { certFile: "c.pem", keyFile: "k.pem" });
  assert.deepEqual(o.store, { kind: "redis", url: "redis://:pw@127.0.0.1:6380/3" });
  assert.equal(o.statsIntervalMs, 5000);
  assert.equal(o.logLevel, "debug");
});

Deno.test("parseCollectArgs() rejects bad options with one line naming the flag", () => {
  const cases: [string[], string][] = [
    [[], "--token-secret-file"],
    [["--token-secret-file="], "--token-secret-file"],
    [["--token-secret-file", "s", "--listen", "8080"], "--listen"],
    [["--token-secret-file", "s", "--listen", "127.0.0.1:65536"], "--listen"],
    [["--token-secret-file", "s", "--listen", "::1:8080"], "--listen"],
    [["--token-secret-file", "s", "--listen", "300.1.1.1:80"], "--listen"],
    [["--token-secret-file", "s", "--http-listen", "[100.64.0.1]:80"], "--http-listen"],
    [["--token-secret-file", "s", "--tls-cert", "c.pem"], "--tls-key"],
    [["--token-secret-file", "s", "--tls-key", "k.pem"], "--tls-cert"],
    [["--token-secret-file", "s", "--store", "sqlite:///x"], "--store"],
    [["--token-secret-file", "s", "--store", "redis://:secret@h:1/x"], "--store"],
    [["--token-secret-file", "s", "--store", "redis://h:1/0?x=1"], "--store"],
    [["--token-secret-file", "s", "--stats-interval", "soon"], "--stats-interval"],
    [["--token-secret-file", "s", "--log-level", "trace"], "--log-level"],
    [["--token-secret-file", "s", "--verbose"], "--verbose"],
    [["--token-secret-file", "s", "extra"], "extra"],
    [["--token-secret-file"], "--token-secret-file"],
  ];
  for (const [args, flag] of cases) {
    const message = usageError(() => parseCollectArgs(args));
    assert.ok(message.includes(flag), `${args.join(" ")}: "${message}" should name ${flag}`);
  }
  // The Redis password never appears in an error.
  assert.ok(!usageError(() => parseStore("redis://:secret@h:1/x")).includes("secret"));
});

Deno.test("parseCollectArgs() allows --help without the secret", () => {
  assert.equal(parseCollectArgs(["--help"]).help, true);
  assert.equal(parseCollectArgs(["-h"]).help, true);
});

Deno.test("parseListen() and parseStore() accept the documented forms", () => {
  assert.deepEqual(parseListen("--listen", "0.0.0.0:80"), { hostname: "0.0.0.0", port: 80 });
  assert.deepEqual(parseListen("--listen", "[fd00::1]:443"), { hostname: "fd00::1", port: 443 });
  assert.deepEqual(parseListen("--listen", "flows.example.com:8080"), {
    hostname: "flows.example.com",
    port: 8080,
  });
  assert.deepEqual(parseStore("memory"), { kind: "memory" });
  for (const url of ["redis://h", "redis://h:6379", "redis://h:6379/", "rediss://u:p@h:1/15"]) {
    assert.deepEqual(parseStore(url), { kind: "redis", url });
  }
});

Deno.test("parseTokenArgs() reads --ttl and requires the secret", () => {
  assert.deepEqual(parseTokenArgs(["--token-secret-file", "s"]), {
    help: false,
    tokenSecretFile: "s",
    ttlMs: 86_400_000,
  });
  assert.equal(parseTokenArgs(["--token-secret-file", "s", "--ttl", "90m"]).ttlMs, 5_400_000);
  assert.ok(usageError(() => parseTokenArgs([])).includes("--token-secret-file"));
  for (const ttl of ["0", "500ms", "forever", "87601h"]) {
    assert.ok(
      usageError(() => parseTokenArgs(["--token-secret-file", "s", "--ttl", ttl])).includes(
        "--ttl",
      ),
    );
  }
  assert.equal(parseTokenArgs(["--help"]).help, true);
});

Deno.test("readTokenSecret() drops trailing newlines and refuses short secrets", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/ok`, "0123456789abcdef0123\r\n\n");
    assert.equal(
      new TextDecoder().decode(await readTokenSecret(`${dir}/ok`)),
      "0123456789abcdef0123",
    );
    await Deno.writeTextFile(`${dir}/short`, "0123456789abcde\n");
    await assert.rejects(() => readTokenSecret(`${dir}/short`), UsageError);
    await assert.rejects(
      () => readTokenSecret(`${dir}/missing`),
      /Cannot read --token-secret-file/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the help texts teach the protocol, the token and the query API", () => {
  for (
    const phrase of [
      "FlowEventAck{isInitiator: true}",
      "authorization: Bearer <signature>.<payload>",
      "HMAC-SHA256",
      "UNAUTHENTICATED (16)",
      "/api/events/network-traffic",
      "redis://",
      "newest first",
      "SIGINT/SIGTERM",
    ]
  ) {
    assert.ok(COLLECT_HELP.includes(phrase), `collect --help should mention ${phrase}`);
  }
  for (const phrase of ["<signature>.<payload>", "--ttl", "Unix seconds"]) {
    assert.ok(TOKEN_HELP.includes(phrase), `token --help should mention ${phrase}`);
  }
  for (const line of [...COLLECT_HELP.split("\n"), ...TOKEN_HELP.split("\n")]) {
    assert.ok(line.length <= 100, `help line longer than 100 characters: ${line}`);
  }
});

Deno.test("runSubcommand() returns 2 for a usage error without starting anything", async () => {
  assert.equal(await runSubcommand("token", ["--ttl", "0"]), 2);
});
