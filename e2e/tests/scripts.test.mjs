// scripts/up and scripts/down: what they write, what they start, and that both
// are safe to run twice. Runs its own stack with the fixed secret of the official
// Supabase test suites, so the Supabase CLI demo keys must work too.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { decodeJwt, now, parseEnvFile, useStack } from '../stack.mjs';

const SUPABASE_TEST_SECRET = 'super-secret-jwt-token-with-at-least-32-characters-long';
// The Supabase CLI demo keys (iss "supabase-demo"), signed with that secret.
const DEMO_ANON_KEY =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0';
const DEMO_SERVICE_ROLE_KEY =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU';

const stack = useStack({ env: { FERROBASE_JWT_SECRET: SUPABASE_TEST_SECRET } });

const file = (name) => path.join(stack.home, name);
const pids = () =>
  Object.fromEntries(
    readdirSync(file('run'))
      .filter((f) => f.endsWith('.pid'))
      .map((f) => [f.slice(0, -4), Number(readFileSync(file(`run/${f}`), 'utf8').trim())]),
  );
const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const ports = () => parseEnvFile(readFileSync(file('ports.env'), 'utf8'));
const psql = (sql) =>
  execFileSync(path.join(ports().PG_BIN, 'psql'), [stack.dbUrl, '-XAtc', sql], { encoding: 'utf8' }).trim();
const listening = (port) =>
  new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
const verifiesWith = (token, secret) => {
  const [header, payload, signature] = token.split('.');
  return createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url') === signature;
};

test('local.env holds the URL, the keys, the secret and the database', () => {
  const vars = parseEnvFile(readFileSync(file('local.env'), 'utf8'));
  assert.equal(vars.FERROBASE_URL, `http://127.0.0.1:${stack.env.FERROBASE_PORT}`);
  assert.equal(vars.FERROBASE_JWT_SECRET, SUPABASE_TEST_SECRET, 'the secret given in the environment is used');
  assert.match(vars.FERROBASE_DB_URL, /^postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/);
  assert.match(vars.FERROBASE_REDIS_URL, /^redis:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(statSync(file('local.env')).mode & 0o077, 0, 'local.env is private to its owner');

  for (const [key, role] of [
    [vars.FERROBASE_ANON_KEY, 'anon'],
    [vars.FERROBASE_SERVICE_ROLE_KEY, 'service_role'],
  ]) {
    assert.ok(verifiesWith(key, SUPABASE_TEST_SECRET), `the ${role} key is signed with the secret`);
    const claims = decodeJwt(key);
    assert.equal(claims.role, role);
    assert.equal(claims.iss, 'ferrobase');
    assert.ok(claims.exp > now() + 365 * 24 * 3600, 'keys last for years');
    assert.equal(claims.sub, undefined, 'API keys have no subject');
  }
  // scripts/up prints what a developer needs.
  assert.ok(stack.upOutput.includes(vars.FERROBASE_URL));
  assert.ok(stack.upOutput.includes(vars.FERROBASE_ANON_KEY));
  assert.ok(stack.upOutput.includes(vars.FERROBASE_SERVICE_ROLE_KEY));
});

test('the gateway answers /health', async () => {
  const res = await fetch(`${stack.url}/health`);
  assert.equal(res.status, 200);
});

test('keys minted by scripts/up and the Supabase CLI demo keys open /auth/v1', async () => {
  for (const key of [stack.anonKey, stack.serviceRoleKey, DEMO_ANON_KEY, DEMO_SERVICE_ROLE_KEY]) {
    const res = await fetch(`${stack.url}/auth/v1/health`, { headers: { apikey: key } });
    assert.equal(res.status, 200, `${decodeJwt(key).iss}/${decodeJwt(key).role}: ${await res.text()}`);
  }
});

test('PostgreSQL: private, 127.0.0.1 only, logical WAL, bootstrapped roles', () => {
  assert.equal(psql('show wal_level'), 'logical');
  assert.equal(psql('show listen_addresses'), '127.0.0.1');
  assert.notEqual(new URL(stack.dbUrl).port, '5432', 'never the system PostgreSQL');
  const roles = psql(
    "select string_agg(rolname, ',' order by rolname) from pg_roles where rolname in ('anon','authenticated','service_role','authenticator')",
  );
  assert.equal(roles, 'anon,authenticated,authenticator,service_role');
});

test('Redis: private and answering', () => {
  const { port } = new URL(stack.redisUrl);
  assert.notEqual(port, '6379', 'never the system Redis');
  assert.equal(execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', port, 'ping'], { encoding: 'utf8' }).trim(), 'PONG');
});

test('every process has a pid file and a log; services listen on private ports', async () => {
  const running = pids();
  for (const name of ['gateway', 'auth', 'redis']) {
    assert.ok(running[name], `run/${name}.pid exists`);
    assert.ok(alive(running[name]), `${name} (pid ${running[name]}) is alive`);
    assert.ok(statSync(file(`logs/${name}.log`)).isFile(), `logs/${name}.log exists`);
  }
  const p = ports();
  assert.ok(await listening(Number(p.AUTH_GRPC_PORT)), 'auth gRPC port listens');
  const grpc = p.AUTH_GRPC_PORT;
  const metrics = [p.AUTH_METRICS_PORT, p.GATEWAY_METRICS_PORT];
  assert.equal(new Set([grpc, ...metrics, p.PG_PORT, p.REDIS_PORT, stack.env.FERROBASE_PORT]).size, 6, 'distinct ports');
  for (const port of metrics) {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(res.status, 200, `metrics on ${port}`);
  }
});

test('scripts/up again leaves the healthy stack alone and prints the same values', async () => {
  const before = pids();
  const localEnv = readFileSync(file('local.env'), 'utf8');
  const again = await stack.up();
  assert.equal(again.code, 0, again.output);
  assert.deepEqual(pids(), before, 'no process was restarted');
  assert.equal(readFileSync(file('local.env'), 'utf8'), localEnv);
  assert.match(again.output, /gateway already running/);
  assert.match(again.output, /auth already running/);
  assert.ok(again.output.includes(stack.anonKey), 'the keys are printed again');
});

test('scripts/up restarts a process that died and cleans its stale pid file', async () => {
  const { auth: oldPid, gateway } = pids();
  process.kill(oldPid, 'SIGKILL');
  while (alive(oldPid)) await new Promise((r) => setTimeout(r, 50));

  const again = await stack.up();
  assert.equal(again.code, 0, again.output);
  assert.match(again.output, /removing stale pid file .*auth\.pid/);
  const current = pids();
  assert.notEqual(current.auth, oldPid);
  assert.ok(alive(current.auth));
  assert.equal(current.gateway, gateway, 'the gateway was left alone');
  const res = await fetch(`${stack.url}/auth/v1/health`, { headers: { apikey: stack.anonKey } });
  assert.equal(res.status, 200, 'the gateway reaches the new auth process');
});

test('scripts/down stops everything, and is safe to run twice', async () => {
  const running = pids();
  const p = ports();
  const first = await stack.down();
  assert.equal(first.code, 0, first.output);
  // Each process must exit on SIGTERM within its drain time (FERROBASE_SHUTDOWN_GRACE_MS);
  // scripts/down only kills one that did not.
  assert.doesNotMatch(first.output, /did not stop/, 'every process stopped gracefully on SIGTERM');
  for (const [name, pid] of Object.entries(running)) assert.ok(!alive(pid), `${name} stopped`);
  assert.deepEqual(readdirSync(file('run')).filter((f) => f.endsWith('.pid')), [], 'pid files removed');
  for (const port of [stack.env.FERROBASE_PORT, p.PG_PORT, p.REDIS_PORT, p.AUTH_GRPC_PORT]) {
    assert.equal(await listening(Number(port)), false, `nothing listens on ${port} any more`);
  }
  const second = await stack.down();
  assert.equal(second.code, 0, second.output);
  assert.match(second.output, /nothing was running/);
});
