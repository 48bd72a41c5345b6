import assert from "node:assert/strict";
import { parseCaptureArgs, runCapture } from "../../lib/cli/capture.ts";
import { UsageError } from "../../lib/cli/args.ts";
import { linkTypeOfHatype } from "../../ffi/packet_socket.ts";
import { LinkType } from "../../lib/capture/mod.ts";

const decoder = new TextDecoder();
const FLAGS = ["-n", "100.64.0.0/16", "-n", "fd00:64::/64", "-a", "100.64.0.1"];

Deno.test("parseCaptureArgs reads interface, overlay, output and namespace", () => {
  const o = parseCaptureArgs(["-i", "wt0", ...FLAGS, "-o", "out.jsonl", "--netns", "a"]);
  assert.equal(o.interface, "wt0");
  assert.deepEqual(o.networks, ["100.64.0.0/16", "fd00:64::/64"]);
  assert.deepEqual(o.addresses, ["100.64.0.1"]);
  assert.equal(o.output, "out.jsonl");
  assert.equal(o.netns, "a");
  assert.equal(o.logLevel, "info");
  assert.equal(o.tcpEnd, "expire", "--tcp-end defaults to expire (kernel-equal counters)");
  assert.equal(parseCaptureArgs(["-i", "wt0", ...FLAGS, "--tcp-end", "close"]).tcpEnd, "close");
});

Deno.test("parseCaptureArgs names the missing or invalid flag", () => {
  const cases: [string[], RegExp][] = [
    [FLAGS, /^missing --interface/],
    [["-i", "wt0", "-a", "100.64.0.1"], /^missing --network/],
    [["-i", "wt0", "-n", "100.64.0.0/16"], /^missing --address/],
    [["-i", "wt0", ...FLAGS, "-n", "nope"], /^invalid --network "nope"/],
    [["-i", "wt0", ...FLAGS, "-a", "x"], /^invalid --address "x"/],
    [["-i", "a/b", ...FLAGS], /^invalid --interface "a\/b"/],
    [["-i", "wt0", ...FLAGS, "extra"], /^unexpected argument "extra"/],
    [["-i", "wt0", ...FLAGS, "--log-level", "loud"], /^invalid --log-level "loud"/],
    [
      ["-i", "wt0", ...FLAGS, "--tcp-end", "timewait"],
      /^invalid --tcp-end "timewait": expected expire or close$/,
    ],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseCaptureArgs(args), (err: unknown) => {
      assert.ok(err instanceof UsageError);
      assert.match(err.message, message, args.join(" "));
      return true;
    });
  }
});

Deno.test("runCapture: usage errors exit 2, --help exits 0", async () => {
  let stdout = "";
  let stderr = "";
  const io = {
    stdout: { writeSync: (p: Uint8Array): number => (stdout += decoder.decode(p), p.length) },
    stderr: { writeSync: (p: Uint8Array): number => (stderr += decoder.decode(p), p.length) },
  };
  assert.equal(await runCapture(FLAGS, io), 2);
  assert.match(stderr, /^netbird-ct capture: missing --interface.*see netbird-ct capture --help/);
  stderr = "";
  assert.equal(await runCapture(["-i", "wt0", ...FLAGS, "--tcp-end", "never"], io), 2);
  assert.equal(
    stderr,
    'netbird-ct capture: invalid --tcp-end "never": expected expire or close ' +
      "(see netbird-ct capture --help)\n",
  );
  assert.equal(await runCapture(["--help"], io), 0);
  assert.match(stdout, /^netbird-ct capture: /);
  assert.match(stdout, /--source packet --capture-interface IFACE/);
  assert.match(stdout, /--tcp-end WHEN .* default: expire\n/);
  assert.match(stdout, /or the capture stops\./);
});

Deno.test("linkTypeOfHatype: Ethernet and loopback keep the header, tunnels are raw IP", () => {
  assert.equal(linkTypeOfHatype(1), LinkType.ETHERNET);
  assert.equal(linkTypeOfHatype(772), LinkType.ETHERNET);
  assert.equal(linkTypeOfHatype(0xfffe), LinkType.RAW);
  assert.equal(linkTypeOfHatype(519), LinkType.RAW);
  assert.equal(linkTypeOfHatype(24), -1);
});
