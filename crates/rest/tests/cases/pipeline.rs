//! The request path's own PostgreSQL connections (`ferrobase_rest::pg`):
//! pipelines, failures inside them, the statement cache, authentication.

use ferrobase_rest::pg::{Answer, ConnError, Connection, Pool, Row, Statement, TxStatus};
use ferrobase_testkit::{postgres, unique_prefix};

fn config(url: &str) -> tokio_postgres::Config {
    url.parse().expect("a valid URL")
}

fn rows(answer: &Answer) -> &[Row] {
    match answer {
        Answer::Rows(rows) => rows,
        other => panic!("expected rows, got {other:?}"),
    }
}

/// The first value of the one-statement pipeline `sql`, as text.
async fn value(conn: &mut Connection, sql: &str) -> String {
    let answers = conn
        .pipeline(&[Statement::once(sql, &[])])
        .await
        .expect("the pipeline runs");
    rows(&answers[0])[0].text(0).unwrap_or_default().to_owned()
}

/// The names of the statements prepared on the connection, as it sees them.
async fn prepared(conn: &mut Connection) -> Vec<String> {
    let text = value(
        conn,
        "select coalesce(string_agg(statement, '|' order by statement), '') from pg_prepared_statements",
    )
    .await;
    text.split('|')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn one_pipeline_runs_a_transaction_with_local_settings() {
    let db = postgres().create_database().await;
    let mut conn = Connection::connect(&config(&db.url)).await.unwrap();
    let answers = conn
        .pipeline(&[
            Statement::cached("begin isolation level read committed read only", &[]),
            Statement::cached(
                "select set_config('request.method', $1, true), set_config('request.path', $2, true)",
                &[Some("GET"), Some("/items")],
            ),
            Statement::cached(
                "select current_setting('request.method') || ' ' || current_setting('request.path'), $1::int8 + 1, $2::text is null",
                &[Some("41"), None],
            ),
            Statement::cached("commit", &[]),
        ])
        .await
        .unwrap();
    assert_eq!(answers.len(), 4);
    let main = rows(&answers[2]);
    assert_eq!(main.len(), 1);
    assert_eq!(main[0].text(0), Some("GET /items"));
    assert_eq!(main[0].int8(1), Ok(Some(42)));
    assert_eq!(main[0].text(2), Some("t"));
    assert_eq!(conn.status(), TxStatus::Idle);
    // The settings were local to that transaction.
    let answers = conn
        .pipeline(&[Statement::once(
            "select current_setting('request.method', true)",
            &[],
        )])
        .await
        .unwrap();
    assert_eq!(rows(&answers[0])[0].text(0).unwrap_or(""), "");
    assert!(conn.is_usable());
}

#[tokio::test]
async fn a_failing_statement_skips_the_rest_and_prepares_nothing_broken() {
    let db = postgres().create_database().await;
    let mut conn = Connection::connect(&config(&db.url)).await.unwrap();
    let setup = db.connect().await;
    setup
        .batch_execute("create table kept (n int)")
        .await
        .unwrap();
    let insert = "insert into kept values ($1::int) returning n";
    let answers = conn
        .pipeline(&[
            Statement::cached("begin", &[]),
            Statement::cached(insert, &[Some("1")]),
            Statement::cached(insert, &[Some("not a number")]),
            Statement::cached(insert, &[Some("3")]),
            Statement::cached("commit", &[]),
        ])
        .await
        .unwrap();
    assert_eq!(rows(&answers[1])[0].text(0), Some("1"));
    match &answers[2] {
        Answer::Failed(e) => {
            assert_eq!(e.code, "22P02");
            assert!(e.message.contains("not a number"), "{}", e.message);
        }
        other => panic!("expected the bad value to fail, got {other:?}"),
    }
    assert_eq!(answers[3], Answer::Skipped);
    assert_eq!(answers[4], Answer::Skipped);
    // The explicit transaction is aborted, not ended: nothing was committed.
    assert_eq!(conn.status(), TxStatus::Failed);
    assert!(!conn.is_usable());
    let answers = conn
        .pipeline(&[Statement::cached("rollback", &[])])
        .await
        .unwrap();
    assert!(matches!(answers[0], Answer::Rows(_)));
    assert_eq!(conn.status(), TxStatus::Idle);
    let count: i64 = setup
        .query_one("select count(*) from kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);

    // A statement whose parse fails is not remembered as prepared: the same
    // text runs once the table it names exists.
    let late = "select count(*) from appears_later";
    let answers = conn
        .pipeline(&[Statement::cached(late, &[])])
        .await
        .unwrap();
    assert!(matches!(&answers[0], Answer::Failed(e) if e.code == "42P01"));
    assert_eq!(conn.status(), TxStatus::Idle);
    setup
        .batch_execute("create table appears_later (n int); insert into appears_later values (1)")
        .await
        .unwrap();
    let answers = conn
        .pipeline(&[Statement::cached(late, &[])])
        .await
        .unwrap();
    assert_eq!(rows(&answers[0])[0].int8(0), Ok(Some(1)));
}

#[tokio::test]
async fn cached_statements_are_prepared_once_and_forgotten_on_request() {
    let db = postgres().create_database().await;
    let pool = Pool::new(&db.url, 1, "pipeline-test").unwrap();
    let sql = "select $1::int * 2";
    for n in 1..=3 {
        let mut conn = pool.get().await.unwrap();
        let answers = conn
            .pipeline(&[Statement::cached(sql, &[Some(&n.to_string())])])
            .await
            .unwrap();
        assert_eq!(rows(&answers[0])[0].int8(0), Ok(Some(n * 2)));
        assert_eq!(prepared(&mut conn).await, vec![sql.to_owned()]);
    }
    pool.forget_statements();
    let mut conn = pool.get().await.unwrap();
    assert!(prepared(&mut conn).await.is_empty());
    let answers = conn
        .pipeline(&[Statement::cached(sql, &[Some("5")])])
        .await
        .unwrap();
    assert_eq!(rows(&answers[0])[0].int8(0), Ok(Some(10)));
}

#[tokio::test]
async fn a_connection_left_in_a_transaction_is_not_reused() {
    let db = postgres().create_database().await;
    let pool = Pool::new(&db.url, 1, "pipeline-test").unwrap();
    let first = {
        let mut conn = pool.get().await.unwrap();
        let answers = conn
            .pipeline(&[
                Statement::cached("begin", &[]),
                Statement::once("select pg_backend_pid()::text", &[]),
            ])
            .await
            .unwrap();
        assert_eq!(conn.status(), TxStatus::InTransaction);
        rows(&answers[1])[0].text(0).unwrap().to_owned()
    };
    let mut conn = pool.get().await.unwrap();
    assert_ne!(
        first,
        value(&mut conn, "select pg_backend_pid()::text").await,
        "the connection inside a transaction came back"
    );
    assert_eq!(conn.status(), TxStatus::Idle);
}

#[tokio::test]
async fn connects_over_a_unix_socket() {
    let db = postgres().create_database().await;
    let setup = db.connect().await;
    let dir: String = setup
        .query_one("select current_setting('unix_socket_directories')", &[])
        .await
        .unwrap()
        .get(0);
    let dir = dir.split(',').next().unwrap().trim().to_owned();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(&dir)
        .port(postgres().port())
        .user("postgres")
        .dbname(&db.name);
    let mut conn = Connection::connect(&cfg).await.unwrap();
    assert_eq!(value(&mut conn, "select current_database()").await, db.name);
}

#[tokio::test]
async fn connects_to_a_hostaddr_with_keepalives_and_a_timeout() {
    let db = postgres().create_database().await;
    // The name does not resolve: only `hostaddr` can be what was used.
    let url = format!(
        "host=db.invalid hostaddr=127.0.0.1 port={} user=postgres dbname={} connect_timeout=5 keepalives_idle=30",
        postgres().port(),
        db.name
    );
    let mut conn = Connection::connect(&config(&url)).await.unwrap();
    assert_eq!(value(&mut conn, "select current_database()").await, db.name);
}

/// Puts `lines` first in the server's `pg_hba.conf` and reloads it.
async fn require_passwords(setup: &tokio_postgres::Client, lines: &str) {
    let file: String = setup
        .query_one("select current_setting('hba_file')", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    let old = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&file, format!("{lines}\n{old}")).unwrap_or_else(|e| panic!("{e}"));
    setup
        .batch_execute("select pg_reload_conf()")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The postmaster reloads asynchronously; wait until the rules are live.
    for _ in 0..100 {
        let live: i64 = setup
            .query_one(
                "select count(*) from pg_hba_file_rules where auth_method in ('scram-sha-256', 'md5')",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0);
        if live > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("pg_hba.conf did not reload");
}

#[tokio::test]
async fn authenticates_with_scram_and_md5_and_reports_a_wrong_password() {
    let db = postgres().create_database().await;
    let setup = db.connect().await;
    let prefix = unique_prefix().replace(':', "_");
    let scram = format!("{prefix}scram");
    let md5 = format!("{prefix}md5");
    setup
        .batch_execute(&format!(
            "set password_encryption = 'scram-sha-256'; create role {scram} login password 'pw-scram';
             set password_encryption = 'md5'; create role {md5} login password 'pw-md5';"
        ))
        .await
        .unwrap();
    require_passwords(
        &setup,
        &format!("host all {scram} 127.0.0.1/32 scram-sha-256\nhost all {md5} 127.0.0.1/32 md5"),
    )
    .await;
    let port = postgres().port();
    for (user, password) in [(&scram, "pw-scram"), (&md5, "pw-md5")] {
        let url = format!("postgres://{user}:{password}@127.0.0.1:{port}/{}", db.name);
        let mut conn = Connection::connect(&config(&url))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(value(&mut conn, "select current_user::text").await, *user);

        let wrong = format!("postgres://{user}:wrong@127.0.0.1:{port}/{}", db.name);
        match Connection::connect(&config(&wrong)).await {
            Err(ConnError::Refused(e)) => assert_eq!(e.code, "28P01", "{user}: {e}"),
            Err(other) => panic!("{user}: expected a refusal, got {other}"),
            Ok(_) => panic!("{user}: a wrong password was accepted"),
        }
    }
}

#[tokio::test]
async fn a_connection_whose_caller_went_away_mid_pipeline_is_not_reused() {
    let db = postgres().create_database().await;
    let pool = Pool::new(&db.url, 1, "pipeline-test").unwrap();
    let first = {
        let mut conn = pool.get().await.unwrap();
        let pid = value(&mut conn, "select pg_backend_pid()::text").await;
        // The caller gives up while the server still works on the pipeline.
        let sleep = [Statement::once("select pg_sleep(2)", &[])];
        let slow = conn.pipeline(&sleep);
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(100), slow).await;
        assert!(gave_up.is_err(), "the slow pipeline finished early");
        assert!(!conn.is_usable());
        pid
    };
    let mut conn = pool.get().await.unwrap();
    assert_ne!(
        value(&mut conn, "select pg_backend_pid()::text").await,
        first,
        "a connection with an unread answer was reused"
    );
}
