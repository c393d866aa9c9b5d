// Types of every POS message and object of docs/asyncapi.yaml (channel `pos`)
// and docs/openapi.yaml. test/schema.test.mjs reads this file with the
// TypeScript compiler and fails when a field or message of the documents has
// no type here, or the other way round, so keep the names as the convention
// there says: a POS channel message `foo` is `FooMessage`; a schema keeps its name.

/** Transaction statuses (protocol.md, Transactions). */
export type Status =
  | 'PENDING' | 'DISPATCHED' | 'IN_PROGRESS' | 'AWAITING_SIGNATURE' | 'AWAITING_RECONNECT'
  | 'AUTHORIZED' | 'COMPLETED' | 'DECLINED' | 'FAILED' | 'CANCELLED' | 'TIMED_OUT'
  | 'SUPERSEDED' | 'VOIDED';

/** The contract's error codes. */
export type ErrorCode =
  | 'invalid_request' | 'unknown_action' | 'unauthorized' | 'insufficient_scopes' | 'not_found'
  | 'terminal_not_found' | 'transaction_not_found' | 'device_busy' | 'reference_conflict'
  | 'invalid_state' | 'session_displaced' | 'duplicate_request' | 'idempotency_key_reused'
  | 'terminal_offline' | 'refund_exceeds_amount' | 'rate_limited' | 'unavailable' | 'internal';

export type TerminalStatus = 'online' | 'reconnecting' | 'offline';
export type CaptureMode = 'auto' | 'manual';
export type TransactionType = 'sale' | 'refund';
export type EntryMode = '' | 'contactless' | 'emv_chip' | 'magnetic_stripe' | 'manual_entry' | 'fallback';
export type VoidReasonCode =
  | 'late_after_grace' | 'late_after_timeout' | 'late_after_cancel' | 'late_after_supersede'
  | 'late_after_decline' | 'requested';
export type DisconnectReason =
  | 'api_key_used_elsewhere' | 'device_connected_elsewhere' | 'stale_connection_timeout'
  | 'admin_action' | 'server_shutdown' | 'other';
/** Echoed verbatim by the hub: any JSON value. */
export type RequestId = unknown;
/** A decimal amount such as "12.50" (a number is accepted and taken as written). */
export type AmountDecimal = string | number;

export interface Receipts {
  customer?: string;
  merchant?: string;
}

export interface HistoryEntry {
  status: Status;
  at: string;
  cause: string;
  errorCode?: string;
}

export interface Transaction {
  id: string;
  merchantId: string;
  terminalId: string;
  connectionId: string;
  type: TransactionType;
  parentId: string;
  status: Status;
  amountMinor: number;
  amount: string;
  currency: string;
  reference: string;
  captureMode: CaptureMode;
  description: string;
  printReceipt: boolean;
  timeoutSeconds: number;
  authorizedAmountMinor: number;
  refundedAmountMinor: number;
  authCode: string;
  responseCode: string;
  rrn: string;
  cardScheme: string;
  maskedPan: string;
  entryMode: EntryMode;
  receipts: Receipts | null;
  errorCode: string;
  errorMessage: string;
  createdAt: string;
  updatedAt: string;
  completedAt: string | null;
  version: number;
  history: HistoryEntry[];
}

export interface TerminalInfo {
  terminalId: string;
  merchantId: string;
  label: string;
  status: TerminalStatus;
  connectionId: string;
  lastHeartbeat: string | null;
  currentTransactionId: string;
}

/** The HTTP error body's `error` object (openapi ErrorBody.error). */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  field?: string;
}

// ---- REST request and reply bodies (openapi.yaml) ----

/** A sale: exactly one of amount and amountMinor. */
export interface PaymentRequest {
  terminalId: string;
  amountMinor?: number;
  amount?: AmountDecimal;
  currency: string;
  reference: string;
  captureMode?: CaptureMode;
  description?: string;
  printReceipt?: boolean;
  timeoutSeconds?: number;
  /** Sent as the Idempotency-Key header (the body field is ignored over HTTP). */
  idempotencyKey?: string;
}

export interface RefundRequest {
  transactionId?: string;
  amountMinor?: number;
  amount?: AmountDecimal;
  reference?: string;
  reason?: string;
}

export interface VoidRequest {
  transactionId?: string;
  reason?: string;
}

export interface CaptureRequest {
  transactionId?: string;
  amountMinor?: number;
}

export interface CancelRequest {
  transactionId?: string;
}

export interface SignatureRequest {
  transactionId?: string;
  accepted: boolean;
}

export interface PaymentReply {
  transaction: Transaction;
  created: boolean;
}

export interface TransactionReply {
  transaction: Transaction;
}

export interface TransactionPage {
  data: Transaction[];
  hasMore: boolean;
  nextCursor: string | null;
}

// ---- POS WebSocket, POS → hub (asyncapi channel pos) ----

export interface PaymentMessage extends PaymentRequest {
  action: 'payment';
  requestId?: RequestId;
}
export interface CancelMessage {
  action: 'cancel';
  requestId?: RequestId;
  transactionId: string;
  idempotencyKey?: string;
}
export interface RefundMessage {
  action: 'refund';
  requestId?: RequestId;
  transactionId: string;
  amountMinor?: number;
  amount?: AmountDecimal;
  reference?: string;
  reason?: string;
  idempotencyKey?: string;
}
export interface VoidMessage {
  action: 'void';
  requestId?: RequestId;
  transactionId: string;
  reason?: string;
  idempotencyKey?: string;
}
export interface CaptureMessage {
  action: 'capture';
  requestId?: RequestId;
  transactionId: string;
  amountMinor?: number;
  idempotencyKey?: string;
}
export interface SignatureVerificationMessage {
  action: 'signatureVerification';
  requestId?: RequestId;
  transactionId: string;
  accepted: boolean;
  idempotencyKey?: string;
}
export interface GetTransactionStatusMessage {
  action: 'getTransactionStatus';
  requestId?: RequestId;
  transactionId: string;
}
export interface ListTerminalsMessage {
  action: 'listTerminals';
  requestId?: RequestId;
}
export interface AckMessage {
  action: 'ack';
  requestId?: RequestId;
  messageId: string;
}

// ---- POS WebSocket, hub → POS ----

export interface ConnectedMessage {
  action: 'connected';
  connectionId: string;
  merchantId: string;
  apiKeyId: string;
  serverTime: string;
  terminals: TerminalInfo[];
}

interface ResponseBase {
  requestId?: RequestId;
  transaction: Transaction;
}
export interface PaymentResponseMessage extends ResponseBase { action: 'paymentResponse'; created: boolean }
export interface CancelResponseMessage extends ResponseBase { action: 'cancelResponse' }
export interface RefundResponseMessage extends ResponseBase { action: 'refundResponse' }
export interface VoidResponseMessage extends ResponseBase { action: 'voidResponse' }
export interface CaptureResponseMessage extends ResponseBase { action: 'captureResponse' }
export interface SignatureVerificationResponseMessage extends ResponseBase { action: 'signatureVerificationResponse' }
export interface TransactionStatusMessage extends ResponseBase { action: 'transactionStatus' }
export interface TerminalsMessage {
  action: 'terminals';
  requestId?: RequestId;
  terminals: TerminalInfo[];
}

export interface ErrorMessage {
  action: 'error';
  requestId?: RequestId;
  code: ErrorCode;
  message: string;
  field?: string;
  retryAfter?: number;
}

export interface ForceDisconnectMessage {
  action: 'forceDisconnect';
  reason: DisconnectReason;
  message: string;
  reconnectAllowed: boolean;
}

export interface TerminalStatusUpdateMessage {
  action: 'terminalStatusUpdate';
  terminalId: string;
  connectionId: string;
  status: TerminalStatus;
  previousStatus: TerminalStatus;
  timestamp: string;
}

/** The fields every durable message has (asyncapi PosEvent). */
interface PosEventBase {
  messageId: string;
  terminalId: string;
  transactionId: string;
  version: number;
  transaction: Transaction;
  timestamp: string;
}
export interface PaymentStatusUpdateMessage extends PosEventBase { action: 'paymentStatusUpdate' }
export interface SignatureRequiredMessage extends PosEventBase { action: 'signatureRequired' }
export interface PaymentCompleteMessage extends PosEventBase { action: 'paymentComplete' }
export interface PaymentVoidedMessage extends PosEventBase {
  action: 'paymentVoided';
  reasonCode: VoidReasonCode;
  reason: string;
  /** The terminal's paymentResult being reversed, as it sent it. */
  originalPaymentResponse?: Record<string, unknown>;
}

/** A durable message: acked by the SDK once every handler of it has finished. */
export type DurableMessage =
  | PaymentStatusUpdateMessage | SignatureRequiredMessage | PaymentCompleteMessage | PaymentVoidedMessage;

/** Any frame the hub sends a POS. */
export type ServerMessage =
  | ConnectedMessage | PaymentResponseMessage | CancelResponseMessage | RefundResponseMessage
  | VoidResponseMessage | CaptureResponseMessage | SignatureVerificationResponseMessage
  | TransactionStatusMessage | TerminalsMessage | ErrorMessage | ForceDisconnectMessage
  | TerminalStatusUpdateMessage | DurableMessage;

/** Any frame a POS may send. */
export type ClientMessage =
  | PaymentMessage | CancelMessage | RefundMessage | VoidMessage | CaptureMessage
  | SignatureVerificationMessage | GetTransactionStatusMessage | ListTerminalsMessage | AckMessage;
