/**
 * Small internal helpers shared by modules that wait on timers. Not part of the public API.
 *
 * @module
 */

/**
 * Resolves `true` after `ms`, or `false` as soon as `signal` aborts (the timer is cleared).
 *
 * @param ms Milliseconds to wait.
 * @param signal Cancels the wait.
 * @returns Whether the full time passed.
 */
export function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * The message of an error, or its text for anything else that was thrown.
 *
 * @param err What was thrown.
 * @returns One line of text.
 */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
