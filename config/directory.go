package config

import "slices"

// Directory is the read-only lookup the hub authenticates and routes with,
// built from a Config. A reload builds a new one and swaps it in whole.
type Directory struct {
	merchants map[string]*Merchant
	keys      map[string]KeyEntry
	terminals map[string]TerminalEntry
}

// KeyEntry is an API key with its merchant and what it may do.
type KeyEntry struct {
	MerchantID string
	Secret     string
	// CanWrite: the key may create and change transactions
	// (terminal:write, which a key without scopes has).
	CanWrite bool
	// CanRead: the key may read transactions and terminals
	// (terminal:read, which a key without scopes has).
	CanRead bool
}

// TerminalEntry is a terminal with its merchant.
type TerminalEntry struct {
	MerchantID string
	DeviceID   string
	Secret     string
	Label      string
}

// NewDirectory indexes cfg's merchants, keys and terminals.
func NewDirectory(cfg Config) *Directory {
	d := &Directory{merchants: map[string]*Merchant{}, keys: map[string]KeyEntry{}, terminals: map[string]TerminalEntry{}}
	for i := range cfg.Merchants {
		m := &cfg.Merchants[i]
		d.merchants[m.ID] = m
		for _, k := range m.APIKeys {
			all := len(k.Scopes) == 0
			d.keys[k.ID] = KeyEntry{MerchantID: m.ID, Secret: k.Secret,
				CanWrite: all || slices.Contains(k.Scopes, ScopeWrite), CanRead: all || slices.Contains(k.Scopes, ScopeRead)}
		}
		for _, t := range m.Terminals {
			d.terminals[t.DeviceID] = TerminalEntry{MerchantID: m.ID, DeviceID: t.DeviceID, Secret: t.Secret, Label: t.Label}
		}
	}
	return d
}

// Key looks up an API key by id.
func (d *Directory) Key(id string) (KeyEntry, bool) { k, ok := d.keys[id]; return k, ok }

// Terminal looks up a terminal by device id.
func (d *Directory) Terminal(deviceID string) (TerminalEntry, bool) {
	t, ok := d.terminals[deviceID]
	return t, ok
}

// Merchant looks up a merchant by id.
func (d *Directory) Merchant(id string) (*Merchant, bool) { m, ok := d.merchants[id]; return m, ok }

// MerchantIDs lists every merchant id, in no particular order.
func (d *Directory) MerchantIDs() []string {
	ids := make([]string, 0, len(d.merchants))
	for id := range d.merchants {
		ids = append(ids, id)
	}
	return ids
}

// Terminals lists a merchant's terminals in file order.
func (d *Directory) Terminals(merchantID string) []TerminalEntry {
	m, ok := d.merchants[merchantID]
	if !ok {
		return nil
	}
	out := make([]TerminalEntry, 0, len(m.Terminals))
	for _, t := range m.Terminals {
		out = append(out, TerminalEntry{MerchantID: m.ID, DeviceID: t.DeviceID, Secret: t.Secret, Label: t.Label})
	}
	return out
}

// KeyIDs lists every API key id of a merchant.
func (d *Directory) KeyIDs(merchantID string) []string {
	m, ok := d.merchants[merchantID]
	if !ok {
		return nil
	}
	out := make([]string, 0, len(m.APIKeys))
	for _, k := range m.APIKeys {
		out = append(out, k.ID)
	}
	return out
}
