/**
 * Every failure of the SDK. `code` is the contract's error code when the hub
 * answered one (`invalid_request`, `terminal_offline`, …); the SDK's own are
 * `network` (the hub could not be reached), `closed` (close() was called while
 * the call waited), `displaced` (another client took the API key, so this one
 * stopped) and `protocol` (an answer the SDK could not read).
 */
export class TermhubError extends Error {
  readonly code: string;
  readonly field?: string;
  readonly httpStatus?: number;
  /** With `rate_limited`: seconds to wait (Retry-After or retryAfter). */
  readonly retryAfter?: number;

  constructor(code: string, message: string, opts: { field?: string; httpStatus?: number; retryAfter?: number } = {}) {
    super(message);
    this.name = 'TermhubError';
    this.code = code;
    if (opts.field !== undefined) this.field = opts.field;
    if (opts.httpStatus !== undefined) this.httpStatus = opts.httpStatus;
    if (opts.retryAfter !== undefined) this.retryAfter = opts.retryAfter;
    // Keeps instanceof working when compiled down to ES5-style classes.
    Object.setPrototypeOf(this, TermhubError.prototype);
  }
}
