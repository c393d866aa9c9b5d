// termhub ops dashboard: plain JavaScript, no build step, no dependencies.
//
// It asks /ops/session whether the browser holds a live ops session, shows
// the sign-in form if not (POST /ops/login exchanges the token for an
// HttpOnly cookie holding a random session id), then opens the feed /v1/ops/ws: a snapshot first, then live
// updates that are applied to the tables in place. Every value is written
// with textContent, never as HTML.
(function () {
  'use strict';

  // The hub may sit behind a path prefix: everything is relative to the
  // directory that holds /ops/.
  var base = location.pathname.replace(/ops\/[^/]*$/, '');
  var FINAL = { COMPLETED: 1, DECLINED: 1, FAILED: 1, CANCELLED: 1, TIMED_OUT: 1, SUPERSEDED: 1, VOIDED: 1, AUTHORIZED: 1 };
  var MAX_TXNS = 100;

  var state = {
    terminals: new Map(),   // terminalId → row data
    connections: new Map(), // connectionId → ConnInfo (POS and terminal)
    conflicts: [],
    nodes: [],              // the live nodes of the hub (NodeInfo)
    txns: new Map(),        // transaction id → transaction
    offset: 0               // hub clock minus browser clock, ms
  };
  var rows = { terminals: new Map(), connections: new Map(), txns: new Map() };
  var ws = null;
  var retries = 0;
  var retryTimer = null;
  var signedIn = false;

  function $(sel) { return document.querySelector(sel); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  // ---- session ----

  function checkSession() {
    return fetch(base + 'ops/session', { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) { return r.status === 204 ? true : (r.status === 401 ? false : null); })
      .catch(function () { return null; });
  }

  function showLogin(message) {
    signedIn = false;
    closeFeed();
    $('#dashboard').hidden = true;
    $('#summary').hidden = true;
    $('#logout').hidden = true;
    $('#logout-error').hidden = true;
    $('#login-view').hidden = false;
    setFeedState('idle', 'not connected');
    var err = $('#login-error');
    err.hidden = !message;
    err.textContent = message || '';
    $('#token').focus();
  }

  function showDashboard() {
    signedIn = true;
    $('#login-view').hidden = true;
    $('#dashboard').hidden = false;
    $('#summary').hidden = false;
    $('#logout').hidden = false;
    connect();
  }

  function onLogin(ev) {
    ev.preventDefault();
    var input = $('#token');
    var button = $('#login-submit');
    button.disabled = true;
    fetch(base + 'ops/login', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: input.value })
    }).then(function (r) {
      if (r.status === 204) {
        input.value = '';
        $('#login-error').hidden = true;
        showDashboard();
        return;
      }
      return r.json().catch(function () { return {}; }).then(function (body) {
        var msg = r.status === 401 ? 'Wrong ops token.' : ((body.error && body.error.message) || ('Sign-in failed (HTTP ' + r.status + ').'));
        showLogin(msg);
        input.select();
      });
    }).catch(function () {
      showLogin('The hub did not answer. Try again.');
    }).then(function () { button.disabled = false; });
  }

  // Sign out ends the session on the hub (POST /ops/logout). If the hub
  // could not end it (503: Redis does not answer) the page stays signed in
  // and says so, so that the operator can try again.
  function onLogout() {
    var button = $('#logout');
    var err = $('#logout-error');
    button.disabled = true;
    fetch(base + 'ops/logout', { method: 'POST', credentials: 'same-origin' })
      .then(function (r) {
        if (r.status === 204 || r.status === 401) {
          err.hidden = true;
          showLogin('');
          return;
        }
        return r.json().catch(function () { return {}; }).then(function (body) {
          err.textContent = 'Sign-out failed: ' + ((body.error && body.error.message) || ('HTTP ' + r.status)) + '.';
          err.hidden = false;
        });
      }, function () {
        err.textContent = 'Sign-out failed: the hub did not answer. Try again.';
        err.hidden = false;
      })
      .then(function () { button.disabled = false; });
  }

  // ---- feed ----

  function feedURL() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + base + 'v1/ops/ws';
  }

  function setFeedState(s, label) {
    var fs = $('#feed-state');
    fs.dataset.state = s;
    fs.querySelector('.label').textContent = label;
  }

  function closeFeed() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (ws) {
      var old = ws;
      ws = null;
      old.onclose = null;
      old.close(1000, 'bye');
    }
  }

  function connect() {
    closeFeed();
    setFeedState(retries ? 'reconnecting' : 'connecting', retries ? 'reconnecting…' : 'connecting…');
    var sock = new WebSocket(feedURL());
    ws = sock;
    sock.onmessage = function (ev) {
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      handle(msg);
    };
    sock.onclose = function () {
      if (ws !== sock) return;
      ws = null;
      if (!signedIn) return;
      setFeedState('reconnecting', 'reconnecting…');
      checkSession().then(function (ok) {
        if (!signedIn) return;
        if (ok === false) { showLogin('Your session ended. Sign in again.'); return; }
        var delay = Math.min(10000, 500 * Math.pow(2, retries++));
        retryTimer = setTimeout(connect, delay);
      });
    };
  }

  function handle(msg) {
    switch (msg.action) {
      case 'snapshot': applySnapshot(msg); break;
      case 'terminalStatusUpdate': applyStatus(msg); break;
      case 'connectionUpdate': applyConnection(msg); break;
      case 'transactionUpdate': applyTransaction(msg.transaction, true); break;
      case 'heartbeats': applyHeartbeats(msg); break;
      case 'conflicts': state.conflicts = msg.conflicts || []; renderConflicts(); break;
    }
    renderSummary();
  }

  function syncClock(serverTime) {
    if (serverTime) state.offset = Date.parse(serverTime) - Date.now();
  }

  function applySnapshot(s) {
    retries = 0;
    syncClock(s.serverTime);
    setFeedState('live', 'live');
    state.terminals.clear();
    state.connections.clear();
    state.txns.clear();
    ['terminals', 'connections', 'txns'].forEach(function (k) { rows[k].clear(); });
    $('#terminals tbody').textContent = '';
    $('#connections tbody').textContent = '';
    $('#transactions tbody').textContent = '';

    (s.terminals || []).forEach(function (t) {
      state.terminals.set(t.terminalId, {
        terminalId: t.terminalId, merchantId: t.merchantId, label: t.label, status: t.status,
        connectionId: t.connectionId || '', lastHeartbeat: t.lastHeartbeat || null,
        txnId: t.currentTransactionId || '', txnStatus: t.currentTransactionStatus || '',
        node: t.node || ''
      });
    });
    state.nodes = s.nodes || [];
    renderNodes();
    (s.connections || []).forEach(function (c) { state.connections.set(c.connectionId, c); });
    state.conflicts = s.conflicts || [];
    (s.transactions || []).slice().reverse().forEach(function (t) { applyTransaction(t, false); });

    state.terminals.forEach(function (t) { renderTerminal(t, false); });
    state.connections.forEach(function (c) { renderConnection(c, false); });
    renderConflicts();
    renderEmpty();
  }

  function applyStatus(u) {
    var t = state.terminals.get(u.terminalId);
    if (!t) {
      t = { terminalId: u.terminalId, merchantId: u.merchantId || '', label: '', txnId: '', txnStatus: '', lastHeartbeat: null };
      state.terminals.set(u.terminalId, t);
    }
    t.status = u.status;
    t.connectionId = u.status === 'offline' ? '' : (u.connectionId || '');
    if (u.status === 'online') t.lastHeartbeat = u.timestamp;
    renderTerminal(t, true);
    renderEmpty();
  }

  function applyConnection(u) {
    var c = u.connection;
    if (!c) return;
    if (u.event === 'connected') {
      state.connections.set(c.connectionId, c);
      renderConnection(c, true);
    } else {
      state.connections.delete(c.connectionId);
      var tr = rows.connections.get(c.connectionId);
      if (tr) { tr.remove(); rows.connections.delete(c.connectionId); }
    }
    renderEmpty();
  }

  function applyTransaction(t, live) {
    if (!t || !t.id) return;
    var known = state.txns.get(t.id);
    if (known && known.version >= t.version) return; // stale or repeated
    state.txns.set(t.id, t);
    var term = state.terminals.get(t.terminalId);
    if (term && showsOnTerminal(term, t)) {
      term.txnId = t.id;
      term.txnCreated = t.createdAt;
      term.txnStatus = t.status;
      if (live) renderTerminal(term, false);
    }
    renderTxn(t, live);
    trimTxns();
    renderEmpty();
  }

  // A terminal row shows its current transaction, or else its latest one.
  function showsOnTerminal(term, t) {
    if (!term.txnId || term.txnId === t.id || !FINAL[t.status]) return true;
    if (!FINAL[term.txnStatus]) return false;
    return !term.txnCreated || Date.parse(t.createdAt) > Date.parse(term.txnCreated);
  }

  function applyHeartbeats(h) {
    syncClock(h.serverTime);
    (h.terminals || []).forEach(function (x) {
      var t = state.terminals.get(x.terminalId);
      if (t && t.connectionId === x.connectionId) {
        t.lastHeartbeat = x.lastHeartbeat;
        if ((x.node || '') !== (t.node || '')) { t.node = x.node || ''; renderTerminal(t, false); }
      }
    });
    (h.connections || []).forEach(function (x) {
      var c = state.connections.get(x.connectionId);
      if (c) c.lastSeen = x.lastSeen;
    });
    if (h.nodes) { state.nodes = h.nodes; renderNodes(); }
    renderAges();
  }

  // ---- rendering ----

  function statusBadge(cls, status) {
    var b = el('span', 'badge ' + cls + status, status.replace(/_/g, ' '));
    b.dataset.status = status;
    return b;
  }

  function codeCell(td, text, title) {
    td.textContent = '';
    if (!text) { td.appendChild(el('span', 'muted', '—')); return; }
    var c = el('code', '', text);
    if (title) c.title = title;
    td.appendChild(c);
  }

  function fmtTime(iso) {
    if (!iso) return '';
    var d = new Date(iso);
    if (isNaN(d)) return '';
    return d.toLocaleTimeString([], { hour12: false });
  }

  function fmtDateTime(iso) {
    if (!iso) return '';
    var d = new Date(iso);
    if (isNaN(d)) return '';
    return d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + d.toLocaleTimeString([], { hour12: false });
  }

  function fmtAge(iso) {
    if (!iso) return '';
    var s = Math.round((Date.now() + state.offset - Date.parse(iso)) / 1000);
    if (s < 0) s = 0;
    if (s < 60) return s + 's ago';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's ago';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm ago';
    return Math.floor(s / 86400) + 'd ago';
  }

  function timeCell(td, iso) {
    td.textContent = '';
    if (!iso) { td.appendChild(el('span', 'muted', '—')); return; }
    td.title = iso;
    td.appendChild(document.createTextNode(fmtTime(iso)));
    var age = el('span', 'sub age', fmtAge(iso));
    age.dataset.since = iso;
    td.appendChild(age);
  }

  function flash(tr) {
    tr.classList.remove('flash');
    void tr.offsetWidth; // restart the animation
    tr.classList.add('flash');
  }

  function disconnectButton(connectionId) {
    var b = el('button', 'btn btn-danger', 'Disconnect');
    b.type = 'button';
    b.dataset.action = 'disconnect';
    b.dataset.connection = connectionId;
    b.title = 'Kick ' + connectionId + ' (forceDisconnect admin_action, close 4003; it may reconnect)';
    return b;
  }

  function renderTerminal(t, highlight) {
    var tr = rows.terminals.get(t.terminalId);
    if (!tr) {
      tr = el('tr');
      for (var i = 0; i < 8; i++) tr.appendChild(el('td'));
      tr.cells[2].className = 'ids';
      tr.cells[3].className = 'status';
      tr.cells[4].className = 'ids';
      tr.cells[7].className = 'actions';
      tr.dataset.terminal = t.terminalId;
      rows.terminals.set(t.terminalId, tr);
      $('#terminals tbody').appendChild(tr);
    }
    tr.dataset.merchant = t.merchantId;
    tr.dataset.status = t.status;
    tr.dataset.connection = t.connectionId || '';
    tr.dataset.transaction = t.txnId || '';
    tr.dataset.transactionStatus = t.txnStatus || '';
    var c = tr.cells;
    c[0].textContent = t.merchantId;
    c[1].textContent = t.label || '';
    codeCell(c[2], t.terminalId);
    c[3].textContent = '';
    c[3].appendChild(statusBadge('s-', t.status));
    codeCell(c[4], t.connectionId);
    nodeNote(c[4], t.connectionId && t.node);
    c[5].textContent = '';
    if (t.txnId) {
      var wrap = el('span', 'txn-cell');
      wrap.appendChild(el('code', '', t.txnId));
      if (t.txnStatus) wrap.appendChild(statusBadge('t-', t.txnStatus));
      c[5].appendChild(wrap);
    } else {
      c[5].appendChild(el('span', 'muted', '—'));
    }
    timeCell(c[6], t.lastHeartbeat);
    c[7].textContent = '';
    if (t.status === 'online' && t.connectionId) c[7].appendChild(disconnectButton(t.connectionId));
    if (highlight) flash(tr);
  }

  function renderConnection(conn, highlight) {
    if (conn.kind !== 'pos') return; // terminal connections show in the terminals table
    var tr = rows.connections.get(conn.connectionId);
    if (!tr) {
      tr = el('tr');
      for (var i = 0; i < 6; i++) tr.appendChild(el('td'));
      tr.cells[0].className = 'ids';
      tr.cells[5].className = 'actions';
      tr.dataset.connection = conn.connectionId;
      rows.connections.set(conn.connectionId, tr);
      $('#connections tbody').appendChild(tr);
    }
    tr.dataset.kind = conn.kind;
    tr.dataset.merchant = conn.merchantId;
    tr.dataset.apiKey = conn.apiKeyId || '';
    var c = tr.cells;
    codeCell(c[0], conn.connectionId);
    nodeNote(c[0], conn.node);
    c[1].textContent = conn.merchantId;
    codeCell(c[2], conn.apiKeyId);
    c[3].textContent = fmtDateTime(conn.connectedAt);
    c[3].title = conn.connectedAt || '';
    timeCell(c[4], conn.lastSeen);
    c[5].textContent = '';
    c[5].appendChild(disconnectButton(conn.connectionId));
    if (highlight) flash(tr);
  }

  // nodeNote adds, under a connection id, the node it is on (several
  // nodes; nothing when the hub is alone).
  function nodeNote(td, node) {
    if (!node) return;
    var n = el('span', 'muted node-note', 'on ' + node);
    td.appendChild(document.createElement('br'));
    td.appendChild(n);
  }

  function renderNodes() {
    var tbody = $('#nodes tbody');
    tbody.textContent = '';
    (state.nodes || []).forEach(function (n) {
      var tr = el('tr');
      tr.dataset.node = n.id;
      var id = el('td', 'ids');
      codeCell(id, n.id);
      tr.appendChild(id);
      tr.appendChild(el('td', '', n.address || ''));
      tr.appendChild(el('td', 'num', String((n.connections || {}).pos || 0)));
      tr.appendChild(el('td', 'num', String((n.connections || {}).terminal || 0)));
      var started = el('td', '', fmtDateTime(n.startedAt));
      started.title = n.startedAt || '';
      tr.appendChild(started);
      var seen = el('td');
      timeCell(seen, n.lastSeen);
      tr.appendChild(seen);
      tbody.appendChild(tr);
    });
  }

  function renderConflicts() {
    var tbody = $('#conflicts tbody');
    tbody.textContent = '';
    state.conflicts.forEach(function (k) {
      var tr = el('tr');
      tr.dataset.conflict = k.apiKeyId;
      tr.dataset.merchant = k.merchantId;
      var key = el('td', 'ids');
      codeCell(key, k.apiKeyId);
      tr.appendChild(key);
      tr.appendChild(el('td', '', k.merchantId));
      tr.appendChild(el('td', 'num', String(k.displacements)));
      var last = el('td');
      timeCell(last, k.lastAt);
      tr.appendChild(last);
      tbody.appendChild(tr);
    });
    $('#conflicts-card').classList.toggle('alert', state.conflicts.length > 0);
    renderEmpty();
  }

  function txnOrder(a, b) {
    // newest first by creation, then by id (both descending)
    var d = Date.parse(b.createdAt) - Date.parse(a.createdAt);
    if (d) return d;
    return a.id < b.id ? 1 : (a.id > b.id ? -1 : 0);
  }

  function renderTxn(t, highlight) {
    var tbody = $('#transactions tbody');
    var tr = rows.txns.get(t.id);
    if (!tr) {
      tr = el('tr');
      for (var i = 0; i < 8; i++) tr.appendChild(el('td'));
      tr.cells[0].className = 'ids';
      tr.cells[5].className = 'num';
      tr.cells[6].className = 'status';
      tr.dataset.transaction = t.id;
      rows.txns.set(t.id, tr);
      // keep newest first: insert before the first row that is older
      var before = null;
      for (var j = 0; j < tbody.rows.length; j++) {
        var other = state.txns.get(tbody.rows[j].dataset.transaction);
        if (other && txnOrder(t, other) < 0) { before = tbody.rows[j]; break; }
      }
      tbody.insertBefore(tr, before);
    }
    tr.dataset.status = t.status;
    tr.dataset.terminal = t.terminalId;
    tr.dataset.merchant = t.merchantId;
    tr.dataset.version = String(t.version);
    var c = tr.cells;
    codeCell(c[0], t.id);
    c[1].textContent = t.merchantId;
    codeCell(c[2], t.terminalId);
    c[3].textContent = t.type + (t.parentId ? ' of ' + t.parentId : '');
    c[4].textContent = t.reference || '';
    c[5].textContent = (t.type === 'refund' ? '−' : '') + (t.amount || String(t.amountMinor)) + ' ' + (t.currency || '');
    c[6].textContent = '';
    c[6].appendChild(statusBadge('t-', t.status));
    if (t.errorCode) c[6].appendChild(el('span', 'sub', t.errorCode));
    timeCell(c[7], t.updatedAt);
    if (highlight) flash(tr);
  }

  function trimTxns() {
    if (state.txns.size <= MAX_TXNS) return;
    var all = Array.from(state.txns.values()).sort(txnOrder);
    all.slice(MAX_TXNS).forEach(function (t) {
      state.txns.delete(t.id);
      var tr = rows.txns.get(t.id);
      if (tr) { tr.remove(); rows.txns.delete(t.id); }
    });
  }

  function renderAges() {
    document.querySelectorAll('.age[data-since]').forEach(function (e) {
      e.textContent = fmtAge(e.dataset.since);
    });
    state.terminals.forEach(function (t) {
      var tr = rows.terminals.get(t.terminalId);
      if (tr && tr.cells[6].title !== (t.lastHeartbeat || '')) timeCell(tr.cells[6], t.lastHeartbeat);
    });
    state.connections.forEach(function (conn) {
      var tr = rows.connections.get(conn.connectionId);
      if (tr && tr.cells[4].title !== (conn.lastSeen || '')) timeCell(tr.cells[4], conn.lastSeen);
    });
    if (signedIn) {
      $('#server-time').textContent = new Date(Date.now() + state.offset).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
    }
  }

  function renderEmpty() {
    $('#terminals-empty').hidden = state.terminals.size > 0;
    $('#connections-empty').hidden = rows.connections.size > 0;
    $('#conflicts-empty').hidden = state.conflicts.length > 0;
    $('#transactions-empty').hidden = state.txns.size > 0;
  }

  function renderSummary() {
    var n = { online: 0, reconnecting: 0, offline: 0 };
    state.terminals.forEach(function (t) { n[t.status] = (n[t.status] || 0) + 1; });
    $('#stat-online b').textContent = n.online;
    $('#stat-reconnecting b').textContent = n.reconnecting;
    $('#stat-offline b').textContent = n.offline;
    $('#stat-pos b').textContent = rows.connections.size;
    $('#stat-conflicts b').textContent = state.conflicts.length;
    $('#stat-conflicts').classList.toggle('warn', state.conflicts.length > 0);
    $('#terminals-note').textContent = state.terminals.size + ' registered';
  }

  // ---- actions ----

  var toastTimer = null;
  function toast(text, isError) {
    var t = $('#toast');
    t.textContent = text;
    t.classList.toggle('error', !!isError);
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { t.hidden = true; }, 4000);
  }

  function onClick(ev) {
    var b = ev.target.closest('button[data-action="disconnect"]');
    if (!b || b.disabled) return;
    var id = b.dataset.connection;
    b.disabled = true;
    b.textContent = 'Disconnecting…';
    fetch(base + 'v1/ops/connections/' + encodeURIComponent(id) + '/disconnect', { method: 'POST', credentials: 'same-origin' })
      .then(function (r) {
        if (r.status === 204) { toast('Disconnected ' + id + ' (admin_action).'); return; }
        if (r.status === 401) { showLogin('Your session ended. Sign in again.'); return; }
        if (r.status === 404) {
          toast(id + ' was already gone.');
          var tr = rows.connections.get(id);
          if (tr) { tr.remove(); rows.connections.delete(id); state.connections.delete(id); renderEmpty(); renderSummary(); }
          return;
        }
        throw new Error('HTTP ' + r.status);
      })
      .catch(function (e) {
        toast('Could not disconnect ' + id + ': ' + e.message, true);
        b.disabled = false;
        b.textContent = 'Disconnect';
      });
  }

  // ---- start ----

  document.addEventListener('DOMContentLoaded', function () {
    $('#login-form').addEventListener('submit', onLogin);
    $('#logout').addEventListener('click', onLogout);
    document.addEventListener('click', onClick);
    setInterval(renderAges, 1000);
    checkSession().then(function (ok) {
      if (ok) showDashboard(); else showLogin(ok === null ? 'The hub did not answer; sign in to retry.' : '');
    });
  });
})();
