import { TermhubError } from './errors.js';
import {
  defaultWebSocket, hmacSha256Hex, isNode, randomId, sha256Hex, signatureText,
  type WebSocketConstructor, type WebSocketLike,
} from './env.js';
import type {
  CaptureMode, ConnectedMessage, DurableMessage, ErrorMessage, ForceDisconnectMessage, PaymentReply,
  PaymentRequest, PaymentVoidedMessage, SignatureRequiredMessage, Status, TerminalInfo,
  TerminalStatusUpdateMessage, Transaction, TransactionPage, TransactionReply,
} from './types.js';
import type {
  CursorStore, DisconnectInfo, DisplacedInfo, ListTransactionsQuery, PayOptions, PosClientEvents, PosClientOptions, SignFunction,
} from './options.js';
export type {
  CursorStore, DisconnectInfo, DisplacedInfo, ListTransactionsQuery, PayOptions, PosClientEvents, PosClientOptions, SignFunction,
} from './options.js';

type Handler<T> = (arg: T) => unknown;

const FINAL: ReadonlySet<string> = new Set(['COMPLETED', 'DECLINED', 'FAILED', 'CANCELLED', 'TIMED_OUT', 'SUPERSEDED', 'VOIDED']);

/** True when the transaction will not change any more (for a manual sale, AUTHORIZED ends pay() too). */
export function isFinal(t: Transaction, captureMode?: CaptureMode): boolean {
  return FINAL.has(t.status) || (t.status === 'AUTHORIZED' && (captureMode ?? t.captureMode) === 'manual');
}

/** Compares two stream ids "ms-seq" numerically. */
export function compareMessageIds(a: string, b: string): number {
  const [am, as] = a.split('-');
  const [bm, bs] = b.split('-');
  const d = BigInt(am) - BigInt(bm);
  if (d !== 0n) return d < 0n ? -1 : 1;
  const e = BigInt(as ?? '0') - BigInt(bs ?? '0');
  return e === 0n ? 0 : e < 0n ? -1 : 1;
}

interface PayWaiter {
  captureMode?: CaptureMode;
  lastVersion: number;
  onUpdate?: (t: Transaction) => void | Promise<void>;
  resolve: (t: Transaction) => void;
  reject: (e: unknown) => void;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class PosClient {
  private readonly opts: PosClientOptions;
  private readonly fetchFn: typeof fetch;
  private readonly signFn: SignFunction;
  private readonly credMode: 'header' | 'query';
  private readonly handlers = new Map<string, Set<Handler<any>>>();

  private sock: WebSocketLike | null = null;
  private greeting: ConnectedMessage | null = null;
  private connecting: Promise<ConnectedMessage> | null = null;
  private wantOpen = false;
  private stopped: TermhubError | null = null;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private lastForce: ForceDisconnectMessage | null = null;

  /** The last messageId processed (and saved); older ones are dropped. */
  private cursor: string | null = null;
  private cursorLoaded = false;
  private lastAck: string | null = null;
  /** Highest version pushed per transaction (for the `transaction` event). */
  private readonly pushedVersion = new Map<string, number>();
  /** Durable messages are handled one at a time, in order. */
  private chain: Promise<void> = Promise.resolve();
  private readonly waiters = new Map<string, Set<PayWaiter>>();
  private readonly latest = new Map<string, Transaction>();
  private readonly lastTimestamp = new Map<string, number>();

  constructor(opts: PosClientOptions) {
    if (!opts.baseUrl) throw new TypeError('baseUrl is required');
    if (!opts.apiKey) throw new TypeError('apiKey is required');
    if (!opts.secret && !opts.sign) throw new TypeError('secret or sign is required');
    this.opts = opts;
    const f = opts.fetch ?? (globalThis as any).fetch;
    if (!f) throw new TypeError('no fetch in this environment: pass the fetch option');
    this.fetchFn = f.bind(globalThis);
    this.signFn = opts.sign ?? ((m, p, t, h) => hmacSha256Hex(opts.secret!, signatureText(m, p, t, h)));
    this.credMode = opts.credentials ?? (isNode ? 'header' : 'query');
  }

  // ---------------- events ----------------

  on<K extends keyof PosClientEvents>(event: K, handler: (arg: PosClientEvents[K]) => unknown): this {
    let s = this.handlers.get(event);
    if (!s) this.handlers.set(event, (s = new Set()));
    s.add(handler);
    return this;
  }

  off<K extends keyof PosClientEvents>(event: K, handler: (arg: PosClientEvents[K]) => unknown): this {
    this.handlers.get(event)?.delete(handler);
    return this;
  }

  /** Calls every handler and waits for their promises; the first failure is thrown. */
  private async emitAsync(event: string, arg: unknown): Promise<void> {
    const s = this.handlers.get(event);
    if (!s || s.size === 0) return;
    await Promise.all([...s].map(async (h) => h(arg)));
  }

  /** For events nothing waits on: a failing handler must not break the connection. */
  private emit(event: string, arg: unknown): void {
    this.emitAsync(event, arg).catch(() => {});
  }

  // ---------------- connection ----------------

  /** The greeting of the current connection, or null while not connected. */
  get connection(): ConnectedMessage | null {
    return this.greeting;
  }

  /** Opens the POS WebSocket; resolves with the `connected` greeting. */
  async connect(): Promise<ConnectedMessage> {
    if (this.greeting && this.sock) return this.greeting;
    if (this.connecting) return this.connecting;
    this.wantOpen = true;
    this.stopped = null;
    this.connecting = (async () => {
      try {
        if (!this.cursorLoaded && this.opts.store) {
          const c = await this.opts.store.load();
          if (c) this.cursor = c;
        }
        this.cursorLoaded = true;
        return await this.dial();
      } finally {
        this.connecting = null;
      }
    })();
    return this.connecting;
  }

  private async wsUrl(): Promise<{ url: string; headers?: Record<string, string> }> {
    const u = new URL(this.opts.baseUrl);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    const path = '/v1/pos/ws';
    const ts = String(Math.floor(Date.now() / 1000));
    const sig = await this.signFn('GET', path, ts, await sha256Hex(''));
    const base = `${u.protocol}//${u.host}${path}`;
    if (this.credMode === 'query') {
      const q = new URLSearchParams({ apiKey: this.opts.apiKey, timestamp: ts, signature: sig });
      return { url: `${base}?${q}` };
    }
    return { url: base, headers: { 'X-Api-Key': this.opts.apiKey, 'X-Timestamp': ts, 'X-Signature': sig } };
  }

  /** One dial: resolves on the greeting, rejects if the upgrade fails or the socket closes first. */
  private async dial(): Promise<ConnectedMessage> {
    const WS = this.opts.WebSocket ?? (await defaultWebSocket());
    const { url, headers } = await this.wsUrl();
    const sock: WebSocketLike = headers && isNode ? new WS(url, undefined, { headers }) : new WS(url);
    return new Promise<ConnectedMessage>((resolve, reject) => {
      let greeted = false;
      let failure: TermhubError | null = null;
      const timer = setTimeout(() => {
        failure = new TermhubError('network', 'no greeting from the hub in time');
        try { sock.close(); } catch { /* closing is best effort */ }
        settleFail();
      }, this.opts.connectTimeoutMs ?? 15000);
      const settleFail = () => {
        if (greeted) return;
        greeted = true; // settled
        clearTimeout(timer);
        reject(failure ?? new TermhubError('network', 'the WebSocket closed before the greeting'));
      };
      // `ws` tells the refused upgrade's status and body; a browser cannot.
      const anySock = sock as any;
      if (typeof anySock.on === 'function') {
        anySock.on('unexpected-response', (req: any, res: any) => {
          let body = '';
          res.on('data', (c: any) => { body += c; });
          res.on('end', () => {
            failure = errorFromBody(res.statusCode, body, res.headers?.['retry-after']);
            req.destroy();
            settleFail();
          });
        });
      }
      sock.onerror = () => { /* the close that follows decides */ };
      sock.onclose = (ev) => {
        if (!greeted) { settleFail(); return; }
        if (this.sock === sock) this.onSocketClosed(ev.code, ev.reason);
      };
      sock.onmessage = (ev) => {
        let m: any;
        try { m = JSON.parse(typeof ev.data === 'string' ? ev.data : String(ev.data)); } catch { return; }
        if (!greeted) {
          if (m && m.action === 'connected') {
            greeted = true;
            clearTimeout(timer);
            this.sock = sock;
            this.greeting = m;
            this.lastForce = null;
            this.attempt = 0;
            // Tells the hub what a previous run of the app already processed.
            if (this.cursor) this.sendAck(this.cursor);
            this.emit('connected', m);
            resolve(m);
          }
          return;
        }
        if (this.sock === sock) this.onFrame(m);
      };
    });
  }

  private onFrame(m: any): void {
    if (!m || typeof m.action !== 'string') return;
    if (typeof m.messageId === 'string') {
      const sock = this.sock;
      this.chain = this.chain.then(() => this.handleDurable(m as DurableMessage, sock));
      return;
    }
    switch (m.action) {
      case 'terminalStatusUpdate':
        this.emit('terminalStatus', m);
        break;
      case 'forceDisconnect':
        this.lastForce = m;
        break;
      case 'error': {
        const e = m as ErrorMessage;
        // An ack Redis did not store: the hub asks for it again.
        if (e.code === 'unavailable' && this.lastAck) this.sendAck(this.lastAck);
        this.emit('error', new TermhubError(e.code, e.message, { field: e.field, retryAfter: e.retryAfter }));
        break;
      }
    }
  }

  private async handleDurable(m: DurableMessage, sock: WebSocketLike | null): Promise<void> {
    // A message after whose handling this connection failed is replayed on the next one.
    if (sock !== this.sock) return;
    if (this.cursor && compareMessageIds(m.messageId, this.cursor) <= 0) {
      this.sendAck(m.messageId); // already processed; the hub had not got the ack
      return;
    }
    const t = m.transaction;
    if (t) this.remember(t);
    const prev = this.pushedVersion.get(m.transactionId) ?? 0;
    if (t && m.version > prev) {
      try {
        await Promise.all([
          this.emitAsync('message', m),
          this.emitAsync('transaction', t),
          m.action === 'paymentVoided' ? this.emitAsync('paymentVoided', m) : undefined,
          m.action === 'signatureRequired' ? this.emitAsync('signatureRequired', m) : undefined,
          this.updateWaiters(t),
        ]);
      } catch (error) {
        // Not acked: drop the connection so the hub sends it again.
        this.emit('handlerError', { error, message: m });
        if (this.sock === sock) { try { sock?.close(4000, 'handler failed'); } catch { /* best effort */ } }
        return;
      }
      this.pushedVersion.set(m.transactionId, m.version);
      if (this.pushedVersion.size > 10000) this.pushedVersion.delete(this.pushedVersion.keys().next().value!);
    }
    this.cursor = m.messageId;
    if (this.opts.store) {
      try {
        await this.opts.store.save(m.messageId);
      } catch (error) {
        this.emit('handlerError', { error, message: m });
        if (this.sock === sock) { try { sock?.close(4000, 'store failed'); } catch { /* best effort */ } }
        return;
      }
    }
    this.sendAck(m.messageId);
    this.settleWaiters(t);
  }

  private sendAck(messageId: string): void {
    this.lastAck = messageId;
    const s = this.sock;
    if (s && s.readyState === 1) s.send(JSON.stringify({ action: 'ack', messageId }));
  }

  private onSocketClosed(code: number, reason: string): void {
    this.sock = null;
    this.greeting = null;
    const fd = this.lastForce;
    this.lastForce = null;
    let willReconnect = this.wantOpen && this.opts.reconnect !== false;
    if (fd && (!fd.reconnectAllowed || (fd.reason === 'api_key_used_elsewhere' && !this.opts.reconnectWhenDisplaced))) {
      willReconnect = false;
    }
    this.emit('disconnected', { code, reason, forceDisconnect: fd ?? undefined, willReconnect });
    if (fd && (fd.reason === 'api_key_used_elsewhere' || !fd.reconnectAllowed)) {
      this.emit('displaced', { reason: fd.reason, message: fd.message, reconnectAllowed: fd.reconnectAllowed });
    }
    if (willReconnect) {
      this.scheduleReconnect();
    } else if (this.wantOpen) {
      this.wantOpen = false;
      this.stopped = new TermhubError(fd ? 'displaced' : 'network', fd ? `${fd.reason}: ${fd.message}` : `connection closed (${code})`);
      this.rejectWaiters(this.stopped);
    }
  }

  private scheduleReconnect(): void {
    const r = this.opts.reconnect || {};
    const min = r.minDelayMs ?? 200;
    const max = r.maxDelayMs ?? 5000;
    // Full jitter: clients that lost the hub together do not come back together.
    const delay = Math.random() * Math.min(max, min * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    this.reconnectTimer = setTimeout(async () => {
      this.reconnectTimer = null;
      if (!this.wantOpen) return;
      try {
        const g = await this.dial();
        if (!this.wantOpen) { this.sock?.close(1000); return; }
        this.emit('reconnected', g);
        this.recheckWaiters();
      } catch {
        if (this.wantOpen) this.scheduleReconnect();
      }
    }, delay);
  }

  /** Ends the connection and stops reconnecting; pending pay() calls reject with `closed`. */
  async close(): Promise<void> {
    this.wantOpen = false;
    if (this.reconnectTimer) { clearTimeout(this.reconnectTimer); this.reconnectTimer = null; }
    this.rejectWaiters(new TermhubError('closed', 'the client was closed'));
    const s = this.sock;
    this.sock = null;
    this.greeting = null;
    if (s && s.readyState <= 1) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 2000);
        s.onclose = () => { clearTimeout(t); resolve(); };
        s.close(1000, 'client closed');
      });
    }
  }

  // ---------------- pay() and its waiters ----------------

  /**
   * Starts a sale and resolves with the transaction once it is final (any final
   * status; AUTHORIZED for a manual capture). It survives dropped sockets and
   * hub restarts: the promise stays pending while the SDK reconnects.
   */
  async pay(req: PaymentRequest, opts: PayOptions = {}): Promise<Transaction> {
    await this.connect();
    const idempotencyKey = opts.idempotencyKey ?? req.idempotencyKey ?? randomId('idem_');
    const body: Record<string, unknown> = { ...req };
    delete body.idempotencyKey;
    const reply = await this.rest<PaymentReply>('POST', '/v1/payments', undefined, body, idempotencyKey);
    const t = reply.transaction;
    return new Promise<Transaction>((resolve, reject) => {
      if (this.stopped) { reject(this.stopped); return; }
      const w: PayWaiter = { captureMode: req.captureMode, lastVersion: 0, onUpdate: opts.onUpdate, resolve, reject };
      let s = this.waiters.get(t.id);
      if (!s) this.waiters.set(t.id, (s = new Set()));
      s.add(w);
      // The reply may be older than a push that already arrived, or already final.
      this.observe(t);
      const known = this.latest.get(t.id);
      if (known && known.version > t.version) this.observe(known);
      // An existing sale (same reference or Idempotency-Key) is answered as it
      // was at the first response: its final may have been pushed long ago.
      if (!reply.created) this.getTransaction(t.id).then((c) => this.observe(c), () => {});
    });
  }

  /** A transaction read over REST: tells pay() waiters about it. */
  private observe(t: Transaction): void {
    this.remember(t);
    this.updateWaiters(t).then(() => this.settleWaiters(t), () => this.settleWaiters(t));
  }

  /** The newest version seen of recent transactions, for a pay() that starts after its pushes. */
  private remember(t: Transaction): void {
    const k = this.latest.get(t.id);
    if (k && k.version >= t.version) return;
    this.latest.delete(t.id);
    this.latest.set(t.id, t);
    if (this.latest.size > 1000) this.latest.delete(this.latest.keys().next().value!);
  }

  private async updateWaiters(t: Transaction): Promise<void> {
    const s = this.waiters.get(t.id);
    if (!s) return;
    await Promise.all([...s].map(async (w) => {
      if (t.version <= w.lastVersion) return;
      w.lastVersion = t.version;
      if (w.onUpdate) await w.onUpdate(t);
    }));
  }

  private settleWaiters(t: Transaction): void {
    const s = this.waiters.get(t.id);
    if (!s) return;
    for (const w of [...s]) {
      if (isFinal(t, w.captureMode) && t.version >= w.lastVersion) {
        s.delete(w);
        w.resolve(t);
      }
    }
    if (s.size === 0) this.waiters.delete(t.id);
  }

  private rejectWaiters(e: unknown): void {
    for (const s of this.waiters.values()) for (const w of s) w.reject(e);
    this.waiters.clear();
  }

  /** After a reconnect, reads each awaited transaction once, in case its final was acked elsewhere. */
  private recheckWaiters(): void {
    for (const id of this.waiters.keys()) {
      this.getTransaction(id).then((t) => this.observe(t), () => {});
    }
  }

  // ---------------- REST ----------------

  async getTransaction(id: string): Promise<Transaction> {
    return (await this.rest<TransactionReply>('GET', `/v1/transactions/${encodeURIComponent(id)}`)).transaction;
  }

  async listTransactions(q: ListTransactionsQuery = {}): Promise<TransactionPage> {
    return this.rest<TransactionPage>('GET', '/v1/transactions', q as Record<string, unknown>);
  }

  async cancel(id: string, opts: { idempotencyKey?: string } = {}): Promise<Transaction> {
    return this.action(id, 'cancel', {}, opts.idempotencyKey);
  }

  /** A refund of a COMPLETED sale; without an amount, everything left. Resolves with the new refund as created. */
  async refund(id: string, req: { amount?: string | number; amountMinor?: number; reference?: string; reason?: string; idempotencyKey?: string } = {}): Promise<Transaction> {
    const { idempotencyKey, ...body } = req;
    return this.action(id, 'refund', body, idempotencyKey);
  }

  async void(id: string, req: { reason?: string; idempotencyKey?: string } = {}): Promise<Transaction> {
    const { idempotencyKey, ...body } = req;
    return this.action(id, 'void', body, idempotencyKey);
  }

  async capture(id: string, req: { amount?: number; amountMinor?: number; idempotencyKey?: string } = {}): Promise<Transaction> {
    // The hub's capture takes minor units; `amount` is accepted here as the shorthand for them.
    const amountMinor = req.amountMinor ?? req.amount;
    return this.action(id, 'capture', amountMinor === undefined ? {} : { amountMinor }, req.idempotencyKey);
  }

  async signature(id: string, accepted: boolean, opts: { idempotencyKey?: string } = {}): Promise<Transaction> {
    return this.action(id, 'signature', { accepted }, opts.idempotencyKey);
  }

  async terminals(): Promise<TerminalInfo[]> {
    return (await this.rest<{ data: TerminalInfo[] }>('GET', '/v1/terminals')).data;
  }

  async terminal(id: string): Promise<TerminalInfo> {
    const r = await this.rest<any>('GET', `/v1/terminals/${encodeURIComponent(id)}`);
    return (r && r.terminal) ? r.terminal : r;
  }

  private async action(id: string, name: string, body: Record<string, unknown>, key?: string): Promise<Transaction> {
    const r = await this.rest<TransactionReply>('POST', `/v1/transactions/${encodeURIComponent(id)}/${name}`, undefined, body, key ?? randomId('idem_'));
    this.observe(r.transaction);
    return r.transaction;
  }

  /** The timestamp to sign with: identical POSTs in one second would have identical signatures, which the hub refuses as replays. */
  private async timestampFor(method: string, key: string): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    if (method !== 'POST') return String(now);
    const last = this.lastTimestamp.get(key);
    let ts = last !== undefined && last >= now ? last + 1 : now;
    if (ts > now + 2) {
      // The hub accepts ±300 s, but stay close to the clock: wait instead.
      await sleep((ts - now - 2) * 1000);
    }
    this.lastTimestamp.set(key, ts);
    if (this.lastTimestamp.size > 1000) {
      for (const [k, v] of this.lastTimestamp) if (v < now - 5) this.lastTimestamp.delete(k);
    }
    return String(ts);
  }

  /** A signed REST call; `unavailable` and unreachable hubs are retried for retryForMs. */
  private async rest<T>(method: string, path: string, query?: Record<string, unknown>, body?: unknown, idempotencyKey?: string): Promise<T> {
    const bodyText = body === undefined ? '' : JSON.stringify(body);
    const bodyHash = await sha256Hex(bodyText);
    let qs = '';
    if (query) {
      const p = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') p.append(k, String(v));
      qs = p.toString();
    }
    const pathWithQuery = qs ? `${path}?${qs}` : path;
    const origin = new URL(this.opts.baseUrl).origin;
    const deadline = Date.now() + (this.opts.retryForMs ?? 30000);
    let attempt = 0;
    let duplicates = 0;
    for (;;) {
      attempt++;
      const ts = await this.timestampFor(method, `${method} ${pathWithQuery} ${bodyHash}`);
      const sig = await this.signFn(method, pathWithQuery, ts, bodyHash);
      const headers: Record<string, string> = {};
      let url = origin + pathWithQuery;
      if (this.credMode === 'query') {
        const c = new URLSearchParams({ apiKey: this.opts.apiKey, timestamp: ts, signature: sig });
        url += (qs ? '&' : '?') + c.toString();
      } else {
        headers['X-Api-Key'] = this.opts.apiKey;
        headers['X-Timestamp'] = ts;
        headers['X-Signature'] = sig;
      }
      if (bodyText) headers['Content-Type'] = 'application/json';
      if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
      let res: Response;
      try {
        res = await this.fetchFn(url, { method, headers, body: bodyText || undefined });
      } catch (e) {
        // Not reached, or the answer was lost: the outcome is unknown, and a retry
        // (a GET, or a POST with its Idempotency-Key) is safe.
        if (Date.now() < deadline) { await sleep(backoff(attempt)); continue; }
        throw new TermhubError('network', `could not reach the hub: ${(e as Error)?.message ?? e}`);
      }
      const text = await res.text();
      if (res.ok) {
        if (!text) return undefined as T;
        try { return JSON.parse(text) as T; } catch { throw new TermhubError('protocol', 'the hub answered something other than JSON', { httpStatus: res.status }); }
      }
      const err = errorFromBody(res.status, text, res.headers.get('retry-after') ?? undefined);
      if (err.code === 'unavailable' && Date.now() < deadline) {
        await sleep(Math.max(backoff(attempt), (err.retryAfter ?? 0) * 1000));
        continue;
      }
      // Another process of the key sent the identical request in the same second.
      if (err.code === 'duplicate_request' && ++duplicates < 3) continue;
      throw err;
    }
  }
}

function backoff(attempt: number): number {
  return 100 + Math.random() * Math.min(2000, 100 * 2 ** attempt);
}

function errorFromBody(status: number, text: string, retryAfter?: string): TermhubError {
  let e: any;
  try { e = JSON.parse(text)?.error; } catch { /* not the JSON error body */ }
  const ra = retryAfter ? Number(retryAfter) : undefined;
  if (e && typeof e.code === 'string') {
    return new TermhubError(e.code, e.message ?? e.code, { field: e.field, httpStatus: status, retryAfter: ra });
  }
  return new TermhubError(status === 404 ? 'not_found' : 'protocol', `HTTP ${status}: ${text.slice(0, 200)}`, { httpStatus: status, retryAfter: ra });
}
