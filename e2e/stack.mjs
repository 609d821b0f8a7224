// A private Ferrobase stack for one test file: scripts/up in a fresh temporary
// FERROBASE_HOME on free ports, scripts/down (and removal of the directory)
// afterwards, also when a test or the start-up fails.
//
//   import { useStack, client } from '../stack.mjs';
//   const stack = useStack();              // registers before/after hooks
//   test('...', async () => { const supabase = client(stack, stack.anonKey); ... });
//
// The binaries must already be built (`npm test` builds them first): the stack
// runs with FERROBASE_SKIP_BUILD=1 and FERROBASE_PROFILE=debug.
//
// Environment:
//   FERROBASE_E2E_KEEP=1            keep each temporary FERROBASE_HOME (state and logs) after the run
//   FERROBASE_E2E_PROFILE=release   test the release binaries (build them first) instead of debug
import { after, before } from 'node:test';
import { spawn, spawnSync } from 'node:child_process';
import { createHmac, randomInt } from 'node:crypto';
import { rmSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const UP = path.join(REPO, 'scripts', 'up');
const DOWN = path.join(REPO, 'scripts', 'down');
const START_TIMEOUT_MS = 240_000;
const STOP_TIMEOUT_MS = 120_000;

/** Stacks started by this process and not stopped yet (stopped on SIGINT/SIGTERM too). */
const running = new Set();

/** Parses KEY=VALUE lines as scripts/up writes them (optionally single-quoted). */
export function parseEnvFile(text) {
  const vars = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (!m) continue;
    let value = m[2];
    if (value.length >= 2 && value.startsWith("'") && value.endsWith("'")) {
      value = value.slice(1, -1).replaceAll("'\\''", "'");
    }
    vars[m[1]] = value;
  }
  return vars;
}

/** A TCP port nothing listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Runs a command; resolves with its exit code and output (never rejects on a non-zero exit). */
function run(command, args, env, timeoutMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    const timer = setTimeout(() => {
      output += `\n[e2e] ${path.basename(command)} did not finish in ${timeoutMs} ms; killed\n`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    // 'exit', not 'close': a server started in the background must not keep us waiting
    // if it ever inherited the pipes.
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      setImmediate(() => resolve({ code: code ?? 128, signal, output }));
    });
  });
}

/** The environment for scripts/up and scripts/down: ours without any FERROBASE_* leaking in. */
function stackEnv(home, port, extra) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('FERROBASE_')) env[key] = value;
  }
  return {
    ...env,
    FERROBASE_HOME: home,
    FERROBASE_PORT: String(port),
    // Private ports are searched upwards from here; a random base keeps two suites apart.
    FERROBASE_PORT_BASE: String(randomInt(20_000, 50_000)),
    FERROBASE_SKIP_BUILD: '1',
    FERROBASE_PROFILE: process.env.FERROBASE_E2E_PROFILE ?? 'debug',
    // Nothing is in flight when a test stack stops: a short drain keeps runs quick.
    FERROBASE_SHUTDOWN_GRACE_MS: '2000',
    ...extra,
  };
}

/**
 * Starts a stack. `env` adds variables for scripts/up (for example FERROBASE_JWT_SECRET
 * or FERROBASE_RATE_LIMITS). Resolves with the values of local.env (`url`, `anonKey`,
 * `serviceRoleKey`, `jwtSecret`, `dbUrl`, `redisUrl`, `vars`) plus `home`, `env` (the
 * environment scripts/up ran with), `upOutput`, `up()` and `down()` (run the scripts
 * again, resolving with `{code, output}`) and `stop()` (scripts/down, then remove `home`).
 */
export async function startStack({ env: extra = {} } = {}) {
  const home = await mkdtemp(path.join(os.tmpdir(), 'ferrobase-e2e-'));
  // PostgreSQL runs as the postgres user when we are root: it must reach $home/pg.
  await chmod(home, 0o755);
  const env = stackEnv(home, await freePort(), extra);
  const stack = { home, env };
  let stopped = false;
  stack.up = () => run(UP, [], env, START_TIMEOUT_MS);
  stack.down = () => run(DOWN, [], env, STOP_TIMEOUT_MS);
  stack.stop = async () => {
    if (stopped) return;
    stopped = true;
    running.delete(stack);
    const down = await stack.down();
    if (down.code !== 0) {
      throw new Error(`scripts/down failed (exit ${down.code}); logs kept in ${home}\n${down.output}`);
    }
    if (process.env.FERROBASE_E2E_KEEP === '1') {
      process.stderr.write(`[e2e] stack state and logs kept in ${home}\n`);
    } else {
      await rm(home, { recursive: true, force: true });
    }
  };
  running.add(stack);

  try {
    const up = await stack.up();
    if (up.code !== 0) {
      throw new Error(`scripts/up failed (exit ${up.code}):\n${up.output}`);
    }
    stack.upOutput = up.output;
    const vars = parseEnvFile(await readFile(path.join(home, 'local.env'), 'utf8'));
    Object.assign(stack, fromLocalEnv(vars));
  } catch (err) {
    await stack.stop().catch((stopErr) => {
      err.message += `\n(and stopping failed too: ${stopErr.message})`;
    });
    throw err;
  }
  return stack;
}

function fromLocalEnv(vars) {
  for (const key of ['FERROBASE_URL', 'FERROBASE_ANON_KEY', 'FERROBASE_SERVICE_ROLE_KEY', 'FERROBASE_JWT_SECRET']) {
    if (!vars[key]) throw new Error(`local.env has no ${key}`);
  }
  return {
    url: vars.FERROBASE_URL,
    anonKey: vars.FERROBASE_ANON_KEY,
    serviceRoleKey: vars.FERROBASE_SERVICE_ROLE_KEY,
    jwtSecret: vars.FERROBASE_JWT_SECRET,
    dbUrl: vars.FERROBASE_DB_URL,
    redisUrl: vars.FERROBASE_REDIS_URL,
    vars,
  };
}

/**
 * Registers a `before` hook that starts a stack and an `after` hook that stops it.
 * Returns an object that is filled with the stack's fields once `before` ran.
 * `options.setup(stack)`, if given, runs in the same hook once the stack is up (fixtures):
 * Node 20 runs top-level `before` hooks concurrently, so a second hook could not rely on it.
 */
export function useStack({ setup, ...options } = {}) {
  const stack = {};
  let started;
  before(async () => {
    started = await startStack(options);
    Object.assign(stack, started);
    if (setup) await setup(stack);
  }, { timeout: START_TIMEOUT_MS + 10_000 });
  after(async () => {
    if (started) await started.stop();
  }, { timeout: STOP_TIMEOUT_MS + 10_000 });
  return stack;
}

// If the test process is interrupted, stop what it started before exiting. Output is
// ignored: under `node --test` the runner that read it may already be gone.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const stack of running) {
      spawnSync(DOWN, [], { env: stack.env, stdio: 'ignore', timeout: STOP_TIMEOUT_MS });
      if (process.env.FERROBASE_E2E_KEEP !== '1') rmSync(stack.home, { recursive: true, force: true });
    }
    process.exit(128 + os.constants.signals[signal]);
  });
}

/** A supabase-js client the way a server-side Node app makes one. */
export function client(stack, key, options = {}) {
  return createClient(stack.url, key, {
    ...options,
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false, ...options.auth },
    // Node 20 has no global WebSocket.
    realtime: { transport: WebSocket, ...options.realtime },
  });
}

const b64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 JWT of `payload` signed with `secret` (to forge keys and tokens). */
export function signJwt(payload, secret, header = { alg: 'HS256', typ: 'JWT' }) {
  const unsigned = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

/** The claims of a JWT, unverified. */
export function decodeJwt(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

export const now = () => Math.floor(Date.now() / 1000);
