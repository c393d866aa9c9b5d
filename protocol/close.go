package protocol

// CloseCode is a WebSocket close status code.
type CloseCode int

// WebSocket close codes of docs/protocol.md#connections. Codes 4001–4004 tell the client why it
// was closed; only 4400 means the client itself broke the protocol.
const (
	CloseDisplaced     CloseCode = 4001 // another connection took this key or device
	CloseStale         CloseCode = 4002 // two heartbeats missed
	CloseAdmin         CloseCode = 4003 // ops kicked the connection
	CloseShutdown      CloseCode = 4004 // the hub is draining; reconnect elsewhere
	CloseProtocolError CloseCode = 4400 // non-JSON or oversized frame
	ClosePolicy        CloseCode = 1008

	// MaxFrameBytes is the largest frame a peer may send.
	MaxFrameBytes = 64 << 10
)

// Reasons carried by forceDisconnect.
const (
	ReasonAPIKeyUsedElsewhere = "api_key_used_elsewhere"
	ReasonDeviceElsewhere     = "device_connected_elsewhere"
	ReasonStale               = "stale_connection_timeout"
	ReasonAdmin               = "admin_action"
	ReasonShutdown            = "server_shutdown"
	ReasonOther               = "other"
)

// Disconnect is why the hub ends a connection: the forceDisconnect message sent
// first (if Reason is set) and the close code and text that follow it. It is
// an error so that it can travel as a context cause.
type Disconnect struct {
	Code             CloseCode
	Reason           string // forceDisconnect reason; empty sends no message
	Message          string
	ReconnectAllowed bool
}

func (d *Disconnect) Error() string { return "disconnect: " + d.Reason + ": " + d.Message }

// Frame is the forceDisconnect message for d.
func (d *Disconnect) Frame() ForceDisconnect {
	return ForceDisconnect{Action: ActionForceDisconnect, Reason: d.Reason, Message: d.Message, ReconnectAllowed: d.ReconnectAllowed}
}

// ForceDisconnect tells a client why it is about to be closed.
type ForceDisconnect struct {
	Action           string `json:"action"`
	Reason           string `json:"reason"`
	Message          string `json:"message"`
	ReconnectAllowed bool   `json:"reconnectAllowed"`
}
