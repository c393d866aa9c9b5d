package protocol

// Action names. Client actions are answered by "<name>Response" except where
// a constant below says otherwise.
const (
	// POS → hub.
	ActionPayment               = "payment"
	ActionCancel                = "cancel"
	ActionRefund                = "refund"
	ActionVoid                  = "void"
	ActionCapture               = "capture"
	ActionSignatureVerification = "signatureVerification"
	ActionGetTransactionStatus  = "getTransactionStatus"
	ActionListTerminals         = "listTerminals"
	ActionAck                   = "ack"

	// Hub → POS.
	ActionConnected            = "connected"
	ActionError                = "error"
	ActionForceDisconnect      = "forceDisconnect"
	ActionTransactionStatus    = "transactionStatus"
	ActionTerminals            = "terminals"
	ActionTerminalStatusUpdate = "terminalStatusUpdate"
	ActionPaymentStatusUpdate  = "paymentStatusUpdate"
	ActionSignatureRequired    = "signatureRequired" // also terminal → hub
	ActionPaymentComplete      = "paymentComplete"
	ActionPaymentVoided        = "paymentVoided"

	// Hub → terminal.
	ActionStartPayment      = "startPayment"
	ActionCancelPayment     = "cancelPayment"
	ActionVoidPayment       = "voidPayment"
	ActionCapturePayment    = "capturePayment"
	ActionSignatureVerified = "signatureVerified"
	ActionResultAck         = "resultAck"

	// Terminal → hub.
	ActionCommandReceived = "commandReceived"
	ActionPaymentProgress = "paymentProgress"
	ActionPaymentResult   = "paymentResult"
	ActionVoidResult      = "voidResult"
	ActionCaptureResult   = "captureResult"
)

// ResponseAction is the action name of the reply to a client action.
func ResponseAction(action string) string {
	switch action {
	case ActionGetTransactionStatus:
		return ActionTransactionStatus
	case ActionListTerminals:
		return ActionTerminals
	}
	return action + "Response"
}

// POSActions lists every action a POS may send, for documentation checks.
var POSActions = []string{
	ActionPayment, ActionCancel, ActionRefund, ActionVoid, ActionCapture,
	ActionSignatureVerification, ActionGetTransactionStatus, ActionListTerminals, ActionAck,
}

// TerminalActions lists every action a terminal may send.
var TerminalActions = []string{
	ActionCommandReceived, ActionPaymentProgress, ActionSignatureRequired,
	ActionPaymentResult, ActionVoidResult, ActionCaptureResult,
}
