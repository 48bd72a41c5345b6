/**
 * The `netbird-ct replay` subcommand: runs NetBird's userspace connection tracker over a packet
 * capture (pcap or pcapng) in capture time and writes the flow records it would have produced.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  CaptureError,
  CaptureReader,
  createDecodeStats,
  decodePacket,
  type DecodeStats,
  SKIP_REASONS,
} from "../capture/mod.ts";
import { JsonLinesSink, type SyncWriter } from "../jsonl.ts";
import {
  PACKET_FLAG_OPTIONS,
  PacketFeeder,
  type PacketFlags,
  packetFlags,
  requireOverlayFlags,
  tcpEndHelp,
} from "./_packets.ts";
import { parseArgsMessage, UsageError } from "./args.ts";

const encoder = new TextEncoder();

/** Help text for `netbird-ct replay --help`. */
export const REPLAY_HELP: string =
  `netbird-ct replay: flow records from a packet capture, with NetBird's userspace tracker

Usage: netbird-ct replay -n PREFIX -a ADDRESS [options] FILE

Reads FILE (pcap or pcapng; Ethernet, raw IP, Linux cooked v1/v2, loopback/null links) record
by record and feeds every IPv4/IPv6 packet that touches the overlay to NetBird's userspace
connection tracker (TCP, UDP, ICMP/ICMPv6), in capture time: the packet timestamps are the
tracker's clock, so idle timeouts expire as they would have on the capturing host, and the
records' timestamps are capture times. A packet whose source is an --address is outbound; any
other packet is inbound: a reply to a tracked flow, or else a new flow the ACL accepted. Records
are the same JSON lines as the conntrack tracker's (start and end records with direction,
rx/tx packets and bytes of the whole IP packets, rule_id null, conntrack_id 0). At the end of
the file every flow without an end record gets it. With the default --tcp-end expire, a TCP
flow's counters equal the kernel conntrack's; --tcp-end close is NetBird's timing, which leaves
the final ACK of a FIN close out of the end record.

Options:
  -n, --network PREFIX   overlay prefix, IPv4 or IPv6 (repeatable; at least one)
  -a, --address ADDRESS  an address of the host the capture was taken on (repeatable; at
                         least one): packets from it are outbound
  -o, --output FILE      write the records to FILE (truncated)   default: stdout
${tcpEndHelp("the file ends")}
      --log-level LEVEL  debug | info | warning | error   default: info
                         (info: progress on a terminal and the summary; warning: only
                         warnings and errors; error: only errors)
  -h, --help             show this help

Packets that are not decodable IP (ARP, LLDP, bad headers, unsupported link types) are skipped
and counted by reason in the summary, as are packets outside the overlay and IP fragments after
the first (no ports: the tracker never sees them).

Exit status: 0 on success, also when the file ends inside its last record (a warning names the
offset; the records before it are replayed); 1 when the file cannot be read or is malformed
(the message names the byte offset); 2 on a usage error.`;

/** What `netbird-ct replay` was asked to do. */
export interface ReplayOptions extends PacketFlags {
  /** The capture file (empty only with `--help`). */
  file: string;
}

function fail(message: string): never {
  throw new UsageError(message);
}

/**
 * Parses the arguments of `netbird-ct replay`.
 *
 * @param args Arguments after `replay`.
 * @returns The options.
 * @throws {UsageError} With a one-line message naming the flag.
 *
 * @example Usage
 * ```ts
 * import { parseReplayArgs } from "./replay.ts";
 * const o = parseReplayArgs(["-n", "100.64.0.0/10", "-a", "100.64.0.1", "cap.pcap"]);
 * if (o.file !== "cap.pcap" || o.networks.length !== 1) throw new Error("parse failed");
 * ```
 */
export function parseReplayArgs(args: string[]): ReplayOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: true,
      options: PACKET_FLAG_OPTIONS,
    });
  } catch (err) {
    fail(parseArgsMessage(err));
  }
  const flags = packetFlags(parsed.values);
  const positionals = parsed.positionals;
  requireOverlayFlags(flags, "the capturing host's address(es)");
  if (!flags.help) {
    if (positionals.length === 0) fail("missing FILE: the pcap or pcapng file to replay");
    if (positionals.length > 1) {
      fail(`unexpected argument "${positionals[1]}": replay takes one FILE`);
    }
  }
  return { ...flags, file: positionals[0] ?? "" };
}

/** Counters of one replay, for the summary. */
export interface ReplayStats {
  /** Packet records read from the file. */
  packets: number;
  /** Bytes of the file consumed so far (approximately: chunks read). */
  fileBytes: number;
  /** Decoding counters (decoded, skipped by reason). */
  decode: DecodeStats;
  /** Decoded packets with neither address in the overlay. */
  outsideOverlay: number;
  /** IP fragments after the first (no transport header). */
  fragments: number;
  /** ICMPv6 neighbor discovery and multicast listener messages (never tracked). */
  ndp: number;
  /** Packets given to the tracker. */
  tracked: number;
  /** Flows started (start records). */
  flows: number;
  /** Records written. */
  records: number;
}

/**
 * The one-line summary of a replay.
 *
 * @param s The counters.
 * @returns The line, without a newline.
 *
 * @example Usage
 * ```ts
 * import { formatReplaySummary } from "./replay.ts";
 * import { createDecodeStats } from "../capture/mod.ts";
 * const line = formatReplaySummary({
 *   packets: 3, fileBytes: 100, decode: createDecodeStats(), outsideOverlay: 0, fragments: 0,
 *   ndp: 0, tracked: 3, flows: 1, records: 2,
 * });
 * if (!line.startsWith("Replayed: packets=3 ")) throw new Error(line);
 * ```
 */
export function formatReplaySummary(s: ReplayStats): string {
  const reasons = SKIP_REASONS.filter((r) => s.decode.reasons[r] > 0)
    .map((r) => ` skipped_${r.replaceAll("-", "_")}=${s.decode.reasons[r]}`).join("");
  return `Replayed: packets=${s.packets} decoded=${s.decode.decoded} skipped=${s.decode.skipped}` +
    `${reasons} outside_overlay=${s.outsideOverlay} fragments=${s.fragments}` +
    ` ndp_mld=${s.ndp}` +
    ` tracked=${s.tracked} flows=${s.flows} records=${s.records}`;
}

function printLine(stream: SyncWriter, text: string): void {
  let bytes = encoder.encode(text + "\n");
  while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
}

function printRaw(stream: SyncWriter, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
}

/** Where a replay writes; the CLI passes the process's streams, tests their own. */
export interface ReplayIo {
  /** Records, when no `--output` is given. */
  stdout: SyncWriter;
  /** Progress, warnings, errors, summary. */
  stderr: SyncWriter;
  /** Whether stderr is a terminal (progress lines are shown only then). */
  stderrIsTerminal: boolean;
}

/**
 * Replays a capture file (options already parsed).
 *
 * @param options The options.
 * @param io Output streams.
 * @returns The exit code: 0 done (also after a truncated last record), 1 unreadable/malformed.
 */
export async function replay(options: ReplayOptions, io: ReplayIo): Promise<number> {
  const info = options.logLevel === "debug" || options.logLevel === "info";
  const warn = info || options.logLevel === "warning";
  const error = (message: string): number => {
    printLine(io.stderr, `netbird-ct replay: ${message}`);
    return 1;
  };
  let file: Deno.FsFile;
  let size = 0;
  try {
    file = await Deno.open(options.file, { read: true });
  } catch (err) {
    return error(`cannot open "${options.file}": ${err instanceof Error ? err.message : err}`);
  }
  let output: Deno.FsFile | undefined;
  try {
    size = (await file.stat()).size;
    if (options.output !== undefined) {
      output = await Deno.open(options.output, { write: true, create: true, truncate: true });
    }
  } catch (err) {
    file.close();
    return error(`cannot open "${options.output}": ${err instanceof Error ? err.message : err}`);
  }
  const sink = new JsonLinesSink(output ?? io.stdout);
  const feeder = new PacketFeeder({
    networks: options.networks,
    addresses: options.addresses,
    sink,
    tcpEnd: options.tcpEnd,
  });
  const tracker = feeder.tracker;
  const stats: ReplayStats = {
    packets: 0,
    fileBytes: 0,
    decode: createDecodeStats(),
    outsideOverlay: 0,
    fragments: 0,
    ndp: 0,
    tracked: 0,
    flows: 0,
    records: 0,
  };
  // Count the bytes read, for the progress line.
  const counted = file.readable.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller): void {
        stats.fileBytes += chunk.length;
        controller.enqueue(chunk);
      },
    }),
  );
  const reader = new CaptureReader(counted);
  const progress = info && io.stderrIsTerminal;
  let nextProgress = performance.now() + 1000;
  let shownProgress = false;
  const showProgress = (): void => {
    const pct = size > 0 ? Math.min(100, (stats.fileBytes / size) * 100).toFixed(1) : "?";
    printRaw(
      io.stderr,
      `\r\x1b[Kreplay: ${stats.packets} packets, ${stats.fileBytes} bytes (${pct}%), ` +
        `${feeder.stats.flows} flows`,
    );
    shownProgress = true;
  };
  let code = 0;
  try {
    for await (const record of reader) {
      stats.packets++;
      if (progress && (stats.packets & 1023) === 0 && performance.now() >= nextProgress) {
        showProgress();
        nextProgress = performance.now() + 1000;
      }
      const packet = decodePacket(record, { stats: stats.decode });
      if (packet === undefined) continue;
      // Capture time drives the tracker: timeouts expire as on the capturing host.
      feeder.feed(packet);
    }
  } catch (err) {
    if (!(err instanceof CaptureError)) {
      tracker.close();
      output?.close();
      if (shownProgress) printRaw(io.stderr, "\r\x1b[K");
      return error(`${options.file}: ${err instanceof Error ? err.message : err}`);
    }
    if (shownProgress) printRaw(io.stderr, "\r\x1b[K");
    shownProgress = false;
    printLine(io.stderr, `netbird-ct replay: ${options.file}: ${err.message}`);
    code = 1;
  }
  if (shownProgress) printRaw(io.stderr, "\r\x1b[K");
  // The end of the capture ends every flow without an end record: the open ones and, with
  // --tcp-end expire, TCP flows in TIME-WAIT or closed, with every packet counted so far.
  tracker.close();
  output?.close();
  stats.outsideOverlay = feeder.stats.outsideOverlay;
  stats.fragments = feeder.stats.fragments;
  stats.ndp = feeder.stats.ndp;
  stats.tracked = feeder.stats.tracked;
  stats.flows = feeder.stats.flows;
  stats.records = sink.written;
  const truncation = reader.truncation;
  if (code === 0 && truncation !== undefined && warn) {
    printLine(
      io.stderr,
      `netbird-ct replay: warning: ${options.file}: ${truncation.message}; ` +
        "the records before it were replayed",
    );
  }
  if (info && code === 0) printLine(io.stderr, formatReplaySummary(stats));
  return code;
}

/**
 * Runs `netbird-ct replay ARGS`.
 *
 * @param args Arguments after `replay`.
 * @param io Output streams (default: the process's).
 * @returns The exit code: 0 done, 1 unreadable or malformed file, 2 usage error.
 */
export async function runReplay(
  args: string[],
  io: ReplayIo = {
    stdout: Deno.stdout,
    stderr: Deno.stderr,
    stderrIsTerminal: Deno.stderr.isTerminal(),
  },
): Promise<number> {
  let options: ReplayOptions;
  try {
    options = parseReplayArgs(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    printLine(io.stderr, `netbird-ct replay: ${err.message} (see netbird-ct replay --help)`);
    return 2;
  }
  if (options.help) {
    printLine(io.stdout, REPLAY_HELP);
    return 0;
  }
  return await replay(options, io);
}
