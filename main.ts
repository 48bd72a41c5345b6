/**
 * The `netbird-ct` command: parse, wire, run, exit code. Nothing runs on import.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import denoJson from "./deno.json" with { type: "json" };
import { openEventSource, openLibrary } from "./ffi/mod.ts";
import { openNflogSource } from "./ffi/nflog.ts";
import {
  type CliOptions,
  FLOW_TOKEN_ENV,
  flowToken,
  HELP,
  type InterfaceAddress,
  packetSourceArgs,
  parseCli,
  resolveOverlay,
  UsageError,
} from "./lib/cli/args.ts";
import { setupLogging, teardownLogging } from "./lib/cli/logging.ts";
import { DropTracker } from "./lib/drops.ts";
import { formatStats, type StatsSnapshot } from "./lib/cli/stats.ts";
import type { FlowClient } from "./lib/flowapi/client.ts";
import type { RedisUnackedStore } from "./lib/flowapi/unacked.ts";
import {
  Accounting,
  ConntrackTracker,
  fanOut,
  FlowIdGenerator,
  FlowLogger,
  IdleSource,
  IpfixExporter,
  JsonLinesSink,
  loadRoutes,
  Overlay,
  type RecordSink,
  RoutesError,
  RouteTable,
  type SyncWriter,
  WindowAggregator,
} from "./lib/mod.ts";

const log = getLogger(["netbird-ct"]);
const encoder = new TextEncoder();

/** The version printed by `--version`. */
export const VERSION: string = denoJson.version;

function printLine(stream: SyncWriter, text: string): void {
  let bytes = encoder.encode(text + "\n");
  while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
}

/**
 * Runs the CLI.
 *
 * @param args Command-line arguments, without the program name.
 * @returns The exit code: 0 normal stop, 1 runtime failure, 2 usage error.
 */
export async function main(args: string[]): Promise<number> {
  if (args[0] === "collect" || args[0] === "token") {
    // Loaded on demand: the Flow API receiver pulls in gRPC and Redis clients.
    const { runSubcommand } = await import("./lib/cli/collect.ts");
    return await runSubcommand(args[0], args.slice(1));
  }
  if (args[0] === "replay") {
    const { runReplay } = await import("./lib/cli/replay.ts");
    return await runReplay(args.slice(1));
  }
  // `--source packet --capture-interface IFACE` is the capture subcommand.
  const captureArgs = args[0] === "capture" ? args.slice(1) : packetSourceArgs(args);
  if (captureArgs !== undefined) {
    const { runCapture } = await import("./lib/cli/capture.ts");
    const { openPacketSocket } = await import("./ffi/packet_socket.ts");
    return await runCapture(captureArgs, (o) =>
      openPacketSocket({
        interface: o.interface,
        ...(o.netns === undefined ? {} : { netns: o.netns }),
      }));
  }
  let options: CliOptions;
  try {
    options = parseCli(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    printLine(Deno.stderr, `netbird-ct: ${err.message} (see netbird-ct --help)`);
    return 2;
  }
  if (options.help) {
    printLine(Deno.stdout, HELP);
    return 0;
  }
  if (options.version) {
    printLine(Deno.stdout, `netbird-ct ${VERSION}`);
    return 0;
  }
  setupLogging(options.logLevel);
  try {
    return await run(options);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (err instanceof UsageError) {
      printLine(Deno.stderr, `netbird-ct: ${message} (see netbird-ct --help)`);
      return 2;
    }
    log.debug("Failure details: {stack}", { stack: err instanceof Error ? err.stack : "" });
    printLine(Deno.stderr, `netbird-ct: ${message}`);
    return 1;
  } finally {
    teardownLogging();
  }
}

function listInterfaces(): InterfaceAddress[] {
  try {
    return Deno.networkInterfaces().map((i) => ({
      name: i.name,
      address: i.address,
      cidr: i.cidr,
    }));
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
      return [];
    }
    throw err;
  }
}

function openOutput(path: string): SyncWriter & { close?: () => void } {
  if (path === "-") return Deno.stdout;
  try {
    return Deno.openSync(path, { append: true, create: true });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`Cannot open --output "${path}": ${why}`);
  }
}

async function run(options: CliOptions): Promise<number> {
  const resolved = resolveOverlay(options, listInterfaces());
  const overlay = new Overlay({ networks: resolved.networks, addresses: resolved.addresses });
  let routes = RouteTable.EMPTY;
  if (options.routes !== undefined) {
    try {
      routes = await loadRoutes(options.routes);
    } catch (err) {
      if (err instanceof RoutesError) throw new UsageError(`invalid --routes: ${err.message}`);
      throw err;
    }
  }
  let token: string | undefined;
  if (options.flowUrl !== undefined) {
    const file = options.flowTokenFile;
    let fileText: string | undefined;
    if (file !== undefined) {
      try {
        fileText = await Deno.readTextFile(file);
      } catch (err) {
        const why = err instanceof Error ? err.message : String(err);
        throw new UsageError(`invalid --flow-token-file "${file}": ${why}`);
      }
    }
    token = flowToken(options, fileText, file === undefined ? Deno.env.get(FLOW_TOKEN_ENV) : "");
  }
  using lib = openLibrary();
  const out = openOutput(options.output);
  let flowClient: FlowClient | undefined;
  let redisStore: RedisUnackedStore | undefined;
  try {
    if (options.flowUrl !== undefined && token !== undefined && options.publicKey !== undefined) {
      // Loaded only when used: grpc-js and node-redis read the environment on import.
      const { FlowClient } = await import("./lib/flowapi/client.ts");
      const { MemoryUnackedStore, RedisUnackedStore } = await import("./lib/flowapi/unacked.ts");
      const publicKey = options.publicKey;
      redisStore = options.store === undefined ? undefined : await RedisUnackedStore.open(
        options.store,
        {
          maxEvents: options.unackedMax,
          // One peer's events per key: several netbird-ct may share a Redis.
          keyPrefix: `netbird-ct:unacked:${btoa(String.fromCharCode(...publicKey))}`,
        },
      );
      flowClient = new FlowClient({
        url: options.flowUrl,
        token,
        publicKey,
        intervalMs: options.windowMs ?? 60_000,
        store: redisStore ?? new MemoryUnackedStore({ maxEvents: options.unackedMax }),
      });
    }
    const sink = new JsonLinesSink(out);
    const client = flowClient;
    const windowSink: RecordSink = client === undefined ? sink : {
      write(records): void {
        client.write(records); // never throws; first, so that a failing output loses nothing
        sink.write(records);
      },
    };
    const aggregator = options.windowMs === undefined
      ? undefined
      : new WindowAggregator(windowSink, {
        windowMs: options.windowMs,
        maxEvents: options.maxEvents,
      });
    // IPFIX gets the logger's records (policy applied), one by one, next to the output chain.
    let lostEvents = (): number => 0;
    const exporter = options.ipfix.length === 0 ? undefined : new IpfixExporter({
      collectors: options.ipfix,
      observationDomainId: options.ipfixDomain,
      counters: options.ipfixCounters,
      mtu: options.ipfixMtu,
      templateRefreshMs: options.ipfixTemplateRefreshMs,
      queueSize: options.ipfixQueue,
      countOptionsRecords: options.ipfixSequence === "rfc",
      lostEvents: () => lostEvents(),
    });
    const outputChain: RecordSink = aggregator ?? sink;
    const logger = new FlowLogger(
      exporter === undefined ? outputChain : fanOut(exporter, outputChain),
      {
        overlay,
        routes,
        dnsCollection: options.dnsCollection,
        dnsPorts: options.dnsPorts,
        exitNodeCollection: options.exitNodeCollection,
      },
    );
    const stopped = Promise.withResolvers<number>();
    const tracker = new ConntrackTracker(
      () =>
        options.source === "nflog" ? new IdleSource() : openEventSource(lib, {
          rcvbufBytes: options.rcvbuf,
          reliableDestroy: options.reliableDestroy,
          ...(options.netns === undefined ? {} : { netns: options.netns }),
        }),
      logger,
      {
        overlay,
        emitExisting: options.emitExisting,
        ...(options.activeTimeoutMs === undefined
          ? {}
          : { activeTimeoutMs: options.activeTimeoutMs }),
        reliableDestroy: options.reliableDestroy,
        flowIds: new FlowIdGenerator(lib.flowNamespace(options.netns)),
        ...(options.counters
          ? {
            accounting: new Accounting(
              lib.sysctl("net.netfilter.nf_conntrack_acct", options.netns),
            ),
          }
          : {}),
        onFatal: () => stopped.resolve(1),
      },
    );
    lostEvents = () => tracker.stats().source.kernelDrops;
    // --nflog-group: packets the ruleset logs ("log group N prefix RULE-ID") become drop records
    // in the same logger chain.
    const nflogGroup = options.nflogGroup;
    const drops = nflogGroup === undefined ? undefined : new DropTracker(
      () =>
        openNflogSource(lib, {
          group: nflogGroup,
          ...(options.netns === undefined ? {} : { netns: options.netns }),
        }),
      logger,
      {
        overlay,
        onFatal: (err) => {
          log.error("NFLOG group {group} failed: {error}", {
            group: nflogGroup,
            error: err instanceof Error ? err.message : String(err),
          });
          stopped.resolve(1);
        },
      },
    );
    const snapshot = (): StatsSnapshot => {
      const memory = Deno.memoryUsage();
      return {
        tracker: tracker.stats(),
        written: sink.written,
        logger: logger.stats(),
        ...(aggregator === undefined ? {} : { windows: aggregator.stats() }),
        ...(client === undefined ? {} : { flow: client.stats() }),
        ...(exporter === undefined ? {} : { ipfix: exporter.stats() }),
        at: performance.now(),
        rss: memory.rss,
        heapUsed: memory.heapUsed,
      };
    };
    let last: StatsSnapshot | undefined;
    const statsTimer = options.statsIntervalMs > 0
      ? setInterval(() => {
        const now = snapshot();
        log.info("stats: {line}", { line: formatStats(now, last) });
        last = now;
      }, options.statsIntervalMs)
      : undefined;
    const onSignal = (): void => stopped.resolve(0);
    const onHangup = (): void => {
      if (options.routes === undefined) return;
      const path = options.routes;
      loadRoutes(path).then((table) => {
        logger.setRoutes(table);
        log.info("Reloaded {path}: {size} routes and addresses", { path, size: table.size });
      }, (err) => {
        log.warning("Cannot reload {path}, keeping the previous routes: {error}", {
          path,
          error: err instanceof Error ? err.message : String(err),
        });
      });
    };
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
    Deno.addSignalListener("SIGHUP", onHangup);
    try {
      client?.start();
      await tracker.start();
      if (drops !== undefined) {
        drops.start();
        log.info("Listening for NFLOG group {group} (drop records)", { group: nflogGroup });
      }
      log.info(
        "Tracking overlay {networks} ({origin}), own addresses {addresses}, output {output}",
        {
          networks: overlay.networks.map(String).join(", "),
          origin: resolved.origin,
          addresses: overlay.addresses.join(", ") || "none",
          output: options.output === "-" ? "stdout" : options.output,
        },
      );
      last = snapshot();
      const code = await stopped.promise;
      await tracker.stop();
      await drops?.stop();
      if (drops !== undefined) {
        const d = drops.stats();
        log.info(
          "NFLOG group {group}: drops={drops} received={received} overruns={overruns} " +
            "undecodable={undecodable} not_overlay={irrelevant}",
          { group: nflogGroup, ...d, ...d.source },
        );
      }
      aggregator?.close(); // the last window goes to the flow client too
      await exporter?.close(); // sends what is queued, bounded
      const unacked = (await client?.close())?.unacked ?? 0; // at most 2 s
      log.info("Stopped. Summary: {line}", { line: formatStats(snapshot()) });
      if (unacked > 0) {
        if (options.store !== undefined) {
          log.warning(
            "Flow API: {n} events not acknowledged yet: kept in {store}, resent on the next start",
            { n: unacked, store: options.store.replace(/\/\/[^@/]*@/, "//***@") },
          );
        } else {
          log.warning(
            "Flow API: {n} events not acknowledged: lost at exit (--store keeps them for the " +
              "next start)",
            { n: unacked },
          );
        }
      }
      return code;
    } finally {
      clearInterval(statsTimer);
      await tracker.stop();
      await drops?.stop();
      aggregator?.close();
      await exporter?.close();
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
      Deno.removeSignalListener("SIGHUP", onHangup);
    }
  } finally {
    flowClient?.[Symbol.dispose]();
    await redisStore?.close();
    out.close?.();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
