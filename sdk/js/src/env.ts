// What differs between Node and a browser: the WebSocket constructor (Node's
// `ws` can set headers on the upgrade, a browser's cannot) and where WebCrypto
// lives. Everything else in the SDK is the same code on both.

/** The subset of a WebSocket the SDK uses; both `ws` and the browser's fit it. */
export interface WebSocketLike {
  readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
}

/** A WebSocket constructor; `options` is only passed to Node's `ws`. */
export type WebSocketConstructor = new (url: string, protocols?: any, options?: any) => WebSocketLike;

export const isNode: boolean =
  typeof process !== 'undefined' && !!(process as any).versions && !!(process as any).versions.node &&
  typeof (globalThis as any).window === 'undefined';

let nodeWs: Promise<WebSocketConstructor> | undefined;

/** Node: the `ws` package (headers on the upgrade); a browser: the native WebSocket. */
export function defaultWebSocket(): Promise<WebSocketConstructor> {
  if (isNode) {
    // Loaded lazily so that the browser build never touches it.
    nodeWs ??= import('ws').then((m: any) => (m.WebSocket ?? m.default ?? m) as WebSocketConstructor);
    return nodeWs;
  }
  const WS = (globalThis as any).WebSocket;
  if (!WS) return Promise.reject(new Error('no WebSocket in this environment: pass the WebSocket option'));
  return Promise.resolve(WS);
}

let subtle: Promise<SubtleCrypto> | undefined;

/** WebCrypto's subtle: global in browsers and Node ≥ 19, node:crypto's webcrypto in Node 18. */
function getSubtle(): Promise<SubtleCrypto> {
  subtle ??= (async () => {
    const c = (globalThis as any).crypto;
    if (c && c.subtle) return c.subtle as SubtleCrypto;
    const m: any = await import('node:crypto');
    return (m.webcrypto ?? m.default.webcrypto).subtle as SubtleCrypto;
  })();
  return subtle;
}

const enc = new TextEncoder();

function hex(buf: ArrayBuffer): string {
  const b = new Uint8Array(buf);
  let s = '';
  for (let i = 0; i < b.length; i++) s += b[i].toString(16).padStart(2, '0');
  return s;
}

export async function sha256Hex(data: string | Uint8Array): Promise<string> {
  const s = await getSubtle();
  return hex(await s.digest('SHA-256', (typeof data === 'string' ? enc.encode(data) : data) as BufferSource));
}

export async function hmacSha256Hex(secret: string, text: string): Promise<string> {
  const s = await getSubtle();
  const key = await s.importKey('raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return hex(await s.sign('HMAC', key, enc.encode(text)));
}

/** The signature of docs/protocol.md, Credentials. */
export function signatureText(method: string, pathWithQuery: string, timestamp: string, bodySha256Hex: string): string {
  return `${method.toUpperCase()}\n${pathWithQuery}\n${timestamp}\n${bodySha256Hex}`;
}

/** A random id: prefix and 24 hex digits, never 13 decimal digits in a row. */
export function randomId(prefix: string): string {
  for (;;) {
    const b = new Uint8Array(12);
    const c = (globalThis as any).crypto;
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (let i = 0; i < b.length; i++) b[i] = Math.floor(Math.random() * 256);
    let s = prefix;
    for (const x of b) s += x.toString(16).padStart(2, '0');
    // The hub refuses text holding what looks like a card number (13 to 19
    // digits that pass the Luhn check), an Idempotency-Key included, and 24
    // random hex digits can hold such a run: a draw with 13 decimal digits
    // in a row is made again, so that a payment never fails on a key the
    // SDK chose.
    if (!/[0-9]{13}/.test(s)) return s;
  }
}
