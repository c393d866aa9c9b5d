package hub

import (
	"context"

	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/protocol"
)

// Drain stops accepting connections, tells every connected client to
// reconnect (forceDisconnect server_shutdown, close 4004) and waits for the
// connections to finish or ctx to end.
func (h *Hub) Drain(ctx context.Context) error {
	h.mu.Lock()
	h.draining.Store(true)
	all := make([]*conn, 0, len(h.byID))
	for _, c := range h.byID {
		all = append(all, c)
	}
	h.mu.Unlock()
	for _, c := range all {
		c.disconnect(&protocol.Disconnect{Code: protocol.CloseShutdown, Reason: protocol.ReasonShutdown,
			Message: "Server is shutting down; reconnect", ReconnectAllowed: true})
	}
	done := make(chan struct{})
	// Acks the readers took are applied before the hub stops: a POS that
	// acked before a graceful restart is not sent those messages again.
	go func() { h.conns.Wait(); h.acks.endLinger(); h.acks.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	h.stop()
	return ctx.Err()
}

// Reload swaps in new merchants, keys and terminals. Connections whose API
// key or device is no longer configured are closed; the rest stay up.
func (h *Hub) Reload(dir *config.Directory) {
	h.dir.Store(dir)
	h.mu.Lock()
	var gone []*conn
	for _, c := range h.byID {
		switch c.kind {
		case KindPOS:
			if k, ok := dir.Key(c.keyID); !ok || k.MerchantID != c.merchantID {
				gone = append(gone, c)
			}
		case KindTerminal:
			if t, ok := dir.Terminal(c.deviceID); !ok || t.MerchantID != c.merchantID {
				gone = append(gone, c)
			}
		}
	}
	h.mu.Unlock()
	for _, c := range gone {
		c.log.Info().Msg("credential removed by reload: disconnecting")
		c.disconnect(&protocol.Disconnect{Code: protocol.ClosePolicy, Reason: protocol.ReasonOther,
			Message: "Credential no longer valid", ReconnectAllowed: false})
	}
}
