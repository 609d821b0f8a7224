// The gateway as supabase-js meets it: API keys, bearer tokens, the answer of a
// surface whose service is not running, realtime, CORS, limits. Error bodies
// must be the shapes Supabase's own edge (Kong) and services answer with.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import WebSocket from 'ws';
import { client, decodeJwt, now, signJwt, useStack } from '../stack.mjs';

const RATE_LIMIT = 3;
const MAX_BODY_BYTES = 4096;
const stack = useStack({
  env: {
    // Only auth runs behind this gateway, so the other surfaces show how the gateway
    // answers for a service that is not running.
    FERROBASE_SKIP_SERVICES: 'rest storage realtime meta',
    // A tight rule on one path, so one test can observe the limiter.
    FERROBASE_RATE_LIMITS: `POST /auth/v1/token=${RATE_LIMIT}/60`,
    FERROBASE_MAX_BODY_BYTES: String(MAX_BODY_BYTES),
  },
});

const INVALID_API_KEY = {
  message: 'Invalid API key',
  hint: 'Double check your Supabase `anon` or `service_role` API key.',
};
const NO_API_KEY = {
  message: 'No API key found in request',
  hint: 'No `apikey` request header or url param was found.',
};
const OTHER_SECRET = 'this-is-not-the-project-secret-but-is-long-enough';

const anonClaims = () => ({ iss: 'ferrobase', role: 'anon', iat: now(), exp: now() + 3600 });
const forgedServiceKey = () =>
  signJwt({ iss: 'ferrobase', role: 'service_role', iat: now(), exp: now() + 3600 }, OTHER_SECRET);
const expiredAnonKey = () =>
  signJwt({ iss: 'ferrobase', role: 'anon', iat: now() - 7200, exp: now() - 3600 }, stack.jwtSecret);
const userToken = (claims) =>
  signJwt(
    {
      iss: `${stack.url}/auth/v1`,
      sub: '6b1d3d5e-0f33-4b5e-9f37-2f4f6c3b8a10',
      aud: 'authenticated',
      role: 'authenticated',
      email: 'someone@example.com',
      phone: '',
      session_id: '2c3c2c14-8f0e-4d55-8c3a-3b8f4bde1c2e',
      is_anonymous: false,
      iat: now(),
      exp: now() + 3600,
      ...claims,
    },
    stack.jwtSecret,
  );

async function json(res) {
  const text = await res.text();
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, `JSON body expected, got: ${text}`);
  return JSON.parse(text);
}

test('GET /health answers 200 without an API key', async () => {
  const res = await fetch(`${stack.url}/health`);
  assert.equal(res.status, 200);
  await json(res);
});

test('an unknown path answers 404 in Kong\'s shape', async () => {
  const res = await fetch(`${stack.url}/nope/v1/things`, { headers: { apikey: stack.anonKey } });
  assert.equal(res.status, 404);
  assert.deepEqual(await json(res), { message: 'no Route matched with those values' });
});

test('an invalid API key: supabase-js gets "Invalid API key" (401) from rest', async () => {
  const supabase = client(stack, 'not-a-key');
  const { data, error, status } = await supabase.from('todos').select();
  assert.equal(status, 401);
  assert.equal(data, null);
  assert.equal(error.message, 'Invalid API key');
  assert.equal(error.hint, INVALID_API_KEY.hint);
});

test('an invalid API key: supabase.auth gets "Invalid API key" (401)', async () => {
  const supabase = client(stack, 'not-a-key');
  const { data, error } = await supabase.auth.signInWithPassword({ email: 'a@example.com', password: 'secret123' });
  assert.equal(data.session, null);
  assert.equal(error?.name, 'AuthApiError', String(error));
  assert.equal(error.status, 401);
  assert.equal(error.message, 'Invalid API key');
});

test('the raw answer to an invalid API key is Kong\'s body on every keyed surface', async () => {
  for (const path of ['/rest/v1/todos', '/auth/v1/user', '/auth/v1/health']) {
    const res = await fetch(`${stack.url}${path}`, { headers: { apikey: 'not-a-key', authorization: 'Bearer not-a-key' } });
    assert.equal(res.status, 401, path);
    assert.deepEqual(await json(res), INVALID_API_KEY, path);
  }
});

test('no API key at all: 401 "No API key found in request"', async () => {
  for (const path of ['/rest/v1/todos', '/auth/v1/settings']) {
    const res = await fetch(`${stack.url}${path}`);
    assert.equal(res.status, 401, path);
    assert.deepEqual(await json(res), NO_API_KEY, path);
  }
  // An empty apikey header is no key either.
  const res = await fetch(`${stack.url}/rest/v1/todos`, { headers: { apikey: '' } });
  assert.equal(res.status, 401);
  assert.deepEqual(await json(res), NO_API_KEY);
});

test('the apikey may come as a URL parameter, as Kong allows', async () => {
  const res = await fetch(`${stack.url}/rest/v1/todos?apikey=${encodeURIComponent(stack.anonKey)}`);
  assert.notEqual(res.status, 401, await res.clone().text());
  const bad = await fetch(`${stack.url}/rest/v1/todos?apikey=not-a-key`);
  assert.equal(bad.status, 401);
  assert.deepEqual(await json(bad), INVALID_API_KEY);
});

test('a service_role key signed with another secret is refused everywhere', async () => {
  const forged = forgedServiceKey();
  assert.equal(decodeJwt(forged).role, 'service_role');
  const supabase = client(stack, forged);

  const rest = await supabase.from('todos').select();
  assert.equal(rest.status, 401);
  assert.equal(rest.error.message, 'Invalid API key');

  const admin = await supabase.auth.admin.listUsers();
  assert.equal(admin.error?.status, 401, String(admin.error));
  assert.equal(admin.error.message, 'Invalid API key');
});

test('an unsigned ("alg": "none") service_role key is refused', async () => {
  const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
  const payload = Buffer.from(JSON.stringify({ role: 'service_role', exp: now() + 3600 })).toString('base64url');
  const { status, error } = await client(stack, `${header}.${payload}.`).from('todos').select();
  assert.equal(status, 401);
  assert.equal(error.message, 'Invalid API key');
});

test('an expired API key is refused', async () => {
  const { status, error } = await client(stack, expiredAnonKey()).from('todos').select();
  assert.equal(status, 401);
  assert.equal(error.message, 'Invalid API key');
});

test('rest: an expired user token gets PostgREST\'s PGRST303 "JWT expired"', async () => {
  const expired = userToken({ iat: now() - 7200, exp: now() - 3600 });
  // A third-party-auth style client: the project key plus the user's token.
  const supabase = client(stack, stack.anonKey, { accessToken: async () => expired });
  const { data, error, status } = await supabase.from('todos').select();
  assert.equal(status, 401);
  assert.equal(data, null);
  assert.deepEqual(error, { code: 'PGRST303', details: null, hint: null, message: 'JWT expired' });

  const res = await fetch(`${stack.url}/rest/v1/todos`, {
    headers: { apikey: stack.anonKey, authorization: `Bearer ${expired}` },
  });
  assert.equal(res.status, 401);
  assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer error="invalid_token"/);
});

test('rest: a user token signed with another secret gets PGRST301', async () => {
  const forged = signJwt({ ...decodeJwt(userToken()), role: 'service_role' }, OTHER_SECRET);
  const supabase = client(stack, stack.anonKey, { accessToken: async () => forged });
  const { error, status } = await supabase.from('todos').select();
  assert.equal(status, 401);
  assert.equal(error.code, 'PGRST301');
  assert.equal(typeof error.message, 'string');
  assert.ok(error.message.length > 0);
});

test('rest not running: 503 with a PostgREST-shaped JSON error', async () => {
  const supabase = client(stack, stack.anonKey);
  const { data, error, status } = await supabase.from('todos').select().retry(false);
  assert.equal(status, 503);
  assert.equal(data, null);
  assert.deepEqual(Object.keys(error).sort(), ['code', 'details', 'hint', 'message']);
  assert.equal(typeof error.message, 'string');
  assert.match(error.message, /rest/);

  // Writes are not retried by the client and fail the same way.
  const insert = await supabase.from('todos').insert({ task: 'write the tests' }).select();
  assert.equal(insert.status, 503);
  assert.match(insert.error.message, /rest/);

  const res = await fetch(`${stack.url}/rest/v1/todos?select=*`, { headers: { apikey: stack.serviceRoleKey } });
  assert.equal(res.status, 503);
  await json(res);
});

test('rest not running: supabase-js retries a GET three times, then reports the 503', async () => {
  let attempts = 0;
  const countingFetch = (...args) => {
    attempts += 1;
    return fetch(...args);
  };
  const supabase = client(stack, stack.anonKey, { global: { fetch: countingFetch } });
  const { error, status } = await supabase.from('todos').select();
  assert.equal(status, 503);
  assert.match(error.message, /rest/);
  assert.equal(attempts, 4, 'postgrest-js treats 503 as transient: 1 try + 3 retries');
});

test('realtime: /realtime/v1 answers 501 with a JSON error', async () => {
  for (const [method, path] of [
    ['GET', '/realtime/v1/api/ping'],
    ['POST', '/realtime/v1/api/broadcast'],
  ]) {
    const res = await fetch(`${stack.url}${path}`, {
      method,
      headers: { apikey: stack.anonKey, 'content-type': 'application/json' },
      body: method === 'POST' ? JSON.stringify({ messages: [{ topic: 'room1', event: 'e', payload: {} }] }) : undefined,
    });
    assert.equal(res.status, 501, path);
    const body = await json(res);
    assert.equal(body.code, 'not_implemented');
    assert.match(body.error, /realtime is not available/);
  }
  const keyless = await fetch(`${stack.url}/realtime/v1/api/ping`);
  assert.equal(keyless.status, 401, 'the API key is checked first');
});

test('realtime: the WebSocket upgrade is refused with 501', async () => {
  const url = `${stack.url.replace(/^http/, 'ws')}/realtime/v1/websocket?apikey=${stack.anonKey}&vsn=2.0.0`;
  const status = await new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode);
      ws.terminate();
    });
    ws.on('open', () => {
      ws.close();
      reject(new Error('the WebSocket upgrade was accepted'));
    });
    ws.on('error', () => {});
  });
  assert.equal(status, 501);
});

test('realtime: a supabase-js channel reports CHANNEL_ERROR and httpSend fails', async () => {
  const supabase = client(stack, stack.anonKey, { realtime: { timeout: 3000 } });
  const channel = supabase.channel('room1');
  try {
    const status = await new Promise((resolve) => {
      channel.subscribe((s) => {
        if (s !== 'CLOSED') resolve(s);
      });
    });
    assert.equal(status, 'CHANNEL_ERROR');
    await assert.rejects(channel.httpSend('greeting', { hello: 'world' }));
  } finally {
    await supabase.removeAllChannels();
  }
});

test('CORS: preflights are answered without an API key, as Supabase does', async () => {
  for (const [path, method] of [
    ['/rest/v1/todos', 'POST'],
    ['/auth/v1/token?grant_type=password', 'POST'],
    ['/storage/v1/object/bucket/file.txt', 'PUT'],
    ['/realtime/v1/api/broadcast', 'POST'],
  ]) {
    const requested = 'authorization,x-client-info,apikey,content-type,prefer,x-supabase-api-version';
    const res = await fetch(`${stack.url}${path}`, {
      method: 'OPTIONS',
      headers: {
        origin: 'http://localhost:3000',
        'access-control-request-method': method,
        'access-control-request-headers': requested,
      },
    });
    assert.ok(res.status === 200 || res.status === 204, `${path}: ${res.status}`);
    assert.equal(res.headers.get('access-control-allow-origin'), '*', path);
    const methods = (res.headers.get('access-control-allow-methods') ?? '').toUpperCase();
    for (const m of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) assert.ok(methods.includes(m), `${path}: ${m}`);
    const allowed = (res.headers.get('access-control-allow-headers') ?? '').toLowerCase().split(/\s*,\s*/);
    for (const h of requested.split(',')) assert.ok(allowed.includes(h), `${path}: header ${h} allowed`);
    assert.equal(res.headers.get('access-control-max-age'), '86400');
  }
});

test('CORS: answers, errors included, carry the headers browsers need', async () => {
  const res = await fetch(`${stack.url}/rest/v1/todos`, { headers: { origin: 'http://localhost:3000', apikey: 'not-a-key' } });
  assert.equal(res.status, 401);
  assert.equal(res.headers.get('access-control-allow-origin'), '*');
  const exposed = (res.headers.get('access-control-expose-headers') ?? '').toLowerCase();
  for (const h of ['content-range', 'x-supabase-api-version', 'x-total-count', 'link']) {
    assert.ok(exposed.includes(h), `exposes ${h}`);
  }
});

test('every answer carries a request id, and a sane client id is kept', async () => {
  const res = await fetch(`${stack.url}/rest/v1/todos`, { headers: { apikey: stack.anonKey } });
  assert.ok(res.headers.get('x-request-id'));
  const mine = '0f8fad5b-d9cb-469f-a165-70867728950e';
  const echoed = await fetch(`${stack.url}/health`, { headers: { 'x-request-id': mine } });
  assert.equal(echoed.headers.get('x-request-id'), mine);
});

test('a body over FERROBASE_MAX_BODY_BYTES is refused with 413', async () => {
  const supabase = client(stack, stack.anonKey);
  const { error, status } = await supabase.from('todos').insert({ task: 'x'.repeat(MAX_BODY_BYTES + 1) });
  assert.equal(status, 413);
  assert.equal(typeof error.message, 'string');
});

test('rate limits: past the limit, supabase.auth gets 429 over_request_rate_limit', async () => {
  const supabase = client(stack, stack.anonKey);
  const results = [];
  for (let i = 0; i <= RATE_LIMIT; i += 1) {
    results.push(await supabase.auth.signInWithPassword({ email: 'nobody@example.com', password: 'wrong-password' }));
  }
  const statuses = results.map((r) => r.error?.status);
  for (const s of statuses.slice(0, RATE_LIMIT)) assert.notEqual(s, 429, `within the limit: ${statuses}`);
  const limited = results[RATE_LIMIT].error;
  assert.equal(limited?.status, 429, `statuses: ${statuses}`);
  assert.equal(limited.code, 'over_request_rate_limit');
  assert.equal(limited.message, 'Request rate limit reached');

  // The raw answer says when to come back; other paths are not limited.
  const res = await fetch(`${stack.url}/auth/v1/token?grant_type=password`, {
    method: 'POST',
    headers: { apikey: stack.anonKey, 'content-type': 'application/json', 'x-supabase-api-version': '2024-01-01' },
    body: JSON.stringify({ email: 'nobody@example.com', password: 'wrong-password' }),
  });
  assert.equal(res.status, 429);
  assert.ok(Number(res.headers.get('retry-after')) >= 1, 'Retry-After in seconds');
  assert.deepEqual(await json(res), { code: 'over_request_rate_limit', message: 'Request rate limit reached' });
  const health = await fetch(`${stack.url}/auth/v1/health`, { headers: { apikey: stack.anonKey } });
  assert.notEqual(health.status, 429);
});

test('the anon key carries no role it should not', () => {
  assert.deepEqual(Object.keys(decodeJwt(stack.anonKey)).sort(), Object.keys(anonClaims()).sort());
  assert.equal(decodeJwt(stack.anonKey).role, 'anon');
  assert.equal(decodeJwt(stack.serviceRoleKey).role, 'service_role');
});
