/**
 * Access tokens: one `getToken` callback supplied by the app, called when a token is needed,
 * again (with `forceRefresh`) when the server refused the last one, and ahead of `exp`.
 */

export interface TokenRequest {
  /**
   * `true` when the last token was refused or is about to expire: return a fresh one (for
   * example `auth().currentUser.getIdToken(true)`), not a cached copy.
   */
  forceRefresh: boolean;
}

/** Supplies the user's access token (a JWT the backend verifies). */
export type GetToken = (request: TokenRequest) => string | Promise<string>;

/** The claims of a JWT, or `null` for anything that is not one. Signature is not checked. */
export function decodeJwtClaims(token: string): Record<string, unknown> | null {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[1]) return null;
  try {
    const claims: unknown = JSON.parse(base64UrlToBinaryString(parts[1]));
    return claims && typeof claims === 'object' && !Array.isArray(claims) ? (claims as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** A JWT's `exp` in milliseconds since the epoch, or `null` when it has none. */
export function tokenExpiry(token: string): number | null {
  const exp = decodeJwtClaims(token)?.exp;
  return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null;
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * Decodes base64url into a "binary string" (one char per byte). Hand-written because neither
 * `atob` nor `Buffer` exists on every React Native engine; the claims we read (`exp`, the user
 * id) survive the lack of UTF-8 decoding for ASCII values, and JSON.parse accepts the rest.
 */
function base64UrlToBinaryString(input: string): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const ch of input.replace(/=+$/, '')) {
    const index = ALPHABET.indexOf(ch === '+' ? '-' : ch === '/' ? '_' : ch);
    if (index < 0) throw new Error('not base64url');
    value = (value << 6) | index;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += String.fromCharCode((value >> bits) & 0xff);
    }
  }
  return out;
}

/**
 * Caches the current token and coalesces concurrent requests, so a burst of 401s or reconnects
 * asks the app for one fresh token, not one each.
 */
export class TokenSource {
  private current: string | null = null;
  private inflight: Promise<string> | null = null;
  private inflightForced = false;

  constructor(private readonly getToken: GetToken) {}

  /**
   * The cached token, or a new one from the app: always with `forceRefresh`, and when the cached
   * JWT expires within 10 s (an app that slept past it would otherwise be refused once first).
   */
  async get(forceRefresh = false): Promise<string> {
    if (!forceRefresh && this.current !== null) {
      const exp = tokenExpiry(this.current);
      if (exp === null || exp - Date.now() > 10_000) return this.current;
      forceRefresh = true;
    }
    if (this.inflight && (this.inflightForced || !forceRefresh)) return this.inflight;
    const request = Promise.resolve()
      .then(() => this.getToken({ forceRefresh }))
      .then((token) => {
        if (typeof token !== 'string' || token.length === 0) throw new TypeError('getToken must return a non-empty string');
        this.current = token;
        return token;
      })
      .finally(() => {
        if (this.inflight === request) this.inflight = null;
      });
    this.inflight = request;
    this.inflightForced = forceRefresh;
    return request;
  }

  /** Forgets `token` if it is the cached one (the server refused it). */
  invalidate(token?: string): void {
    if (token === undefined || token === this.current) this.current = null;
  }

  /** The token last handed out, without asking the app. */
  peek(): string | null {
    return this.current;
  }
}
