// /auth/v1 through the gateway to the auth service, the way an app uses
// supabase.auth: sign-up, sign-in, sessions, the user, sign-out, one-time codes
// by mail, admin calls, and GoTrue's error codes. scripts/up runs auth with
// confirmations off (as `supabase start`) and a development mail outbox.
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { client, decodeJwt, now, useStack } from '../stack.mjs';

const stack = useStack();
const API_VERSION = { 'x-supabase-api-version': '2024-01-01' };
const PASSWORD = 'correct-horse-battery';

const newEmail = (tag) => `${tag}-${randomUUID().slice(0, 8)}@example.com`;
const anon = () => client(stack, stack.anonKey);
const admin = () => client(stack, stack.serviceRoleKey);

async function json(res) {
  const text = await res.text();
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, `JSON body expected, got: ${text}`);
  return JSON.parse(text);
}

const authFetch = (p, init = {}) =>
  fetch(`${stack.url}/auth/v1${p}`, { ...init, headers: { apikey: stack.anonKey, ...init.headers } });

const verifiesWithSecret = (token) => {
  const [h, p, sig] = token.split('.');
  return createHmac('sha256', stack.jwtSecret).update(`${h}.${p}`).digest('base64url') === sig;
};

/** The newest mail of `kind` the auth service wrote for `to` in the development outbox. */
async function mailFor(to, kind) {
  const dir = path.join(stack.home, 'mail');
  const deadline = Date.now() + 5000;
  for (;;) {
    const mails = existsSync(dir)
      ? readdirSync(dir)
          .filter((f) => f.endsWith('.json'))
          .sort()
          .map((f) => JSON.parse(readFileSync(path.join(dir, f), 'utf8')))
          .filter((m) => m.to === to && m.kind === kind)
      : [];
    if (mails.length) return mails.at(-1);
    if (Date.now() > deadline) assert.fail(`no ${kind} mail for ${to} in ${dir}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('GET /auth/v1/health answers from the auth service', async () => {
  const res = await authFetch('/health');
  assert.equal(res.status, 200);
  const body = await json(res);
  assert.equal(body.name, 'GoTrue');
  assert.equal(typeof body.version, 'string');
  assert.equal(typeof body.description, 'string');
});

test('GET /auth/v1/settings: email sign-in on, confirmations off, anonymous sign-ins off', async () => {
  const res = await authFetch('/settings');
  assert.equal(res.status, 200);
  const body = await json(res);
  assert.equal(body.external.email, true);
  assert.equal(body.external.anonymous_users, false);
  assert.equal(body.disable_signup, false);
  assert.equal(body.mailer_autoconfirm, true);
});

test('GET /auth/v1/.well-known/jwks.json is open (no API key) and lists no HS256 secret', async () => {
  const res = await fetch(`${stack.url}/auth/v1/.well-known/jwks.json`);
  assert.equal(res.status, 200);
  assert.deepEqual(await json(res), { keys: [] });
  assert.equal(res.headers.get('cache-control'), 'public, max-age=600');
});

test('auth errors follow X-Supabase-Api-Version: 2024 shape, else the legacy one', async () => {
  const modern = await authFetch('/no-such-endpoint', { headers: API_VERSION });
  assert.equal(modern.status, 404);
  assert.equal(modern.headers.get('x-supabase-api-version'), '2024-01-01');
  assert.equal(modern.headers.get('x-sb-error-code'), 'not_found');
  const m = await json(modern);
  assert.deepEqual(Object.keys(m).sort(), ['code', 'message']);
  assert.equal(m.code, 'not_found');

  const legacy = await authFetch('/no-such-endpoint');
  assert.equal(legacy.status, 404);
  assert.equal(legacy.headers.get('x-supabase-api-version'), null);
  assert.equal(legacy.headers.get('x-sb-error-code'), 'not_found');
  const l = await json(legacy);
  assert.equal(l.code, 404);
  assert.equal(l.error_code, 'not_found');
  assert.equal(typeof l.msg, 'string');
});

test('sign-up returns a session whose access token is a GoTrue-shaped JWT', async () => {
  const email = newEmail('signup');
  const { data, error } = await anon().auth.signUp({ email, password: PASSWORD, options: { data: { name: 'Ada' } } });
  assert.equal(error, null);
  const { session, user } = data;
  assert.ok(session, 'confirmations are off: sign-up signs in');
  assert.equal(session.token_type, 'bearer');
  assert.equal(typeof session.refresh_token, 'string');
  assert.ok(session.expires_in > 0);
  assert.equal(user.email, email);
  assert.equal(user.aud, 'authenticated');
  assert.equal(user.role, 'authenticated');
  assert.equal(user.user_metadata.name, 'Ada');
  assert.equal(user.user_metadata.email_verified, true);
  assert.deepEqual(user.app_metadata, { provider: 'email', providers: ['email'] });
  assert.match(user.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.ok(user.email_confirmed_at);

  assert.ok(verifiesWithSecret(session.access_token), 'signed with the project secret (HS256)');
  const claims = decodeJwt(session.access_token);
  assert.equal(claims.iss, `${stack.url}/auth/v1`);
  assert.equal(claims.sub, user.id);
  assert.equal(claims.aud, 'authenticated');
  assert.equal(claims.role, 'authenticated');
  assert.equal(claims.email, email);
  assert.equal(claims.phone, '');
  assert.equal(claims.aal, 'aal1');
  assert.equal(claims.is_anonymous, false);
  assert.equal(typeof claims.session_id, 'string');
  assert.equal(claims.amr[0].method, 'password');
  assert.ok(claims.exp > now() && claims.exp - claims.iat === session.expires_in);
});

test('sign-up errors: a registered address, a weak password', async () => {
  const email = newEmail('twice');
  assert.equal((await anon().auth.signUp({ email, password: PASSWORD })).error, null);

  const again = await anon().auth.signUp({ email, password: PASSWORD });
  assert.equal(again.error?.name, 'AuthApiError', String(again.error));
  assert.equal(again.error.status, 422);
  assert.equal(again.error.code, 'user_already_exists');
  assert.equal(again.error.message, 'User already registered');

  const weak = await anon().auth.signUp({ email: newEmail('weak'), password: '123' });
  assert.equal(weak.error?.name, 'AuthWeakPasswordError', String(weak.error));
  assert.equal(weak.error.status, 422);
  assert.equal(weak.error.code, 'weak_password');
  assert.deepEqual(weak.error.reasons, ['length']);
});

test('password sign-in, and the errors for a wrong password or an unknown user', async () => {
  const email = newEmail('signin');
  assert.equal((await anon().auth.signUp({ email, password: PASSWORD })).error, null);

  const { data, error } = await anon().auth.signInWithPassword({ email, password: PASSWORD });
  assert.equal(error, null);
  assert.equal(data.user.email, email);
  assert.ok(data.session.access_token);

  for (const attempt of [
    { email, password: 'not-the-password' },
    { email: newEmail('nobody'), password: PASSWORD },
  ]) {
    const wrong = await anon().auth.signInWithPassword(attempt);
    assert.equal(wrong.error?.name, 'AuthApiError', String(wrong.error));
    assert.equal(wrong.error.status, 400);
    assert.equal(wrong.error.code, 'invalid_credentials');
    assert.equal(wrong.error.message, 'Invalid login credentials');
    assert.equal(wrong.data.session, null);
  }
});

test('a session: getUser, updateUser, refreshSession, then signOut ends it', async () => {
  const email = newEmail('session');
  const supabase = anon();
  const signUp = await supabase.auth.signUp({ email, password: PASSWORD });
  assert.equal(signUp.error, null);
  const first = signUp.data.session;

  const got = await supabase.auth.getUser();
  assert.equal(got.error, null);
  assert.equal(got.data.user.email, email);

  const updated = await supabase.auth.updateUser({ data: { theme: 'dark' } });
  assert.equal(updated.error, null);
  assert.equal(updated.data.user.user_metadata.theme, 'dark');

  const refreshed = await supabase.auth.refreshSession();
  assert.equal(refreshed.error, null);
  assert.notEqual(refreshed.data.session.refresh_token, first.refresh_token, 'refresh tokens rotate');
  assert.equal(decodeJwt(refreshed.data.session.access_token).session_id, decodeJwt(first.access_token).session_id);

  const out = await supabase.auth.signOut();
  assert.equal(out.error, null);
  const { data: session } = await supabase.auth.getSession();
  assert.equal(session.session, null);

  // The access token is still unexpired, but its session is gone: 403 session_not_found,
  // which auth-js reports as AuthSessionMissingError.
  const staleToken = refreshed.data.session.access_token;
  const stale = await anon().auth.getUser(staleToken);
  assert.equal(stale.data.user, null);
  assert.equal(stale.error?.name, 'AuthSessionMissingError', String(stale.error));
  const raw = await authFetch('/user', { headers: { ...API_VERSION, authorization: `Bearer ${staleToken}` } });
  assert.equal(raw.status, 403);
  assert.equal((await json(raw)).code, 'session_not_found');

  const reuse = await anon().auth.refreshSession({ refresh_token: refreshed.data.session.refresh_token });
  assert.ok(reuse.error, 'the refresh token of a signed-out session is refused');
  assert.equal(reuse.error.status, 400);
});

test('user routes: the anon key is no user (403 bad_jwt), no bearer at all is 401', async () => {
  // What supabase-js users meet when they call getUser() without a session.
  const { data, error } = await anon().auth.getUser(stack.anonKey);
  assert.equal(data.user, null);
  assert.equal(error?.name, 'AuthApiError', String(error));
  assert.equal(error.status, 403);
  assert.equal(error.code, 'bad_jwt');
  assert.equal(error.message, 'invalid claim: missing sub claim');

  const none = await fetch(`${stack.url}/auth/v1/user?apikey=${stack.anonKey}`, { headers: API_VERSION });
  assert.equal(none.status, 401);
  const body = await json(none);
  assert.equal(body.code, 'no_authorization');
  assert.match(body.message, /Bearer token/);
});

test('anonymous sign-ins are off by default: 422 anonymous_provider_disabled', async () => {
  const { error } = await anon().auth.signInAnonymously();
  assert.equal(error?.name, 'AuthApiError', String(error));
  assert.equal(error.status, 422);
  assert.equal(error.code, 'anonymous_provider_disabled');
});

test('a one-time code by mail signs in (signInWithOtp, then verifyOtp)', async () => {
  const email = newEmail('otp');
  assert.equal((await anon().auth.signUp({ email, password: PASSWORD })).error, null);

  const sent = await anon().auth.signInWithOtp({ email, options: { shouldCreateUser: false } });
  assert.equal(sent.error, null);
  assert.deepEqual(sent.data, { user: null, session: null });

  const mail = await mailFor(email, 'magiclink');
  assert.match(mail.otp, /^\d{6}$/);
  assert.ok(mail.link.startsWith(`${stack.url}/auth/v1/verify?`), mail.link);

  const verified = await anon().auth.verifyOtp({ email, token: mail.otp, type: 'email' });
  assert.equal(verified.error, null);
  assert.equal(verified.data.user.email, email);
  assert.ok(verified.data.session.access_token);

  const reused = await anon().auth.verifyOtp({ email, token: mail.otp, type: 'email' });
  assert.equal(reused.error?.status, 403);
  assert.equal(reused.error.code, 'otp_expired');
});

test('password recovery sends a recovery mail', async () => {
  const email = newEmail('recover');
  assert.equal((await anon().auth.signUp({ email, password: PASSWORD })).error, null);
  const { error } = await anon().auth.resetPasswordForEmail(email);
  assert.equal(error, null);
  const mail = await mailFor(email, 'recovery');
  assert.match(mail.otp, /^\d{6}$/);
});

test('admin: the service_role key manages users; the anon key may not', async () => {
  const email = newEmail('admin');
  const created = await admin().auth.admin.createUser({ email, password: PASSWORD, email_confirm: true });
  assert.equal(created.error, null);
  assert.equal(created.data.user.email, email);
  assert.ok(created.data.user.email_confirmed_at);

  const list = await admin().auth.admin.listUsers({ page: 1, perPage: 1000 });
  assert.equal(list.error, null);
  assert.ok(list.data.users.some((u) => u.id === created.data.user.id));

  const got = await admin().auth.admin.getUserById(created.data.user.id);
  assert.equal(got.data.user.email, email);

  const signIn = await anon().auth.signInWithPassword({ email, password: PASSWORD });
  assert.equal(signIn.error, null, 'an admin-created, confirmed user can sign in');

  const refused = await anon().auth.admin.listUsers();
  assert.equal(refused.error?.status, 403);
  assert.equal(refused.error.code, 'not_admin');

  const deleted = await admin().auth.admin.deleteUser(created.data.user.id);
  assert.equal(deleted.error, null);
  const gone = await admin().auth.admin.getUserById(created.data.user.id);
  assert.equal(gone.error?.status, 404);
  assert.equal(gone.error.code, 'user_not_found');
});

/** The current RFC 6238 code (SHA-1, 30 s, 6 digits) of a base32 secret, as an authenticator app shows it. */
function totp(base32, at = Date.now()) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of base32.replace(/=+$/, '').toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 1000 / 30)));
  const mac = createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}

test('MFA with TOTP: enroll, a wrong code, then a right one raises the session to aal2', async () => {
  const supabase = anon();
  assert.equal((await supabase.auth.signUp({ email: newEmail('mfa'), password: PASSWORD })).error, null);

  const enrolled = await supabase.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'my phone' });
  assert.equal(enrolled.error, null);
  assert.equal(enrolled.data.type, 'totp');
  assert.match(enrolled.data.totp.uri, /^otpauth:\/\/totp\//);
  assert.match(enrolled.data.totp.secret, /^[A-Z2-7]+=*$/);
  const factorId = enrolled.data.id;

  const first = await supabase.auth.mfa.challenge({ factorId });
  assert.equal(first.error, null);
  const wrongCode = String((Number(totp(enrolled.data.totp.secret)) + 1) % 1_000_000).padStart(6, '0');
  const wrong = await supabase.auth.mfa.verify({ factorId, challengeId: first.data.id, code: wrongCode });
  assert.equal(wrong.error?.status, 422, String(wrong.error));
  assert.equal(wrong.error.code, 'mfa_verification_failed');

  const ok = await supabase.auth.mfa.challengeAndVerify({ factorId, code: totp(enrolled.data.totp.secret) });
  assert.equal(ok.error, null);
  const claims = decodeJwt(ok.data.access_token);
  assert.equal(claims.aal, 'aal2');
  assert.equal(claims.amr[0].method, 'totp');

  const level = await supabase.auth.mfa.getAuthenticatorAssuranceLevel();
  assert.equal(level.data.currentLevel, 'aal2');
  const factors = await supabase.auth.mfa.listFactors();
  assert.equal(factors.error, null);
  assert.deepEqual(factors.data.totp.map((f) => [f.id, f.status, f.friendly_name]), [[factorId, 'verified', 'my phone']]);
});

test('with the auth service down, the gateway answers 503 in auth\'s shape; scripts/up brings it back', async (t) => {
  const pid = Number(readFileSync(path.join(stack.home, 'run', 'auth.pid'), 'utf8').trim());
  process.kill(pid, 'SIGKILL');
  for (;;) {
    try {
      process.kill(pid, 0);
      await new Promise((r) => setTimeout(r, 50));
    } catch {
      break;
    }
  }

  const res = await authFetch('/health', { headers: API_VERSION });
  assert.equal(res.status, 503);
  assert.equal(res.headers.get('x-sb-error-code'), 'service_unavailable');
  const body = await json(res);
  assert.deepEqual(Object.keys(body).sort(), ['code', 'message']);
  assert.equal(body.code, 'service_unavailable');

  const { error } = await anon().auth.signInWithPassword({ email: 'someone@example.com', password: PASSWORD });
  assert.equal(error?.name, 'AuthRetryableFetchError', 'auth-js treats 503 as retryable');
  assert.equal(error.status, 503);

  const up = await stack.up();
  assert.equal(up.code, 0, up.output);
  t.diagnostic('scripts/up restarted the auth service');
  const back = await authFetch('/health');
  assert.equal(back.status, 200, 'the gateway reconnects to the new auth process');
});
