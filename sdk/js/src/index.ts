export { PosClient, isFinal, compareMessageIds } from './client.js';
export type {
  PosClientOptions, PayOptions, ListTransactionsQuery, DisconnectInfo, DisplacedInfo,
  PosClientEvents, SignFunction, CursorStore,
} from './client.js';
export { TermhubError } from './errors.js';
export { signatureText, sha256Hex, hmacSha256Hex } from './env.js';
export type { WebSocketLike, WebSocketConstructor } from './env.js';
export * from './types.js';
