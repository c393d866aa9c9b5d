// The options, events and request shapes of PosClient (client.ts), apart
// from the client so that each file stays readable.
import type { WebSocketConstructor } from './env.js';
import type {
  CaptureMode, ConnectedMessage, DurableMessage, ForceDisconnectMessage, PaymentVoidedMessage,
  SignatureRequiredMessage, Status, TerminalStatusUpdateMessage, Transaction,
} from './types.js';
import type { TermhubError } from './errors.js';

/** Computes the hex HMAC-SHA256 of docs/protocol.md for a request (e.g. on a backend, so no secret is in a browser). */
export type SignFunction = (method: string, pathWithQuery: string, timestamp: string, bodySha256Hex: string) => Promise<string> | string;

export interface CursorStore {
  /** The last messageId the app processed, or null/undefined when none. */
  load(): Promise<string | null | undefined>;
  /** Called with each messageId before it is acked. */
  save(messageId: string): Promise<void>;
}

export interface PosClientOptions {
  /** http(s)://host:port of the hub; the WebSocket URL is derived from it. */
  baseUrl: string;
  apiKey: string;
  /** The API key's secret; or give `sign` instead. */
  secret?: string;
  sign?: SignFunction;
  /** Jittered exponential backoff between reconnections; `false` never reconnects. */
  reconnect?: { minDelayMs?: number; maxDelayMs?: number } | false;
  /** Persists the ack cursor, so a restarted app skips messages it already processed. */
  store?: CursorStore;
  /**
   * How credentials travel: `header` (default in Node) or `query` (default in a
   * browser, whose WebSocket cannot set headers; used for REST calls too there).
   */
  credentials?: 'header' | 'query';
  /** A WebSocket constructor; default `ws` in Node and the native one in a browser. */
  WebSocket?: WebSocketConstructor;
  /** A fetch function; default the global one. */
  fetch?: typeof fetch;
  /**
   * How long a request answered `503 unavailable`, or that could not reach the
   * hub, is retried (same body and Idempotency-Key, so it is safe) before the
   * error is reported. Default 30000 ms.
   */
  retryForMs?: number;
  /**
   * Reconnect after another client of the same API key displaced this one
   * (`api_key_used_elsewhere` with `reconnectAllowed: true`). Default false:
   * reconnecting would displace the other client in turn, and the two would fight.
   */
  reconnectWhenDisplaced?: boolean;
  /** Bounds each WebSocket dial, greeting included. Default 15000 ms. */
  connectTimeoutMs?: number;
}

export interface PayOptions {
  /** Sent as Idempotency-Key; a random one is made when missing, and reused by every retry. */
  idempotencyKey?: string;
  /** Called with every new version of the transaction, the first reply included. */
  onUpdate?: (t: Transaction) => void | Promise<void>;
}

export interface ListTransactionsQuery {
  status?: Status;
  terminalId?: string;
  type?: 'sale' | 'refund';
  limit?: number;
  after?: string;
}

export interface DisconnectInfo {
  code: number;
  reason: string;
  /** The hub's forceDisconnect before the close, if it sent one. */
  forceDisconnect?: ForceDisconnectMessage;
  willReconnect: boolean;
}

export interface DisplacedInfo {
  reason: string;
  message: string;
  reconnectAllowed: boolean;
}

/** The events and the argument their handlers get. */
export interface PosClientEvents {
  /** Every transaction update pushed by the hub, deduplicated by version. */
  transaction: Transaction;
  terminalStatus: TerminalStatusUpdateMessage;
  paymentVoided: PaymentVoidedMessage;
  signatureRequired: SignatureRequiredMessage;
  /** Every durable message, after de-duplication, before its ack. */
  message: DurableMessage;
  connected: ConnectedMessage;
  disconnected: DisconnectInfo;
  reconnected: ConnectedMessage;
  displaced: DisplacedInfo;
  /** A handler failed: the message is not acked and comes again after a reconnect. */
  handlerError: { error: unknown; message: DurableMessage };
  /** An `error` frame the hub sent about an ack. */
  error: TermhubError;
}

