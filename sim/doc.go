// Package sim provides simulated card terminals: test doubles that speak the
// terminal side of termhub's wire contract (docs/protocol.md#terminal-protocol) with real
// credentials, the way Stripe's simulated readers stand in for a physical
// reader. `termhub sim` runs them from the command line; tests build a
// Terminal directly and inject a Sleep so that nothing really waits.
//
// A Terminal connects with client.DialTerminal and keeps reconnecting with
// client.Reconnector. It behaves like a well-written real terminal:
//
//   - it answers startPayment with commandReceived, then paymentProgress
//     (card_presented), then a paymentResult, one card delay apart;
//   - it keeps every result until the hub sends resultAck and re-sends the
//     unacknowledged ones after reconnecting;
//   - a repeated startPayment for a transaction it already has is a no-op,
//     or re-sends the cached result if that was not yet sent on the current
//     connection;
//   - cancelPayment before the payment has finished answers a paymentResult
//     with outcome cancelled (also for a transaction it never saw, so the
//     hub's open cancel is closed); after it has finished it is a no-op;
//   - voidPayment answers voidResult ok:true and capturePayment answers
//     captureResult ok:true with the amount asked for;
//   - every message it sends carries requestId "<action>:<transactionId>",
//     and a result the hub answers with transaction_not_found is dropped
//     rather than re-sent forever;
//   - a message the hub answers with unavailable (it may not be recorded)
//     is sent again unchanged about a second later, once per such answer,
//     and a result only until resultAck;
//   - displaced by another connection with its device id, it stops
//     (ErrDisplaced) instead of fighting for the device.
//
// What a sale does depends on the last two digits of its amount in minor
// units (Script overrides this; refunds always approve):
//
//	minor units end in | behaviour                | result
//	-------------------+--------------------------+------------------------------------------------
//	05                 | Decline                  | declined, responseCode "05" (do not honour)
//	51                 | InsufficientFunds        | declined, responseCode "51", no errorCode
//	91                 | TerminalError            | error, errorCode terminal_error, responseCode "91"
//	55                 | Signature                | signatureRequired, then waits for signatureVerified:
//	                   |                          | accepted → approved, declined → declined
//	99                 | NoAnswer                 | ignores startPayment entirely (exercise timeouts)
//	77                 | DropAndReturn            | after paymentProgress drops the connection, stays
//	                   |                          | away ReturnDelay, reconnects, sends the cached approval
//	anything else      | Approve                  | approved, responseCode "00"
//
// Every approved result carries an authCode and rrn derived from the
// transaction id, cardScheme "visa", maskedPan "424242******4242", entryMode
// "contactless" and customer and merchant receipts.
package sim
