// Runs the real termhub binary (built by test/build.mjs) and its simulated
// terminals (`termhub sim`) for the SDK's tests.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = join(here, '..', '.test-bin', 'termhub');
export const OPS_TOKEN = 'ops-test-token';

// Merchant m_sdk: an API key and a terminal per test, so that tests sharing a
// hub neither displace each other's connection nor find the terminal busy.
export const KEYS = Array.from({ length: 16 }, (_, i) => ({ apiKey: `pk_t${i}`, secret: `sk_t${i}` }));
export const TERMINALS = Array.from({ length: 16 }, (_, i) => ({ id: `T${i}`, secret: `dk_t${i}` }));
const merchants = `merchants:
  - id: m_sdk
    name: SDK tests
    api_keys:
${KEYS.map((k) => `      - id: ${k.apiKey}\n        secret: ${k.secret}`).join('\n')}
    terminals:
${TERMINALS.map((t) => `      - device_id: ${t.id}\n        secret: ${t.secret}\n        label: ${t.id}`).join('\n')}
      - device_id: OFFLINE-1
        secret: dk_off
        label: never connected
`;

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

/** Polls cond() until it is truthy or the deadline passes (then throws). */
export async function waitFor(what, cond, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export class Hub {
  constructor({ redisUrl = process.env.REDIS_URL ?? '', grace = '60s' } = {}) {
    if (!existsSync(BIN)) throw new Error(`${BIN} missing: run node test/build.mjs`);
    this.redisUrl = redisUrl;
    this.grace = grace;
    this.dir = mkdtempSync(join(tmpdir(), 'termhub-sdk-'));
    this.proc = null;
    this.sim = null;
  }

  get baseUrl() { return `http://127.0.0.1:${this.port}`; }

  async start() {
    this.port ??= await freePort();
    this.prefix ??= `sdk-${randomBytes(6).toString('hex')}:`;
    const cfg = `listen: "127.0.0.1:${this.port}"
redis_url: "${this.redisUrl}"
key_prefix: "${this.prefix}"
log_level: error
grace_period: ${this.grace}
heartbeat_interval: 15s
ops_token: "${OPS_TOKEN}"
${merchants}`;
    this.config = join(this.dir, 'termhub.yaml');
    writeFileSync(this.config, cfg);
    this.proc = spawn(BIN, ['serve', '--config', this.config], { stdio: ['ignore', 'ignore', 'inherit'] });
    const proc = this.proc;
    let exited = false;
    proc.on('exit', () => { exited = true; });
    await waitFor('the hub to be ready', async () => {
      if (exited) throw new Error('the hub exited at start-up');
      try { return (await fetch(`${this.baseUrl}/readyz`)).status === 200; } catch { return false; }
    }, 20000);
  }

  /** Simulated terminals T0..T15 (not OFFLINE-1). */
  async startSim(extra = []) {
    const args = ['sim', '--url', this.baseUrl, '--card-delay', '50ms', '--return-delay', '1s', ...extra];
    for (const t of TERMINALS) args.push('--terminal', `${t.id}:${t.secret}`);
    this.sim = spawn(BIN, args, { stdio: ['ignore', 'ignore', 'inherit'] });
    await this.waitTerminalsOnline();
  }

  async opsTerminals() {
    const r = await fetch(`${this.baseUrl}/v1/ops/terminals`, { headers: { Authorization: `Bearer ${OPS_TOKEN}` } });
    return r.json();
  }

  async waitTerminalsOnline() {
    await waitFor('the simulated terminals to be online', async () => {
      try {
        const j = await this.opsTerminals();
        const rows = j.terminals ?? j.data ?? [];
        return TERMINALS.every((t) => rows.some((r) => r.terminalId === t.id && r.status === 'online'));
      } catch { return false; }
    }, 20000);
  }

  /** Kicks a POS connection as an operator would (forceDisconnect admin_action, close 4003). */
  async kick(connectionId) {
    const r = await fetch(`${this.baseUrl}/v1/ops/connections/${connectionId}/disconnect`, { method: 'POST', headers: { Authorization: `Bearer ${OPS_TOKEN}` } });
    if (r.status >= 300) throw new Error(`kick: ${r.status} ${await r.text()}`);
  }

  /** SIGKILL: no draining, no acks applied late. */
  async kill9() {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
  }

  async stop() {
    for (const p of [this.sim, this.proc]) {
      if (p && p.exitCode === null && p.signalCode === null) {
        const gone = new Promise((r) => p.once('exit', r));
        p.kill('SIGKILL');
        await gone;
      }
    }
  }
}
