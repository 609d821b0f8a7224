//! The shared database bootstrap and migrations, against a real PostgreSQL.

use ferrobase_common::migrate::{self, Migration};
use ferrobase_testkit::postgres;

#[tokio::test]
async fn bootstrap_creates_supabase_roles_schemas_and_helpers() {
    let db = postgres().create_empty_database().await;
    let mut client = db.connect().await;
    ferrobase_common::bootstrap::run(&mut client).await.unwrap();

    let row = client
        .query_one(
            "select (select rolbypassrls from pg_roles where rolname = 'service_role'),
                    (select rolcanlogin from pg_roles where rolname = 'authenticator'),
                    (select rolinherit from pg_roles where rolname = 'authenticator'),
                    (select rolcanlogin from pg_roles where rolname = 'anon'),
                    pg_has_role('authenticator', 'anon', 'member'),
                    pg_has_role('authenticator', 'authenticated', 'member'),
                    pg_has_role('authenticator', 'service_role', 'member'),
                    exists (select 1 from pg_extension where extname = 'pgcrypto'),
                    (select n.nspname::text from pg_extension e join pg_namespace n on n.oid = e.extnamespace
                     where e.extname = 'pgcrypto')",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "service_role bypasses RLS");
    assert!(row.get::<_, bool>(1), "authenticator logs in");
    assert!(!row.get::<_, bool>(2), "authenticator does not inherit");
    assert!(!row.get::<_, bool>(3), "anon cannot log in");
    assert!(row.get::<_, bool>(4) && row.get::<_, bool>(5) && row.get::<_, bool>(6));
    assert!(row.get::<_, bool>(7));
    assert_eq!(row.get::<_, String>(8), "extensions");
}

#[tokio::test]
async fn bootstrap_is_idempotent_and_safe_to_run_concurrently() {
    let db = postgres().create_empty_database().await;
    let other = postgres().create_empty_database().await;
    let runs = (0..6).map(|i| {
        let url = if i % 2 == 0 {
            db.url.clone()
        } else {
            other.url.clone()
        };
        async move { ferrobase_common::bootstrap::run_url(&url).await }
    });
    for result in futures::future::join_all(runs).await {
        result.unwrap();
    }
    let mut client = db.connect().await;
    ferrobase_common::bootstrap::run(&mut client).await.unwrap();
}

#[tokio::test]
async fn supabase_style_policies_work_with_the_claims_setting() {
    let db = postgres().create_database().await;
    let client = db.connect().await;
    let alice = "11111111-1111-4111-8111-111111111111";
    let bob = "22222222-2222-4222-8222-222222222222";
    client
        .batch_execute(&format!(
            "create table public.notes (id serial primary key, owner uuid not null, body text);
             alter table public.notes enable row level security;
             create policy own_notes on public.notes for all to authenticated
               using ((select auth.uid()) = owner) with check ((select auth.uid()) = owner);
             insert into public.notes (owner, body) values
               ('{alice}', 'alice 1'), ('{alice}', 'alice 2'), ('{bob}', 'bob 1');"
        ))
        .await
        .unwrap();

    // Count the rows a role sees with the given claims, the way rest runs a request.
    let visible = |role: &'static str, claims: String| {
        let url = db.url.clone();
        async move {
            let (mut c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let tx = c.transaction().await.unwrap();
            tx.execute(
                "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
                &[&role, &claims],
            )
            .await
            .unwrap();
            let n: i64 = tx
                .query_one("select count(*) from public.notes", &[])
                .await
                .unwrap()
                .get(0);
            let (uid, r, email): (Option<uuid::Uuid>, Option<String>, Option<String>) = {
                let row = tx
                    .query_one(
                        "select auth.uid(), auth.role(), auth.jwt() ->> 'email'",
                        &[],
                    )
                    .await
                    .unwrap();
                (row.get(0), row.get(1), row.get(2))
            };
            tx.rollback().await.unwrap();
            (n, uid.map(|u| u.to_string()), r, email)
        }
    };
    let claims = |sub: &str| {
        format!(r#"{{"sub":"{sub}","role":"authenticated","email":"{sub}@example.com"}}"#)
    };

    let (n, uid, role, email) = visible("authenticated", claims(alice)).await;
    assert_eq!(
        (n, uid.as_deref(), role.as_deref()),
        (2, Some(alice), Some("authenticated"))
    );
    assert_eq!(email.unwrap(), format!("{alice}@example.com"));
    assert_eq!(visible("authenticated", claims(bob)).await.0, 1);
    // anon has table privileges (Supabase defaults) but no policy: nothing visible.
    assert_eq!(visible("anon", r#"{"role":"anon"}"#.into()).await.0, 0);
    // service_role bypasses RLS.
    assert_eq!(
        visible("service_role", r#"{"role":"service_role"}"#.into())
            .await
            .0,
        3
    );
}

#[tokio::test]
async fn migrations_apply_once_and_a_failing_one_leaves_nothing_behind() {
    let db = postgres().create_database().await;
    let mut client = db.connect().await;
    const GOOD: &[Migration] = &[
        Migration {
            version: "002",
            sql: "alter table demo.things add column label text;",
        },
        Migration {
            version: "001",
            sql: "create table demo.things (id int primary key);",
        },
    ];
    assert_eq!(migrate::apply(&mut client, "demo", GOOD).await.unwrap(), 2);
    assert_eq!(migrate::apply(&mut client, "demo", GOOD).await.unwrap(), 0);

    const BAD: &[Migration] = &[
        Migration {
            version: "001",
            sql: "create table demo.things (id int primary key);",
        },
        Migration {
            version: "002",
            sql: "alter table demo.things add column label text;",
        },
        Migration {
            version: "003",
            sql: "create table demo.half (id int); select 1/0;",
        },
    ];
    let err = migrate::apply(&mut client, "demo", BAD)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("003"), "{err}");
    let half: bool = client
        .query_one("select to_regclass('demo.half') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!half, "a failed migration must roll back");
    let recorded: i64 = client
        .query_one("select count(*) from demo.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 2);
    assert!(migrate::apply(&mut client, "bad-name", GOOD).await.is_err());
}

#[tokio::test]
async fn pipelined_transactions_commit_in_flight_and_roll_back_when_abandoned() {
    use ferrobase_common::config::DatabaseConfig;
    use ferrobase_common::db::{PipelinedTransaction, pool};
    let db = postgres().create_empty_database().await;
    let check = db.connect().await;
    check
        .batch_execute("create table t (v int primary key)")
        .await
        .unwrap();
    // One connection: every transaction below runs on the same one.
    let config = DatabaseConfig {
        url: db.url.clone().into(),
        pool_size: 1,
    };
    let pool = pool(&config, "test").unwrap();
    let count = || async {
        check
            .query_one("select count(*) from t", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };

    // Committed in the same flight as the insert.
    let tx = PipelinedTransaction::new(pool.get().await.unwrap());
    let insert = tx
        .client()
        .prepare_cached("insert into t values ($1)")
        .await
        .unwrap();
    let (begun, inserted) = tokio::join!(
        tx.client().batch_execute("begin"),
        tx.client().execute(&insert, &[&1i32]),
    );
    begun.unwrap();
    inserted.unwrap();
    let (again, committed) = tokio::join!(
        tx.client().execute(&insert, &[&2i32]),
        tx.client().batch_execute("commit"),
    );
    again.unwrap();
    committed.unwrap();
    tx.finished();
    assert_eq!(count().await, 2);

    // A failing statement turns the queued commit into a rollback.
    let tx = PipelinedTransaction::new(pool.get().await.unwrap());
    let (begun, inserted) = tokio::join!(
        tx.client().batch_execute("begin"),
        tx.client().execute(&insert, &[&3i32]),
    );
    begun.unwrap();
    inserted.unwrap();
    let (duplicate, committed) = tokio::join!(
        tx.client().execute(&insert, &[&1i32]),
        tx.client().batch_execute("commit"),
    );
    assert!(duplicate.is_err());
    committed.unwrap();
    tx.finished();
    assert_eq!(count().await, 2);

    // Abandoned mid-way: rolled back before the connection is handed out again.
    let tx = PipelinedTransaction::new(pool.get().await.unwrap());
    let (begun, inserted) = tokio::join!(
        tx.client().batch_execute("begin"),
        tx.client().execute(&insert, &[&4i32]),
    );
    begun.unwrap();
    inserted.unwrap();
    drop(tx);
    let client = pool.get().await.unwrap();
    let in_tx: bool = client
        .query_one("select txid_current_if_assigned() is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !in_tx,
        "the pooled connection was left inside a transaction"
    );
    client.execute(&insert, &[&5i32]).await.unwrap();
    drop(client);
    let values: Vec<i32> = check
        .query("select v from t order by v", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(values, [1, 2, 5]);
}
