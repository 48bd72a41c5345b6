/**
 * Flow API tokens: the `authorization: Bearer <signature>.<payload>` metadata NetBird's flow
 * client sends on every stream. The scheme is NetBird's TimedHMAC (as used for its relay and TURN
 * credentials): the payload is the expiry time in Unix seconds as a decimal string, the signature
 * is the standard base64 (with padding) of HMAC-SHA256(secret, payload).
 *
 * A token proves that whoever made it knows the secret, and until when it may be used. Tokens are
 * not bound to a peer: anyone holding a valid token can send events as any reporter.
 *
 * @module
 */

import { createHmac, timingSafeEqual } from "node:crypto";

/** Shortest secret accepted, in bytes (HMAC-SHA256 keys shorter than this are guessable). */
export const MIN_SECRET_BYTES = 16;

/** Why a token was refused. */
export type TokenFailure = "missing" | "malformed" | "expired" | "forged";

/** A refused token; `reason` says why. */
export class TokenError extends Error {
  /** The error name, `"TokenError"`. */
  override name = "TokenError";
  /** Why the token was refused. */
  readonly reason: TokenFailure;

  /**
   * Creates the error.
   *
   * @param reason Why the token was refused.
   * @param message A one-line description.
   */
  constructor(reason: TokenFailure, message: string) {
    super(message);
    this.reason = reason;
  }
}

/** Options of {@linkcode mintToken}. */
export interface MintOptions {
  /** How long the token is valid, in ms (at least 1000). */
  ttlMs: number;
  /** The current time, ms since the epoch (default: `Date.now()`). */
  now?: number;
}

/** Options of {@linkcode verifyToken}. */
export interface VerifyOptions {
  /** The current time, ms since the epoch (default: `Date.now()`). */
  now?: number;
}

/** What a valid token says. */
export interface VerifiedToken {
  /** When the token stops being valid. */
  expiresAt: Date;
}

function checkSecret(secret: Uint8Array): void {
  if (secret.length < MIN_SECRET_BYTES) {
    throw new RangeError(
      `Cannot use token secret: it has ${secret.length} bytes, want at least ${MIN_SECRET_BYTES}`,
    );
  }
}

function sign(secret: Uint8Array, payload: string): string {
  return createHmac("sha256", secret).update(payload).digest("base64");
}

/**
 * Makes a token `<signature>.<payload>` that expires `ttlMs` from now (rounded down to a second).
 *
 * @param secret The shared secret (at least {@linkcode MIN_SECRET_BYTES} bytes).
 * @param options The validity.
 * @returns The token, without the `Bearer ` prefix.
 * @throws {RangeError} When the secret is too short or `ttlMs` is below one second.
 *
 * @example Usage
 * ```ts
 * import { mintToken, verifyToken } from "./token.ts";
 * const secret = new TextEncoder().encode("0123456789abcdef0123456789abcdef");
 * const token = mintToken(secret, { ttlMs: 3_600_000 });
 * const { expiresAt } = verifyToken(secret, token);
 * if (expiresAt.getTime() <= Date.now()) throw new Error("should not have expired yet");
 * ```
 */
export function mintToken(secret: Uint8Array, options: MintOptions): string {
  checkSecret(secret);
  if (!Number.isFinite(options.ttlMs) || options.ttlMs < 1000) {
    throw new RangeError(`Cannot mint token: ttl is ${options.ttlMs} ms, want at least 1000`);
  }
  const payload = String(Math.floor(((options.now ?? Date.now()) + options.ttlMs) / 1000));
  return `${sign(secret, payload)}.${payload}`;
}

/**
 * Checks a token: its shape, then its signature (compared in constant time), then its expiry.
 *
 * @param secret The shared secret.
 * @param token `<signature>.<payload>`, without the `Bearer ` prefix.
 * @param options The current time, for tests.
 * @returns What the token says.
 * @throws {TokenError} With reason `malformed`, `forged` or `expired`.
 *
 * @example A token signed with another secret
 * ```ts
 * import { mintToken, TokenError, verifyToken } from "./token.ts";
 * const enc = new TextEncoder();
 * const token = mintToken(enc.encode("the other secret, 32 bytes long!"), { ttlMs: 60_000 });
 * try {
 *   verifyToken(enc.encode("0123456789abcdef0123456789abcdef"), token);
 *   throw new Error("accepted a forged token");
 * } catch (err) {
 *   if (!(err instanceof TokenError) || err.reason !== "forged") throw err;
 * }
 * ```
 */
export function verifyToken(
  secret: Uint8Array,
  token: string,
  options: VerifyOptions = {},
): VerifiedToken {
  checkSecret(secret);
  const m = /^([A-Za-z0-9+/]{43}=)\.([0-9]{1,12})$/.exec(token);
  if (m === null) {
    throw new TokenError(
      "malformed",
      "Cannot verify token: expected <base64 HMAC-SHA256>.<expiry in Unix seconds>",
    );
  }
  const [, signature, payload] = m as unknown as [string, string, string];
  const expected = sign(secret, payload);
  // Both are 44 ASCII characters here, so the comparison takes the same time for every input.
  if (!timingSafeEqual(new TextEncoder().encode(signature), new TextEncoder().encode(expected))) {
    throw new TokenError("forged", "Cannot verify token: signature does not match");
  }
  const expiresAt = new Date(Number(payload) * 1000);
  if (expiresAt.getTime() <= (options.now ?? Date.now())) {
    throw new TokenError(
      "expired",
      `Cannot verify token: expired at ${expiresAt.toISOString()}`,
    );
  }
  return { expiresAt };
}

/**
 * Extracts the token from the values of an `authorization` header or metadata entry:
 * exactly one value, `Bearer <token>` (scheme case-insensitive).
 *
 * @param values Every value the request carried for `authorization`.
 * @returns The token.
 * @throws {TokenError} With reason `missing` (no value) or `malformed`.
 *
 * @example Usage
 * ```ts
 * import { bearerToken } from "./token.ts";
 * if (bearerToken(["Bearer abc.123"]) !== "abc.123") throw new Error("wrong token");
 * ```
 */
export function bearerToken(values: readonly string[]): string {
  if (values.length === 0) {
    throw new TokenError("missing", "Missing authorization: expected Bearer <signature>.<payload>");
  }
  if (values.length > 1) {
    throw new TokenError("malformed", `Cannot use authorization: ${values.length} values given`);
  }
  const m = /^bearer +(\S+)$/i.exec(values[0]!.trim());
  if (m === null) {
    throw new TokenError(
      "malformed",
      "Cannot use authorization: expected Bearer <signature>.<payload>",
    );
  }
  return m[1]!;
}
