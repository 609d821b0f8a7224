// A small todo app, end to end: users sign up with supabase.auth and keep their
// todos through supabase.from(), and row-level security keyed on auth.uid() keeps
// each user's rows to themselves (the scenario of supabase-js's integration suite).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { client, parseEnvFile, useStack } from '../stack.mjs';

const stack = useStack({ setup: migrate });
const PASSWORD = 'correct-horse-battery';

async function migrate(s) {
  const { PG_BIN } = parseEnvFile(readFileSync(path.join(s.home, 'ports.env'), 'utf8'));
  execFileSync(path.join(PG_BIN, 'psql'), [s.dbUrl, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', `
    create table public.todos (
      id uuid primary key default gen_random_uuid(),
      task text not null,
      is_complete boolean not null default false,
      user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
      created_at timestamptz not null default now()
    );
    alter table public.todos enable row level security;
    create policy "users manage their own todos" on public.todos for all to authenticated
      using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);
  `]);
  // The rest service reloads its schema cache on DDL: wait until the table is served.
  const probe = client(s, s.serviceRoleKey);
  const deadline = Date.now() + 15_000;
  for (;;) {
    const { error } = await probe.from('todos').select('id').limit(1).retry(false);
    if (!error) return;
    if (Date.now() > deadline) assert.fail(`todos never became visible: ${JSON.stringify(error)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function signedUp(tag) {
  const supabase = client(stack, stack.anonKey);
  const { data, error } = await supabase.auth.signUp({ email: `${tag}-${randomUUID().slice(0, 8)}@example.com`, password: PASSWORD });
  assert.equal(error, null);
  return { supabase, user: data.user };
}

let alice;
let bob;

test('two users sign up and each adds todos; user_id defaults to auth.uid()', async () => {
  alice = await signedUp('alice');
  bob = await signedUp('bob');

  const a = await alice.supabase.from('todos').insert([{ task: 'alice: taxes' }, { task: 'alice: gym' }]).select();
  assert.equal(a.error, null);
  assert.equal(a.status, 201);
  assert.deepEqual(a.data.map((t) => t.user_id), [alice.user.id, alice.user.id]);

  const b = await bob.supabase.from('todos').insert({ task: 'bob: dentist' }).select().single();
  assert.equal(b.error, null);
  assert.equal(b.data.user_id, bob.user.id);
});

test('each user reads only their own todos', async () => {
  const a = await alice.supabase.from('todos').select('task').order('task');
  assert.deepEqual(a.data, [{ task: 'alice: gym' }, { task: 'alice: taxes' }]);
  const b = await bob.supabase.from('todos').select('task');
  assert.deepEqual(b.data, [{ task: 'bob: dentist' }]);
  const anon = await client(stack, stack.anonKey).from('todos').select('task');
  assert.deepEqual(anon.data, [], 'no policy for anon: nothing is visible');
});

test("a user can neither change, remove nor claim another user's todo", async () => {
  const bobs = await client(stack, stack.serviceRoleKey).from('todos').select('id').eq('user_id', bob.user.id).single();
  const id = bobs.data.id;

  const updated = await alice.supabase.from('todos').update({ is_complete: true }).eq('id', id).select();
  assert.deepEqual(updated.data, []);
  const deleted = await alice.supabase.from('todos').delete().eq('id', id).select();
  assert.deepEqual(deleted.data, []);
  const claimed = await alice.supabase.from('todos').insert({ task: 'for bob', user_id: bob.user.id });
  assert.equal(claimed.status, 403);
  assert.equal(claimed.error.code, '42501');

  const still = await bob.supabase.from('todos').select('task, is_complete').eq('id', id).single();
  assert.deepEqual(still.data, { task: 'bob: dentist', is_complete: false });
});

test('a user completes and deletes their own todo', async () => {
  const done = await alice.supabase
    .from('todos')
    .update({ is_complete: true })
    .eq('task', 'alice: gym')
    .select('task, is_complete')
    .single();
  assert.equal(done.error, null);
  assert.deepEqual(done.data, { task: 'alice: gym', is_complete: true });

  const removed = await alice.supabase.from('todos').delete().eq('task', 'alice: gym').select('task');
  assert.deepEqual(removed.data, [{ task: 'alice: gym' }]);
  const count = await alice.supabase.from('todos').select('*', { count: 'exact', head: true });
  assert.equal(count.count, 1);
});

test('after signing out, the same client is anonymous again', async () => {
  assert.equal((await alice.supabase.auth.signOut()).error, null);
  const { data, error } = await alice.supabase.from('todos').select('task');
  assert.equal(error, null);
  assert.deepEqual(data, []);
});

test('deleting a user (admin) removes their todos by cascade', async () => {
  const { error } = await client(stack, stack.serviceRoleKey).auth.admin.deleteUser(bob.user.id);
  assert.equal(error, null);
  const left = await client(stack, stack.serviceRoleKey).from('todos').select('task').eq('user_id', bob.user.id);
  assert.deepEqual(left.data, []);
});
