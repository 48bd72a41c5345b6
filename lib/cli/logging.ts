/**
 * Logging for the CLI: LogTape, one line per record, written synchronously to stderr so that the
 * last lines before an exit are never lost.
 *
 * @module
 */

import { configureSync, getTextFormatter, type LogLevel, resetSync } from "@logtape/logtape";

/** Log levels accepted by `--log-level`. */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;

/** One of {@linkcode LOG_LEVELS}. */
export type CliLogLevel = typeof LOG_LEVELS[number];

/**
 * Sends the `netbird-ct` logger category to stderr at `level` and above.
 *
 * @param level Lowest level written.
 * @param write Where formatted lines go (default: synchronous stderr).
 */
export function setupLogging(level: CliLogLevel, write?: (line: string) => void): void {
  const encoder = new TextEncoder();
  const out = write ?? ((line: string): void => {
    let bytes = encoder.encode(line);
    while (bytes.length > 0) bytes = bytes.subarray(Deno.stderr.writeSync(bytes));
  });
  const format = getTextFormatter({
    timestamp: "date-time-timezone",
    category: ".",
    value: (v) => typeof v === "string" ? v : Deno.inspect(v),
  });
  resetSync();
  configureSync({
    reset: true,
    sinks: { stderr: (record) => out(format(record)) },
    loggers: [
      { category: ["netbird-ct"], lowestLevel: level as LogLevel, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

/** Removes the logging configuration (tests, and before exit). */
export function teardownLogging(): void {
  resetSync();
}
