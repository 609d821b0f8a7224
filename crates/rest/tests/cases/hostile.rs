//! Hostile input: injection attempts in every position, malformed grammar,
//! wrong types, huge lists and deep nesting answer 4xx and change nothing.

use serde_json::json;

use crate::support::*;

async fn unchanged(t: &TestRest) {
    assert_eq!(
        t.sql("select count(*) as n from clients").await,
        json!([{"n": 2}])
    );
    assert_eq!(
        t.sql("select name from clients order by id").await,
        json!([{"name": "Microsoft"}, {"name": "Apple"}])
    );
}

#[tokio::test]
async fn injection_attempts_are_data_or_errors() {
    let t = spawn().await;
    let attacks = [
        "/clients?select=id;drop table clients",
        "/clients?select=id,name)from clients;--",
        "/clients?select=id::text);drop table clients;--",
        "/clients?select=%22id%22%22;drop table clients;--%22",
        "/clients?select=x:id->>'a'';drop table clients;--'",
        "/clients?id=eq.1;drop table clients",
        "/clients?id=eq.1'%20or%20'1'='1",
        "/clients?id;drop=eq.1",
        "/clients?%22id%22%22;drop%20table%20clients;--=eq.1",
        "/clients?order=id;drop table clients",
        "/clients?order=id.desc;delete from clients",
        "/clients?or=(id.eq.1);drop table clients",
        "/clients?or=(id.eq.1,name.eq.x%27);drop%20table%20clients;--)",
        "/clients?id=in.(1);drop table clients",
        "/clients?limit=1;drop table clients",
        "/clients?offset=1%20union%20select%201",
        "/clients?select=id::int);drop table clients;--",
        "/clients?select=id::text union select rolname from pg_roles",
        "/clients?select=id::text%20from%20pg_roles%20union%20select%20name",
        "/clients?select=n:count()::text union select 1",
        "/clients?name=fts(english%27);drop%20table%20clients;--).x",
        "/clients?select=projects!inner;drop(id)",
        "/clients;drop table clients",
        "/rpc/add;drop table clients",
        "/clients?id=cs.{1}&name=like(any).{%27;drop}",
    ];
    for a in attacks {
        let r = t.get(a).await;
        // Every one of these is malformed or names something unknown: never a 200.
        assert!((400..500).contains(&r.status), "{a}: {r:?}");
        let obj = r.body.as_object().unwrap_or_else(|| panic!("{a}: {r:?}"));
        assert_eq!(obj.len(), 4, "{a}");
    }
    // Values are bound: a quote in a filter value is just data.
    let r = t.get("/clients?name=eq.'%20or%201=1;--").await;
    assert_eq!(r.body, json!([]));
    // Writes with hostile keys and values.
    let r = t
        .write(
            "POST",
            "/clients",
            r#"{"id": 5, "name": "x'); drop table clients; --"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 201);
    let r = t
        .write(
            "POST",
            "/clients",
            r#"{"id\"; drop table clients; --": 1}"#,
            &[],
        )
        .await;
    assert_error(&r, 400, "PGRST204");
    let r = t
        .write(
            "PATCH",
            "/clients?id=eq.5",
            r#"{"name\" = 'x'; --": 1}"#,
            &[],
        )
        .await;
    assert_error(&r, 400, "PGRST204");
    let r = t
        .write(
            "POST",
            "/clients?columns=id,\"name\";drop",
            r#"{"id": 6, "name": "y"}"#,
            &[],
        )
        .await;
    assert_error(&r, 400, "PGRST100");
    let r = t
        .write(
            "POST",
            "/clients?on_conflict=id);drop table clients;--",
            r#"{"id": 6, "name": "y"}"#,
            &[("prefer", "resolution=merge-duplicates")],
        )
        .await;
    assert!((400..500).contains(&r.status), "{r:?}");
    let r = t
        .call(
            "POST",
            "/rpc/add",
            Some(r#"{"a": "1); drop table clients; --"}"#),
            anon(),
            &[],
        )
        .await;
    assert_error(&r, 400, "22P02");
    let r = t
        .get_with(
            "/clients",
            &[("accept-profile", "public; drop table clients")],
        )
        .await;
    assert_error(&r, 406, "PGRST106");
    t.exec("delete from clients where id = 5").await;
    unchanged(&t).await;
}

#[tokio::test]
async fn malformed_grammar_and_wrong_types() {
    let t = spawn().await;
    let cases = [
        ("/clients?select=id,,name", 400, "PGRST100"),
        ("/clients?select=projects(id", 400, "PGRST100"),
        ("/clients?id=zz.1", 400, "PGRST100"),
        ("/clients?id=eq", 400, "PGRST100"),
        ("/clients?id=is.maybe", 400, "PGRST100"),
        ("/clients?or=(id.eq.1", 400, "PGRST100"),
        ("/clients?or=id.eq.1", 400, "PGRST100"),
        ("/clients?order=id.sideways", 400, "PGRST100"),
        ("/clients?id=eq.abc", 400, "22P02"),
        ("/clients?id=gt.1.5", 400, "22P02"),
        ("/items?created=eq.not-a-date", 400, "22007"),
        ("/clients?nope=eq.1", 400, "42703"),
        ("/clients?select=id::nosuchtype", 400, "42704"),
    ];
    for (path, status, code) in cases {
        let r = t.get(path).await;
        assert_error(&r, status, code);
    }
    let r = t.get("/clients?id=zz.1").await;
    assert_eq!(
        r.body["message"],
        "\"failed to parse filter parameter (zz.1)\" (line 1, column 1)"
    );
    assert!(
        r.body["details"]
            .as_str()
            .is_some_and(|d| d.starts_with("unexpected 'z' expecting \"not\" or operator"))
    );
    unchanged(&t).await;
}

#[tokio::test]
async fn huge_lists_and_deep_nesting() {
    let t = spawn().await;
    let list: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    let r = t
        .get(&format!("/clients?select=id&id=in.({})", list.join(",")))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!([{"id": 1}, {"id": 2}]));
    let deep = format!(
        "/clients?or=({}id.eq.1{})",
        "or(".repeat(100),
        ")".repeat(100)
    );
    let r = t.get(&deep).await;
    assert_error(&r, 400, "PGRST100");
    let deep = format!(
        "/clients?select={}id{}",
        "projects(".repeat(100),
        ")".repeat(100)
    );
    let r = t.get(&deep).await;
    assert_error(&r, 400, "PGRST100");
    let nested = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let r = t.write("POST", "/clients", &nested, &[]).await;
    assert_error(&r, 400, "PGRST102");
    let nested = format!(
        r#"{{"id": 9, "name": {}"x"{}}}"#,
        "{\"a\":".repeat(3000),
        "}".repeat(3000)
    );
    let r = t.write("POST", "/clients", &nested, &[]).await;
    assert_error(&r, 400, "PGRST102");
    let r = t
        .write("POST", "/clients", r#"{"id": {"x": 1}, "name": "n"}"#, &[])
        .await;
    assert!((400..500).contains(&r.status), "{r:?}");
    let r = t
        .write(
            "POST",
            "/clients",
            r#"{"id": 9, "name": ["a"]}"#,
            &[("prefer", "return=representation")],
        )
        .await;
    assert!(r.status == 201 || (400..500).contains(&r.status), "{r:?}");
    t.exec("delete from clients where id = 9").await;
    let many: Vec<String> = (0..12_000).map(|i| format!("id=neq.{i}")).collect();
    let r = t
        .get(&format!("/clients?select=id&{}", many.join("&")))
        .await;
    assert_error(&r, 400, "PGRST100");
    let big = "x".repeat(11 * 1024 * 1024);
    let r = t
        .write(
            "POST",
            "/clients",
            &format!(r#"{{"id": 9, "name": "{big}"}}"#),
            &[],
        )
        .await;
    assert_eq!(r.status, 413);
    unchanged(&t).await;
}

#[tokio::test]
async fn every_statement_runs_inside_the_callers_transaction() {
    // One connection: each new query shape is parsed on it for the first time,
    // and must still run as the caller, never as the service's own role.
    let t = spawn_with(
        "insert into notes (owner, body) values ('00000000-0000-4000-8000-00000000000a', 'secret');",
        &[("FERROBASE_DB_POOL_SIZE", "1")],
    )
    .await;
    let shapes = [
        "/notes",
        "/notes?select=body",
        "/notes?select=id,body&order=id",
        "/notes?body=eq.secret",
        "/notes?or=(id.eq.1,body.like.*s*)",
        "/notes?select=body&limit=1",
    ];
    for round in 0..2 {
        for s in shapes {
            let r = t.get_with(s, &[("prefer", "count=exact")]).await;
            assert_eq!(r.body, json!([]), "round {round} {s}: {r:?}");
            assert_eq!(r.header("content-range"), Some("*/0"), "{s}");
        }
    }
    let r = t.call("GET", "/rpc/whoami", None, anon(), &[]).await;
    assert_eq!(r.body, json!("anon:-:GET"));
    let r = t.get("/rpc/whoami?select=x").await;
    assert_eq!(r.body, json!("anon:-:GET"));
    assert_eq!(
        t.sql("select count(*) as n from notes").await,
        json!([{"n": 1}])
    );
}
