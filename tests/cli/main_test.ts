import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import denoJson from "../../deno.json" with { type: "json" };

const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const decoder = new TextDecoder();

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real entry point in a subprocess and collects its output. */
async function runMain(...args: string[]): Promise<Run> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", MAIN, ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

Deno.test("netbird-ct --network 300.1.1.1/33 exits 2 with one stderr line naming --network", async () => {
  const { code, stdout, stderr } = await runMain("--network", "300.1.1.1/33");
  assert.equal(code, 2);
  assert.equal(stdout, "");
  const lines = stderr.split("\n");
  assert.equal(lines.length, 2, `expected one line, got ${JSON.stringify(stderr)}`);
  assert.equal(lines[1], "");
  assert.match(lines[0]!, /^netbird-ct: .*--network/);
  assert.ok(!stderr.includes("    at "), `stack trace in ${JSON.stringify(stderr)}`);
});

Deno.test("netbird-ct exits 2 without a stack trace on an unknown option", async () => {
  const { code, stderr } = await runMain("--bogus");
  assert.equal(code, 2);
  assert.equal(stderr, 'netbird-ct: unknown option "--bogus" (see netbird-ct --help)\n');
});

Deno.test("netbird-ct --help exits 0 and lists every option of the CLI contract", async () => {
  const { code, stdout, stderr } = await runMain("--help");
  assert.equal(code, 0);
  assert.equal(stderr, "");
  const options = [
    "--network",
    "--address",
    "--interface",
    "--counters",
    "--output",
    "--log-level",
    "--help",
    "--version",
  ];
  const missing = options.filter((o) => !stdout.includes(o));
  assert.deepEqual(missing, []);
});

Deno.test("netbird-ct --version prints the version from deno.json", async () => {
  const { code, stdout, stderr } = await runMain("--version");
  assert.equal(code, 0);
  assert.equal(stderr, "");
  assert.equal(stdout, `netbird-ct ${denoJson.version}\n`);
});

Deno.test("netbird-ct --source packet runs the capture subcommand (its flags, its errors)", async () => {
  const missing = await runMain("--source", "packet", "-n", "100.64.0.0/10", "-a", "100.64.0.1");
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^netbird-ct capture: missing --interface.*\n$/);
  const help = await runMain("--source", "packet", "--help");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^netbird-ct capture: /);
});
