/**
 * The `netbird-ct` command: parse, wire, run, exit code. Nothing runs on import.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import denoJson from "./deno.json" with { type: "json" };
import { openEventSource, openLibrary } from "./ffi/mod.ts";
import {
  type CliOptions,
  HELP,
  type InterfaceAddress,
  parseCli,
  resolveOverlay,
  UsageError,
} from "./lib/cli/args.ts";
import { setupLogging, teardownLogging } from "./lib/cli/logging.ts";
import { formatStats, type StatsSnapshot } from "./lib/cli/stats.ts";
import {
  Accounting,
  ConntrackTracker,
  FlowIdGenerator,
  FlowLogger,
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
  using lib = openLibrary();
  const out = openOutput(options.output);
  try {
    const sink = new JsonLinesSink(out);
    const aggregator = options.windowMs === undefined ? undefined : new WindowAggregator(sink, {
      windowMs: options.windowMs,
      maxEvents: options.maxEvents,
    });
    const logger = new FlowLogger(aggregator ?? (sink as RecordSink), {
      overlay,
      routes,
      dnsCollection: options.dnsCollection,
      dnsPorts: options.dnsPorts,
      exitNodeCollection: options.exitNodeCollection,
    });
    const stopped = Promise.withResolvers<number>();
    const tracker = new ConntrackTracker(
      () =>
        openEventSource(lib, {
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
    const snapshot = (): StatsSnapshot => {
      const memory = Deno.memoryUsage();
      return {
        tracker: tracker.stats(),
        written: sink.written,
        logger: logger.stats(),
        ...(aggregator === undefined ? {} : { windows: aggregator.stats() }),
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
      await tracker.start();
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
      aggregator?.close();
      log.info("Stopped. Summary: {line}", { line: formatStats(snapshot()) });
      return code;
    } finally {
      clearInterval(statsTimer);
      await tracker.stop();
      aggregator?.close();
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
      Deno.removeSignalListener("SIGHUP", onHangup);
    }
  } finally {
    out.close?.();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
