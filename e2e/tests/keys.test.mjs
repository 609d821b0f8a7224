// Asymmetric signing keys (FERROBASE_AUTH_JWT_KEYS): the auth service signs
// access tokens ES256 with a kid, supabase-js verifies them locally against the
// published key set (getClaims), and the gateway accepts them on every surface
// without calling the auth service per request.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createSign, generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { client, parseEnvFile, useStack } from '../stack.mjs';

const KID = randomUUID();
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const SIGNING_KEY = { ...privateKey.export({ format: 'jwk' }), kid: KID, alg: 'ES256', key_ops: ['sign', 'verify'] };

const stack = useStack({
  env: { FERROBASE_AUTH_JWT_KEYS: JSON.stringify([SIGNING_KEY]) },
  setup: createNotes,
});

function psql(sql) {
  const { PG_BIN } = parseEnvFile(readFileSync(path.join(stack.home, 'ports.env'), 'utf8'));
  return execFileSync(path.join(PG_BIN, 'psql'), [stack.dbUrl, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
  });
}

async function createNotes() {
  psql(`
    create table public.notes (
      id bigint generated always as identity primary key,
      owner uuid not null default auth.uid(),
      body text not null
    );
    alter table public.notes enable row level security;
    create policy "own notes" on public.notes for all to authenticated
      using (owner = auth.uid()) with check (owner = auth.uid());
    grant select, insert on public.notes to authenticated;
    notify pgrst, 'reload schema';
  `);
}

const header = (token) => JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString('utf8'));

async function signedIn() {
  const supabase = client(stack, stack.anonKey);
  const email = `keys-${randomUUID().slice(0, 8)}@example.com`;
  const { data, error } = await supabase.auth.signUp({ email, password: 'correct-horse-battery' });
  assert.equal(error, null);
  return { supabase, session: data.session, user: data.user };
}

test('access tokens are signed ES256 with the configured kid', async () => {
  const { session } = await signedIn();
  assert.deepEqual(header(session.access_token), { alg: 'ES256', typ: 'JWT', kid: KID });
});

test('the key set publishes the public half only, without an API key', async () => {
  const res = await fetch(`${stack.url}/auth/v1/.well-known/jwks.json`);
  assert.equal(res.status, 200);
  const { keys } = await res.json();
  assert.equal(keys.length, 1);
  const [key] = keys;
  assert.equal(key.kid, KID);
  assert.equal(key.alg, 'ES256');
  assert.deepEqual(key.key_ops, ['verify']);
  assert.equal(key.x, SIGNING_KEY.x);
  assert.equal(key.y, SIGNING_KEY.y);
  assert.equal(key.d, undefined);
});

test('supabase-js verifies the token locally with getClaims()', async () => {
  const { supabase, user } = await signedIn();
  const { data, error } = await supabase.auth.getClaims();
  assert.equal(error, null);
  assert.equal(data.header.kid, KID);
  assert.equal(data.header.alg, 'ES256');
  assert.equal(data.claims.sub, user.id);
  assert.equal(data.claims.role, 'authenticated');
});

test('the gateway accepts ES256 tokens: row-level security sees the user', async () => {
  const { supabase, user } = await signedIn();
  const inserted = await supabase.from('notes').insert({ body: 'signed with ES256' }).select().single();
  assert.equal(inserted.error, null);
  assert.equal(inserted.data.owner, user.id);
  const { data: me, error } = await supabase.auth.getUser();
  assert.equal(error, null);
  assert.equal(me.user.id, user.id);
  // Another user sees none of it.
  const { supabase: other } = await signedIn();
  const { data: seen } = await other.from('notes').select();
  assert.deepEqual(seen, []);
});

test('a token signed by a key outside the set is refused', async () => {
  const { session } = await signedIn();
  const { privateKey: stranger } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const [h, p] = session.access_token.split('.');
  const signature = createSign('SHA256')
    .update(`${h}.${p}`)
    .sign({ key: stranger, dsaEncoding: 'ieee-p1363' })
    .toString('base64url');
  const forged = `${h}.${p}.${signature}`;
  const res = await fetch(`${stack.url}/rest/v1/notes`, {
    headers: { apikey: stack.anonKey, authorization: `Bearer ${forged}` },
  });
  assert.equal(res.status, 401);
  assert.equal((await res.json()).code, 'PGRST301');
});
