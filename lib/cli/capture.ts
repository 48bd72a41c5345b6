/**
 * The `netbird-ct capture` subcommand: runs NetBird's userspace connection tracker over packets
 * captured live on one interface (an `AF_PACKET` socket) and writes the flow records it produces.
 * The issue's `--source packet --capture-interface IFACE` is this subcommand with `-i IFACE`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  createDecodeStats,
  decodePacket,
  type DecodeStats,
  type LivePacketSource,
  SKIP_REASONS,
} from "../capture/mod.ts";
import { SourceError } from "../source.ts";
import { JsonLinesSink, type SyncWriter } from "../jsonl.ts";
import {
  type FeedStats,
  PACKET_FLAG_OPTIONS,
  PacketFeeder,
  type PacketFlags,
  packetFlags,
  requireOverlayFlags,
  tcpEndHelp,
} from "./_packets.ts";
import { parseArgsMessage, UsageError } from "./args.ts";

const encoder = new TextEncoder();

/** Help text for `netbird-ct capture --help`. */
export const CAPTURE_HELP: string =
  `netbird-ct capture: flow records from live packets, with NetBird's userspace tracker

Usage: netbird-ct capture -i IFACE -n PREFIX -a ADDRESS [options]

Captures every frame IFACE receives and sends (an AF_PACKET socket; Ethernet interfaces and
tunnel interfaces such as NetBird's wt0) and feeds every IPv4/IPv6 packet that touches the
overlay to NetBird's userspace connection tracker (TCP, UDP, ICMP/ICMPv6), the same pipeline as
\`netbird-ct replay\` on a file: a packet whose source is an --address is outbound; any other
packet is inbound: a reply to a tracked flow, or else a new flow the ACL accepted. The time each
frame was received is the tracker's clock. Records are the same JSON lines as replay's (start and
end records with direction, rx/tx packets and bytes of the whole IP packets, rule_id null,
conntrack_id 0). Runs until SIGINT or SIGTERM, then every flow without an end record gets it.
With the default --tcp-end expire, a TCP flow's counters equal the kernel conntrack's, and its
end record comes when its entry leaves the table (after TIME-WAIT: minutes after the close);
--tcp-end close is NetBird's timing, at the close, without the final ACK of a FIN close.
This is the issue's \`--source packet --capture-interface IFACE\`.

Options:
  -i, --interface IFACE  the interface to capture on (required)
  -n, --network PREFIX   overlay prefix, IPv4 or IPv6 (repeatable; at least one)
  -a, --address ADDRESS  an address of this host (repeatable; at least one): packets from it
                         are outbound
  -o, --output FILE      write the records to FILE (truncated)   default: stdout
      --netns NAME       capture in the \`ip netns\` namespace NAME
${tcpEndHelp("the capture stops")}
      --log-level LEVEL  debug | info | warning | error   default: info
                         (info: a start line and the summary; warning: only warnings and
                         errors; error: only errors)
  -h, --help             show this help

Needs root or CAP_NET_RAW. Frames that are not decodable IP (ARP, LLDP, bad headers) are skipped
and counted by reason in the summary, as are packets outside the overlay and IP fragments after
the first. kernel_drops in the summary counts frames the kernel could not queue.

Exit status: 0 after SIGINT/SIGTERM; 1 when the capture cannot be opened (no permission, unknown
interface) or fails; 2 on a usage error.`;

/** What `netbird-ct capture` was asked to do. */
export interface CaptureOptions extends PacketFlags {
  /** `--interface` (empty only with `--help`). */
  interface: string;
  /** `--netns`; `undefined` = the current namespace. */
  netns: string | undefined;
}

function fail(message: string): never {
  throw new UsageError(message);
}

/**
 * Parses the arguments of `netbird-ct capture`.
 *
 * @param args Arguments after `capture`.
 * @returns The options.
 * @throws {UsageError} With a one-line message naming the flag.
 *
 * @example Usage
 * ```ts
 * import { parseCaptureArgs } from "./capture.ts";
 * const o = parseCaptureArgs(["-i", "wt0", "-n", "100.64.0.0/10", "-a", "100.64.0.1"]);
 * if (o.interface !== "wt0" || o.networks.length !== 1) throw new Error("parse failed");
 * ```
 */
export function parseCaptureArgs(args: string[]): CaptureOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: true,
      options: {
        ...PACKET_FLAG_OPTIONS,
        interface: { type: "string", short: "i" },
        netns: { type: "string" },
      },
    });
  } catch (err) {
    fail(parseArgsMessage(err));
  }
  const v = parsed.values;
  const flags = packetFlags(v);
  if (v.netns === "") fail(`invalid --netns "": expected a namespace name`);
  if (v.interface !== undefined && !/^[^\s/:]{1,15}$/.test(v.interface)) {
    fail(`invalid --interface "${v.interface}": expected an interface name such as wt0`);
  }
  if (parsed.positionals.length > 0) {
    fail(`unexpected argument "${parsed.positionals[0]}": capture takes no positional arguments`);
  }
  if (!flags.help && v.interface === undefined) {
    fail("missing --interface: the interface, such as -i wt0");
  }
  requireOverlayFlags(flags, "this host's overlay address(es)");
  return { ...flags, interface: v.interface ?? "", netns: v.netns };
}

/** Counters of one capture, for the summary. */
export interface CaptureStats extends FeedStats {
  /** Frames received. */
  packets: number;
  /** Decoding counters (decoded, skipped by reason). */
  decode: DecodeStats;
  /** Frames the kernel dropped (socket buffer full). */
  kernelDrops: number;
  /** Records written. */
  records: number;
}

/**
 * The one-line summary of a capture.
 *
 * @param s The counters.
 * @returns The line, without a newline.
 *
 * @example Usage
 * ```ts
 * import { formatCaptureSummary } from "./capture.ts";
 * import { createDecodeStats } from "../capture/mod.ts";
 * const line = formatCaptureSummary({
 *   packets: 3, decode: createDecodeStats(), outsideOverlay: 0, fragments: 0, ndp: 0,
 *   tracked: 3, flows: 1, records: 2, kernelDrops: 0,
 * });
 * if (!line.startsWith("Captured: packets=3 ")) throw new Error(line);
 * ```
 */
export function formatCaptureSummary(s: CaptureStats): string {
  const reasons = SKIP_REASONS.filter((r) => s.decode.reasons[r] > 0)
    .map((r) => ` skipped_${r.replaceAll("-", "_")}=${s.decode.reasons[r]}`).join("");
  return `Captured: packets=${s.packets} decoded=${s.decode.decoded} skipped=${s.decode.skipped}` +
    `${reasons} outside_overlay=${s.outsideOverlay} fragments=${s.fragments}` +
    ` ndp_mld=${s.ndp} tracked=${s.tracked} flows=${s.flows} records=${s.records}` +
    ` kernel_drops=${s.kernelDrops}`;
}

function printLine(stream: SyncWriter, text: string): void {
  let bytes = encoder.encode(text + "\n");
  while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
}

/** Where a capture writes; the CLI passes the process's streams, tests their own. */
export interface CaptureIo {
  /** Records, when no `--output` is given. */
  stdout: SyncWriter;
  /** Start line, warnings, errors, summary. */
  stderr: SyncWriter;
}

/**
 * Opens the capture (`main.ts` passes the AF_PACKET socket of `ffi/`; tests pass fakes).
 * Throws a {@linkcode SourceError} the user can act on (no permission, unknown interface).
 */
export type OpenCapture = (options: CaptureOptions) => LivePacketSource;

/** Hooks of {@linkcode capture}, for tests and embedding. */
export interface CaptureControl {
  /** Opens the socket. */
  open: OpenCapture;
  /** Resolved when the capture should stop (default: SIGINT or SIGTERM). */
  stop?: Promise<void>;
}

/**
 * Captures until stopped (options already parsed).
 *
 * @param options The options.
 * @param io Output streams.
 * @param control Socket factory and stop signal.
 * @returns The exit code: 0 stopped, 1 cannot open or capture failed.
 */
export async function capture(
  options: CaptureOptions,
  io: CaptureIo,
  control: CaptureControl,
): Promise<number> {
  const info = options.logLevel === "debug" || options.logLevel === "info";
  const error = (message: string): number => {
    printLine(io.stderr, `netbird-ct capture: ${message}`);
    return 1;
  };
  let socket: LivePacketSource;
  try {
    socket = control.open(options);
  } catch (err) {
    if (err instanceof SourceError) return error(err.message);
    throw err;
  }
  let output: Deno.FsFile | undefined;
  try {
    if (options.output !== undefined) {
      output = await Deno.open(options.output, { write: true, create: true, truncate: true });
    }
  } catch (err) {
    socket.close();
    return error(`cannot open "${options.output}": ${err instanceof Error ? err.message : err}`);
  }
  const sink = new JsonLinesSink(output ?? io.stdout);
  const feeder = new PacketFeeder({
    networks: options.networks,
    addresses: options.addresses,
    sink,
    tcpEnd: options.tcpEnd,
  });
  const stats: CaptureStats = {
    ...feeder.stats,
    packets: 0,
    decode: createDecodeStats(),
    kernelDrops: 0,
    records: 0,
  };
  let onSignal: (() => void) | undefined;
  if (control.stop === undefined) {
    onSignal = (): void => socket.close();
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
  } else {
    control.stop.then(() => socket.close());
  }
  if (info) {
    const where = options.netns === undefined ? "" : ` (network namespace ${options.netns})`;
    printLine(
      io.stderr,
      `netbird-ct capture: capturing on ${options.interface}${where}; SIGINT or SIGTERM stops`,
    );
  }
  let code = 0;
  try {
    for await (const batch of socket.batches()) {
      if (batch.length === 0) {
        // Idle: the clock still moves, so idle flows expire.
        feeder.advance(BigInt(Date.now()) * 1_000_000n);
        continue;
      }
      for (const record of batch) {
        stats.packets++;
        const packet = decodePacket(record, { stats: stats.decode });
        if (packet === undefined) {
          feeder.advance(record.timestampNs);
          continue;
        }
        feeder.feed(packet);
      }
    }
  } catch (err) {
    if (!(err instanceof SourceError)) throw err;
    printLine(io.stderr, `netbird-ct capture: ${err.message}`);
    code = 1;
  } finally {
    if (onSignal !== undefined) {
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
    }
    socket.close();
    // Stopping ends every flow without an end record (with --tcp-end expire, TCP flows in
    // TIME-WAIT or closed too).
    feeder.close();
    output?.close();
  }
  Object.assign(stats, feeder.stats);
  stats.kernelDrops = socket.stats().kernelDrops;
  stats.records = sink.written;
  if (info) printLine(io.stderr, formatCaptureSummary(stats));
  return code;
}

/**
 * Runs `netbird-ct capture ARGS`.
 *
 * @param args Arguments after `capture`.
 * @param open Opens the capture socket.
 * @param io Output streams (default: the process's).
 * @returns The exit code: 0 stopped by a signal, 1 capture failure, 2 usage error.
 */
export async function runCapture(
  args: string[],
  open: OpenCapture,
  io: CaptureIo = { stdout: Deno.stdout, stderr: Deno.stderr },
): Promise<number> {
  let options: CaptureOptions;
  try {
    options = parseCaptureArgs(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    printLine(io.stderr, `netbird-ct capture: ${err.message} (see netbird-ct capture --help)`);
    return 2;
  }
  if (options.help) {
    printLine(io.stdout, CAPTURE_HELP);
    return 0;
  }
  return await capture(options, io, { open });
}
