// termhub ops dashboard: plain JavaScript, no build step, no dependencies.
//
// It asks /ops/session whether the browser holds a live ops session, shows
// the sign-in form if not (POST /ops/login exchanges the token for an
// HttpOnly cookie holding a random session id), then opens the feed /v1/ops/ws: a snapshot first, then live
// updates that are applied to the tables in place. Every value is written
// with textContent, never as HTML.
//
// Trouble first: terminals are ordered by severity (offline, reconnecting,
// busy, idle), their health shown apart from their last payment's outcome;
// every unfinished transaction shows its age, and one not final STUCK_AFTER_S
// after its creation is marked stuck. One search box and a merchant filter
// narrow every table; a click on a terminal or a transaction opens its
// detail (GET /v1/ops/terminals/{id}/events, GET /v1/ops/transactions);
// "Load older transactions" pages back through GET /v1/ops/transactions.
(function () {
  'use strict';

  // The hub may sit behind a path prefix: everything is relative to the
  // directory that holds /ops/.
  var base = location.pathname.replace(/ops\/[^/]*$/, '');
  var FINAL = { COMPLETED: 1, DECLINED: 1, FAILED: 1, CANCELLED: 1, TIMED_OUT: 1, SUPERSEDED: 1, VOIDED: 1, AUTHORIZED: 1 };
  var MAX_TXNS = 100;
  // A transaction still not final this long after its creation is marked
  // stuck: a card payment takes seconds, and an operator should look before
  // the payment timeout ends it.
  var STUCK_AFTER_S = 60;
  // DETAIL_TXNS is how many of a terminal's transactions its drill-down
  // shows, newest first.
  var DETAIL_TXNS = 20;
  // Severity of a terminal's health, most urgent first.
  var SEVERITY = { offline: 0, reconnecting: 1, busy: 2, idle: 3 };

  var state = {
    terminals: new Map(),   // terminalId → row data
    connections: new Map(), // connectionId → ConnInfo (POS and terminal)
    conflicts: [],
    nodes: [],              // the live nodes of the hub (NodeInfo)
    txns: new Map(),        // transaction id → transaction
    offset: 0,              // hub clock minus browser clock, ms
    merchants: new Map(),   // merchant id → name
    cursor: null,           // after of GET /v1/ops/transactions for older ones
    loadedMore: false,      // older pages were loaded: keep every row
    trimmed: false,         // live updates dropped the oldest rows (trimTxns)
    pinned: new Set(),      // ids the search found on the hub: never trimmed
    detail: null            // the open drill-down: {kind, id, events, txns}
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
    closeDetail();
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
    state.pinned.clear();
    ['terminals', 'connections', 'txns'].forEach(function (k) { rows[k].clear(); });
    $('#terminals tbody').textContent = '';
    $('#connections tbody').textContent = '';
    $('#transactions tbody').textContent = '';

    state.merchants.clear();
    (s.merchants || []).forEach(function (m) { state.merchants.set(m.id, m.name || ''); });
    renderMerchantFilter();
    state.cursor = s.transactionsCursor || null;
    state.loadedMore = false;
    state.trimmed = false;

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
    sortTerminals();
    state.connections.forEach(function (c) { renderConnection(c, false); });
    renderConflicts();
    applyFilter();
    renderEmpty();
    renderLoadMore();
    if (state.detail) refreshDetail();
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
    sortTerminals();
    applyFilter();
    renderEmpty();
    var d = state.detail;
    if (d && d.kind === 'terminal' && d.id === u.terminalId) {
      d.events = [{ status: u.status, previousStatus: u.previousStatus || '', connectionId: u.connectionId || '', at: u.timestamp }]
        .concat((d.events || []).filter(function (e) { return eventKey(e) !== eventKey({ at: u.timestamp, status: u.status }); }));
      renderDetail();
    }
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
    applyFilter();
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
      if (live) { renderTerminal(term, false); sortTerminals(); }
    }
    renderTxn(t, live);
    trimTxns();
    if (live) {
      applyFilter();
      renderEmpty();
      var d = state.detail;
      if (d && d.kind === 'transaction' && d.id === t.id) renderDetail();
      if (d && d.kind === 'terminal' && d.id === t.terminalId && d.txns) {
        d.txns = [t].concat(d.txns.filter(function (x) { return x.id !== t.id; }));
        renderDetail();
      }
    }
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

  // idCell is a new table cell holding an id (codeCell).
  function idCell(text) {
    var td = el('td', 'ids');
    codeCell(td, text);
    return td;
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

  function merchantName(id) {
    return state.merchants.get(id) || id || '';
  }

  // merchantCell shows a merchant's name, its id in the tooltip.
  function merchantCell(td, id) {
    td.textContent = merchantName(id);
    td.title = id || '';
  }

  // health is what a terminal needs from an operator: offline and
  // reconnecting (its connection), busy (a payment not final), or idle.
  function health(t) {
    if (t.status === 'offline' || t.status === 'reconnecting') return t.status;
    return t.txnId && t.txnStatus && !FINAL[t.txnStatus] ? 'busy' : 'idle';
  }

  // ageSpan makes the live age of an unfinished transaction ("2m 13s"),
  // written by updateAge once the span is in its row (which it marks).
  function ageSpan(createdAt) {
    var a = el('span', 'txn-age');
    a.dataset.created = createdAt || '';
    return a;
  }

  function ageSeconds(iso) {
    var s = Math.floor((Date.now() + state.offset - Date.parse(iso)) / 1000);
    return s < 0 ? 0 : s;
  }

  function fmtDuration(s) {
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  }

  // updateAge rewrites an age span and marks it, and its row, stuck.
  function updateAge(a) {
    if (!a.dataset.created) return;
    var s = ageSeconds(a.dataset.created);
    a.textContent = fmtDuration(s);
    var stuck = s >= STUCK_AFTER_S;
    a.classList.toggle('stuck', stuck);
    a.title = stuck ? 'not final ' + fmtDuration(s) + ' after its creation (stuck after ' + STUCK_AFTER_S + ' s)' : 'age';
    var tr = a.closest('tr');
    if (tr) {
      tr.classList.toggle('stuck', stuck);
      tr.dataset.stuck = stuck ? 'true' : 'false';
    }
  }

  function renderTerminal(t, highlight) {
    var tr = rows.terminals.get(t.terminalId);
    if (!tr) {
      tr = el('tr');
      for (var i = 0; i < 7; i++) tr.appendChild(el('td'));
      tr.cells[0].className = 'ids';
      tr.cells[2].className = 'status';
      tr.cells[4].className = 'ids p2';
      tr.cells[6].className = 'actions';
      tr.dataset.terminal = t.terminalId;
      tr.tabIndex = 0;
      rows.terminals.set(t.terminalId, tr);
      $('#terminals tbody').appendChild(tr);
    }
    var h = health(t);
    tr.dataset.merchant = t.merchantId;
    tr.dataset.status = t.status;
    tr.dataset.health = h;
    tr.dataset.connection = t.connectionId || '';
    tr.dataset.transaction = t.txnId || '';
    tr.dataset.transactionStatus = t.txnStatus || '';
    tr.dataset.search = [t.terminalId, t.label, t.merchantId, merchantName(t.merchantId), t.connectionId, t.txnId].join(' ').toLowerCase();
    var c = tr.cells;
    c[0].textContent = '';
    c[0].appendChild(el('span', '', t.label || t.terminalId));
    var idLine = el('code', 'sub', t.terminalId);
    c[0].appendChild(idLine);
    merchantCell(c[1], t.merchantId);
    // Health: the connection's state, and busy or idle when online; apart
    // from the outcome of its last payment.
    c[2].textContent = '';
    var hc = el('span', 'health-cell');
    hc.appendChild(statusBadge('s-', t.status));
    if (t.status === 'online') {
      hc.appendChild(el('span', 'badge h-' + h, h));
    }
    c[2].appendChild(hc);
    c[3].textContent = '';
    if (t.txnId) {
      var wrap = el('span', 'payment-cell');
      var tx = state.txns.get(t.txnId);
      var final = FINAL[t.txnStatus];
      if (final) wrap.appendChild(el('span', 'outcome-label', 'last:'));
      if (t.txnStatus) wrap.appendChild(statusBadge('t-', t.txnStatus));
      var created = tx ? tx.createdAt : t.txnCreated;
      var age = !final && created ? wrap.appendChild(ageSpan(created)) : null;
      var code = el('code', '', t.txnId);
      code.dataset.openTransaction = t.txnId;
      wrap.appendChild(code);
      c[3].appendChild(wrap);
      if (age) updateAge(age);
    } else {
      var none = el('span', 'muted', '—');
      none.title = 'No payment in flight, and none among the loaded transactions';
      c[3].appendChild(none);
    }
    if (!c[3].querySelector('.txn-age')) { tr.classList.remove('stuck'); tr.dataset.stuck = 'false'; }
    codeCell(c[4], t.connectionId);
    nodeNote(c[4], t.connectionId && t.node);
    timeCell(c[5], t.lastHeartbeat);
    c[6].textContent = '';
    if (t.status === 'online' && t.connectionId) c[6].appendChild(disconnectButton(t.connectionId));
    if (highlight) flash(tr);
  }

  // sortTerminals puts the rows in severity order, then by merchant and
  // terminal id; rows already in place are not moved.
  function sortTerminals() {
    var tbody = $('#terminals tbody');
    var list = Array.from(state.terminals.values()).sort(function (a, b) {
      var d = SEVERITY[health(a)] - SEVERITY[health(b)];
      if (d) return d;
      if (a.merchantId !== b.merchantId) return a.merchantId < b.merchantId ? -1 : 1;
      return a.terminalId < b.terminalId ? -1 : (a.terminalId > b.terminalId ? 1 : 0);
    });
    list.forEach(function (t, i) {
      var tr = rows.terminals.get(t.terminalId);
      if (tr && tbody.rows[i] !== tr) tbody.insertBefore(tr, tbody.rows[i] || null);
    });
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
    c[3].className = 'p3';
    codeCell(c[0], conn.connectionId);
    nodeNote(c[0], conn.node);
    merchantCell(c[1], conn.merchantId);
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
      tr.appendChild(idCell(n.id));
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
      tr.appendChild(idCell(k.apiKeyId));
      var mc = el('td');
      merchantCell(mc, k.merchantId);
      tr.appendChild(mc);
      tr.appendChild(el('td', 'num', String(k.displacements)));
      var last = el('td');
      timeCell(last, k.lastAt);
      tr.appendChild(last);
      tbody.appendChild(tr);
    });
    $('#conflicts-card').classList.toggle('alert', state.conflicts.length > 0);
    applyFilter();
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
      tr.cells[1].className = 'p2';
      tr.cells[3].className = 'p3';
      tr.cells[5].className = 'num';
      tr.cells[6].className = 'status';
      tr.cells[7].className = 'p3';
      tr.dataset.transaction = t.id;
      tr.tabIndex = 0;
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
    tr.dataset.reference = t.reference || '';
    tr.dataset.search = [t.id, t.reference, t.terminalId, t.merchantId, merchantName(t.merchantId)].join(' ').toLowerCase();
    var c = tr.cells;
    codeCell(c[0], t.id);
    merchantCell(c[1], t.merchantId);
    codeCell(c[2], t.terminalId);
    c[3].textContent = t.type + (t.parentId ? ' of ' + t.parentId : '');
    c[4].textContent = t.reference || '';
    c[5].textContent = amountText(t);
    c[6].textContent = '';
    c[6].appendChild(statusBadge('t-', t.status));
    if (!FINAL[t.status]) {
      c[6].appendChild(document.createTextNode(' '));
      updateAge(c[6].appendChild(ageSpan(t.createdAt)));
    } else {
      tr.classList.remove('stuck');
      tr.dataset.stuck = 'false';
    }
    if (t.errorCode) c[6].appendChild(el('span', 'sub', t.errorCode));
    timeCell(c[7], t.updatedAt);
    if (highlight) flash(tr);
  }

  // timelineItem is one entry of a drawer's timeline: its time and badge;
  // the caller adds what caused it.
  function timelineItem(at, status, badge) {
    var li = el('li');
    li.dataset.status = status;
    var when = el('span', 'at', fmtDateTime(at));
    when.title = at;
    li.appendChild(when);
    li.appendChild(badge);
    return li;
  }

  function amountText(t) {
    return (t.type === 'refund' ? '−' : '') + (t.amount || String(t.amountMinor)) + ' ' + (t.currency || '');
  }

  // trimTxns keeps the newest MAX_TXNS transactions, unless older pages
  // were loaded: then every row stays, so that the next page follows on.
  function trimTxns() {
    if (state.loadedMore || state.txns.size <= MAX_TXNS) return;
    var all = Array.from(state.txns.values()).sort(txnOrder);
    state.trimmed = true;
    all.slice(MAX_TXNS).forEach(function (t) {
      if (state.pinned.has(t.id)) return; // looked up: older than the rest by nature
      state.txns.delete(t.id);
      var tr = rows.txns.get(t.id);
      if (tr) { tr.remove(); rows.txns.delete(t.id); }
    });
  }

  function renderAges() {
    document.querySelectorAll('.age[data-since]').forEach(function (e) {
      e.textContent = fmtAge(e.dataset.since);
    });
    document.querySelectorAll('.txn-age[data-created]').forEach(updateAge);
    state.terminals.forEach(function (t) {
      var tr = rows.terminals.get(t.terminalId);
      if (tr && tr.cells[5].title !== (t.lastHeartbeat || '')) timeCell(tr.cells[5], t.lastHeartbeat);
    });
    state.connections.forEach(function (conn) {
      var tr = rows.connections.get(conn.connectionId);
      if (tr && tr.cells[4].title !== (conn.lastSeen || '')) timeCell(tr.cells[4], conn.lastSeen);
    });
    if (signedIn) {
      $('#server-time').textContent = new Date(Date.now() + state.offset).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
    }
  }

  // ---- search and merchant filter ----

  function renderMerchantFilter() {
    var sel = $('#merchant-filter');
    var keep = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    state.merchants.forEach(function (name, id) {
      var o = el('option', '', name ? name + ' (' + id + ')' : id);
      o.value = id;
      sel.appendChild(o);
    });
    sel.value = state.merchants.has(keep) ? keep : '';
  }

  // applyFilter hides the rows that do not match the search box (any part
  // of a terminal's id, label, merchant or transaction id; of a
  // transaction's id, reference, terminal or merchant) or the merchant
  // filter.
  function applyFilter() {
    var q = $('#search').value.trim().toLowerCase();
    var m = $('#merchant-filter').value;
    var shown = { terminals: 0, txns: 0 };
    function match(tr) {
      if (m && tr.dataset.merchant !== m) return false;
      return !q || (tr.dataset.search || '').indexOf(q) >= 0;
    }
    rows.terminals.forEach(function (tr) { tr.hidden = !match(tr); if (!tr.hidden) shown.terminals++; });
    rows.txns.forEach(function (tr) { tr.hidden = !match(tr); if (!tr.hidden) shown.txns++; });
    rows.connections.forEach(function (tr) { tr.hidden = !!m && tr.dataset.merchant !== m; });
    document.querySelectorAll('#conflicts tbody tr').forEach(function (tr) { tr.hidden = !!m && tr.dataset.merchant !== m; });
    $('#terminals-none').hidden = !(state.terminals.size > 0 && shown.terminals === 0);
    $('#transactions-none').hidden = !(state.txns.size > 0 && shown.txns === 0);
    var note = '';
    if (q || m) note = shown.terminals + ' terminal' + (shown.terminals === 1 ? '' : 's') + ', ' + shown.txns + ' transaction' + (shown.txns === 1 ? '' : 's') + ' match';
    $('#search-note').textContent = note;
    $('#transactions-count').textContent = state.txns.size + ' loaded';
  }

  // lookUpReference asks the hub for a reference the loaded rows do not
  // have (a reference is exact: GET /v1/ops/transactions?reference=).
  var lookupTimer = null;
  function lookUpReference() {
    clearTimeout(lookupTimer);
    var q = $('#search').value.trim();
    // Never in a URL (and the logs of whatever stands before the hub):
    // what may be a card number, which a reference must not hold anyway.
    if (q.length < 3 || /\s/.test(q) || /\d{13}/.test(q.replace(/-/g, ''))) return;
    var found = false;
    rows.txns.forEach(function (tr) { if (!tr.hidden) found = true; });
    if (found) return;
    lookupTimer = setTimeout(function () {
      getJSON('v1/ops/transactions?limit=100&reference=' + encodeURIComponent(q)).then(function (page) {
        (page.data || []).forEach(function (t) { state.pinned.add(t.id); applyTransaction(t, true); });
      }, function () {});
    }, 300);
  }

  function onSearch() {
    applyFilter();
    lookUpReference();
  }

  // ---- older transactions ----

  function getJSON(path) {
    return fetch(base + path, { credentials: 'same-origin', cache: 'no-store' }).then(function (r) {
      if (r.status === 401) { showLogin('Your session ended. Sign in again.'); throw new Error('signed out'); }
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) throw new Error((body.error && body.error.message) || ('HTTP ' + r.status));
        return body;
      });
    });
  }

  function renderLoadMore() {
    $('#load-more').hidden = !state.cursor && !state.trimmed;
    $('#transactions-count').textContent = state.txns.size + ' loaded';
  }

  // loadMore adds the next page of older transactions. When live updates
  // made the page drop its oldest rows, the cursor no longer follows the
  // rows: it pages again from the newest until it finds rows not shown.
  function loadMore() {
    var b = $('#load-more');
    b.disabled = true;
    b.textContent = 'Loading…';
    var restart = !!state.trimmed;
    var pages = 0;
    function page(after) {
      return getJSON('v1/ops/transactions?limit=50' + (after ? '&after=' + encodeURIComponent(after) : '')).then(function (p) {
        var added = 0;
        state.loadedMore = true;
        (p.data || []).forEach(function (t) {
          if (!state.txns.has(t.id)) added++;
          applyTransaction(t, false);
        });
        state.cursor = p.nextCursor || null;
        if (restart && !added && state.cursor && ++pages < 40) return page(state.cursor);
        state.trimmed = false;
      });
    }
    page(restart ? '' : state.cursor).catch(function (e) {
      toast('Could not load older transactions: ' + e.message, true);
    }).then(function () {
      b.disabled = false;
      b.textContent = 'Load older transactions';
      applyFilter();
      renderEmpty();
      renderLoadMore();
    });
  }

  // ---- drill-down ----

  function findTxn(id) {
    var t = state.txns.get(id);
    if (t) return t;
    var d = state.detail;
    if (d && d.txns) for (var i = 0; i < d.txns.length; i++) if (d.txns[i].id === id) return d.txns[i];
    return null;
  }

  function openTransaction(id) {
    state.detail = { kind: 'transaction', id: id, txn: findTxn(id) };
    renderDetail();
  }

  function openTerminal(id) {
    state.detail = { kind: 'terminal', id: id, events: null, txns: null };
    renderDetail();
    refreshDetail();
  }

  // refreshDetail reads a terminal's status changes and recent
  // transactions from the hub.
  function refreshDetail() {
    var d = state.detail;
    if (!d || d.kind !== 'terminal') return;
    var err = $('#detail-error');
    Promise.all([
      getJSON('v1/ops/terminals/' + encodeURIComponent(d.id) + '/events?limit=50'),
      getJSON('v1/ops/transactions?limit=' + DETAIL_TXNS + '&terminalId=' + encodeURIComponent(d.id))
    ]).then(function (res) {
      if (state.detail !== d) return;
      var seen = {};
      (d.events || []).forEach(function (e) { seen[eventKey(e)] = 1; });
      // Changes the feed brought while the request was out stay on top.
      d.events = (d.events || []).concat((res[0].data || []).filter(function (e) { return !seen[eventKey(e)]; }));
      var byId = {};
      (d.txns || []).forEach(function (t) { byId[t.id] = t; });
      (res[1].data || []).forEach(function (t) { if (!byId[t.id] || byId[t.id].version < t.version) byId[t.id] = t; });
      d.txns = Object.keys(byId).map(function (k) { return byId[k]; });
      err.hidden = true;
      renderDetail();
    }, function (e) {
      if (state.detail !== d) return;
      err.textContent = 'Could not read the terminal\'s history: ' + e.message;
      err.hidden = false;
    });
  }

  // eventKey identifies a status change however its time is written.
  function eventKey(e) {
    return Date.parse(e.at) + ' ' + e.status;
  }

  function closeDetail() {
    state.detail = null;
    $('#detail').hidden = true;
  }

  // fact adds a name and its value (text, code, or an element) to dl.
  function fact(dl, name, value, code) {
    dl.appendChild(el('dt', '', name));
    var dd = el('dd');
    if (value instanceof Node) dd.appendChild(value);
    else if (code) dd.appendChild(el('code', '', value || '—'));
    else dd.textContent = value || '—';
    dl.appendChild(dd);
  }

  function renderDetail() {
    var d = state.detail;
    if (!d) return;
    var box = $('#detail');
    box.hidden = false;
    box.dataset.kind = d.kind;
    box.dataset.id = d.id;
    var facts = $('#detail-facts');
    facts.textContent = '';
    $('#detail-timeline-box').hidden = d.kind !== 'transaction';
    $('#detail-events-box').hidden = d.kind !== 'terminal';
    $('#detail-txns-box').hidden = d.kind !== 'terminal';
    if (d.kind === 'transaction') {
      var t = findTxn(d.id) || d.txn;
      if (t) d.txn = t;
      $('#detail-title').textContent = 'Transaction ' + d.id;
      var ol = $('#detail-timeline');
      ol.textContent = '';
      if (!t) { facts.appendChild(el('dd', 'muted', 'Not loaded.')); return; }
      fact(facts, 'Status', statusBadge('t-', t.status));
      fact(facts, 'Merchant', merchantName(t.merchantId) + ' (' + t.merchantId + ')');
      fact(facts, 'Terminal', t.terminalId, true);
      fact(facts, 'Type', t.type + (t.parentId ? ' of ' + t.parentId : ''));
      fact(facts, 'Reference', t.reference);
      fact(facts, 'Amount', amountText(t));
      fact(facts, 'Created', fmtDateTime(t.createdAt));
      if (t.errorCode) fact(facts, 'Error', t.errorCode + (t.errorMessage ? ': ' + t.errorMessage : ''));
      if (t.authCode) fact(facts, 'Auth code', t.authCode);
      (t.history || []).forEach(function (h) {
        var li = timelineItem(h.at, h.status, statusBadge('t-', h.status));
        if (h.errorCode) li.appendChild(el('code', '', h.errorCode));
        li.appendChild(el('span', 'cause', h.cause || ''));
        ol.appendChild(li);
      });
      return;
    }
    var term = state.terminals.get(d.id) || { terminalId: d.id, merchantId: '', status: '' };
    $('#detail-title').textContent = 'Terminal ' + (term.label ? term.label + ' · ' : '') + d.id;
    var hw = el('span', 'health-cell');
    if (term.status) {
      hw.appendChild(statusBadge('s-', term.status));
      if (term.status === 'online') hw.appendChild(el('span', 'badge h-' + health(term), health(term)));
    }
    fact(facts, 'Health', hw);
    fact(facts, 'Merchant', merchantName(term.merchantId) + (term.merchantId ? ' (' + term.merchantId + ')' : ''));
    fact(facts, 'Connection', term.connectionId, true);
    fact(facts, 'Last heartbeat', fmtDateTime(term.lastHeartbeat));
    var ev = $('#detail-events');
    ev.textContent = '';
    (d.events || []).slice().sort(function (a, b) { return Date.parse(b.at) - Date.parse(a.at); }).forEach(function (e) {
      var li = timelineItem(e.at, e.status, statusBadge('s-', e.status));
      li.appendChild(el('span', 'cause', (e.previousStatus ? 'from ' + e.previousStatus : '') + (e.connectionId ? ' · ' + e.connectionId : '')));
      ev.appendChild(li);
    });
    $('#detail-events-empty').hidden = !d.events || d.events.length > 0;
    var tbody = $('#detail-txns tbody');
    tbody.textContent = '';
    (d.txns || []).slice().sort(txnOrder).slice(0, DETAIL_TXNS).forEach(function (t) {
      var tr = el('tr');
      tr.dataset.transaction = t.id;
      tr.dataset.status = t.status;
      tr.appendChild(idCell(t.id));
      tr.appendChild(el('td', '', t.reference || ''));
      tr.appendChild(el('td', 'num', amountText(t)));
      var st = el('td', 'status');
      st.appendChild(statusBadge('t-', t.status));
      tr.appendChild(st);
      tbody.appendChild(tr);
    });
    $('#detail-txns-empty').hidden = !d.txns || d.txns.length > 0;
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
    if (!b) {
      var open = ev.target.closest('[data-open-transaction]');
      if (open) { openTransaction(open.dataset.openTransaction); return; }
      var row = ev.target.closest('#transactions tbody tr, #detail-txns tbody tr');
      if (row) { openTransaction(row.dataset.transaction); return; }
      row = ev.target.closest('#terminals tbody tr');
      if (row) openTerminal(row.dataset.terminal);
      return;
    }
    if (b.disabled) return;
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
    document.addEventListener('keydown', function (ev) {
      if (ev.key === 'Escape' && state.detail) { closeDetail(); return; }
      if (ev.key === 'Enter' && ev.target.matches && ev.target.matches('#terminals tbody tr, #transactions tbody tr')) onClick(ev);
    });
    $('#search').addEventListener('input', onSearch);
    $('#merchant-filter').addEventListener('change', applyFilter);
    $('#load-more').addEventListener('click', loadMore);
    $('#detail-close').addEventListener('click', closeDetail);
    setInterval(renderAges, 1000);
    checkSession().then(function (ok) {
      if (ok) showDashboard(); else showLogin(ok === null ? 'The hub did not answer; sign in to retry.' : '');
    });
  });
})();
