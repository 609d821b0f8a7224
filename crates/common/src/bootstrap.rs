//! The database bootstrap every service applies at start.
//!
//! It gives a database what Supabase apps expect before any service-owned
//! migration runs: the roles `anon`, `authenticated`, `service_role` (BYPASSRLS)
//! and `authenticator` (login, switches role), Supabase's default privileges on
//! schema `public`, schema `extensions` with `pgcrypto` and `uuid-ossp`, and
//! `auth.uid()`, `auth.role()`, `auth.email()`, `auth.jwt()` reading
//! `request.jwt.claims`, so RLS policies written for Supabase work unchanged.
//!
//! It is idempotent and runs in one transaction under an advisory lock, so
//! replicas starting together apply it once. Roles are cluster-wide while the
//! lock is per database, so role creation also tolerates a concurrent creator.

use tokio_postgres::Client;

/// Advisory lock key of the bootstrap (`ferrobase` in ASCII, as a number).
pub const LOCK_KEY: i64 = 0x0066_6572_726f_6261;

const SQL: &str = r#"
do $bootstrap$
declare
  r record;
begin
  for r in select * from (values
      ('anon', 'nologin noinherit'),
      ('authenticated', 'nologin noinherit'),
      ('service_role', 'nologin noinherit bypassrls'),
      ('authenticator', 'login noinherit')
    ) as t(name, options)
  loop
    if not exists (select 1 from pg_roles where rolname = r.name) then
      begin
        execute format('create role %I %s', r.name, r.options);
      exception when duplicate_object or unique_violation then
        null; -- another database's bootstrap created it first
      end;
    end if;
  end loop;

  for r in select unnest(array['anon', 'authenticated', 'service_role']) as name loop
    if not exists (
      select 1 from pg_auth_members m
      join pg_roles g on g.oid = m.roleid
      join pg_roles u on u.oid = m.member
      where g.rolname = r.name and u.rolname = 'authenticator'
    ) then
      begin
        execute format('grant %I to authenticator', r.name);
      exception when duplicate_object or unique_violation then
        null;
      end;
    end if;
  end loop;
end
$bootstrap$;

create schema if not exists extensions;
grant usage on schema extensions to anon, authenticated, service_role;
create extension if not exists pgcrypto with schema extensions;
create extension if not exists "uuid-ossp" with schema extensions;

grant usage on schema public to anon, authenticated, service_role;
grant all on all tables in schema public to anon, authenticated, service_role;
grant all on all sequences in schema public to anon, authenticated, service_role;
grant all on all routines in schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on routines to anon, authenticated, service_role;

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

create or replace function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'
  )::text
$$;

create or replace function auth.email() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email'
  )::text
$$;

grant execute on function auth.jwt(), auth.uid(), auth.role(), auth.email()
  to anon, authenticated, service_role;
"#;

/// Applies the bootstrap on `client`'s database.
pub async fn run(client: &mut Client) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| anyhow::anyhow!("taking the bootstrap lock: {e}"))?;
    tx.batch_execute(SQL)
        .await
        .map_err(|e| anyhow::anyhow!("applying the bootstrap: {e}"))?;
    tx.commit().await?;
    Ok(())
}

/// Connects to `url` once and applies the bootstrap.
pub async fn run_url(url: &str) -> anyhow::Result<()> {
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the database: {e}"))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "bootstrap connection ended");
        }
    });
    let result = run(&mut client).await;
    drop(client);
    let _ = driver.await;
    result
}
