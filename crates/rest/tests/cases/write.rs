//! Writes: inserts, upserts, PUT, PATCH, DELETE and the Prefer preferences.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn inserts_single_bulk_and_with_columns() {
    let t = spawn().await;
    let r = t
        .write("POST", "/clients", r#"{"id": 3, "name": "Google"}"#, &[])
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.text.is_empty());
    assert_eq!(r.header("content-range"), Some("*/*"));

    let r = t
        .write(
            "POST",
            "/clients?select=id,name",
            r#"[{"id": 4, "name": "A"}, {"id": 5, "name": "B"}]"#,
            &[("prefer", "return=representation,count=exact")],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.body,
        json!([{"id": 4, "name": "A"}, {"id": 5, "name": "B"}])
    );
    assert_eq!(r.header("content-range"), Some("*/2"));
    assert_eq!(
        r.header("preference-applied"),
        Some("return=representation, count=exact")
    );

    let r = t
        .write(
            "POST",
            "/projects?select=id,clients(name)",
            r#"{"id": 10, "name": "P", "client_id": 4}"#,
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(r.body, json!([{"id": 10, "clients": {"name": "A"}}]));

    // columns= inserts only those keys; missing ones are null, or the default with missing=default.
    let r = t
        .write(
            "POST",
            "/items?columns=\"name\",\"note\"&select=name,note,active",
            r#"[{"name": "x", "price": 9}, {"name": "y", "note": "n"}]"#,
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.body,
        json!([{"name": "x", "note": null, "active": true}, {"name": "y", "note": "n", "active": true}])
    );
    let r = t
        .write(
            "POST",
            "/items?columns=name,note&select=name,note",
            r#"[{"name": "z"}]"#,
            &[("prefer", "return=representation,missing=default")],
        )
        .await;
    assert_eq!(r.body, json!([{"name": "z", "note": "none"}]), "{r:?}");
    assert_eq!(
        r.header("preference-applied"),
        Some("return=representation, missing=default")
    );

    let r = t
        .write(
            "POST",
            "/clients",
            "[]",
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body, json!([]));

    let r = t
        .write(
            "POST",
            "/clients",
            r#"{"id": 6}"#,
            &[("prefer", "return=headers-only")],
        )
        .await;
    assert_error(&r, 400, "23502");
    let r = t
        .write(
            "POST",
            "/clients",
            r#"{"id": 7, "name": "L"}"#,
            &[("prefer", "return=headers-only")],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some("/clients?id=eq.7"));
}

#[tokio::test]
async fn insert_errors() {
    let t = spawn().await;
    let r = t
        .write("POST", "/clients", r#"{"id": 1, "name": "dup"}"#, &[])
        .await;
    assert_error(&r, 409, "23505");
    assert_eq!(
        r.body["message"],
        "duplicate key value violates unique constraint \"clients_pkey\""
    );
    assert_eq!(r.body["details"], "Key (id)=(1) already exists.");
    let r = t
        .write(
            "POST",
            "/projects",
            r#"{"id": 99, "name": "x", "client_id": 42}"#,
            &[],
        )
        .await;
    assert_error(&r, 409, "23503");
    let r = t
        .write("POST", "/clients", r#"{"id": 8, "nope": 1}"#, &[])
        .await;
    assert_error(&r, 400, "PGRST204");
    assert_eq!(
        r.body["message"],
        "Could not find the 'nope' column of 'clients' in the schema cache"
    );
    let r = t
        .write(
            "POST",
            "/clients",
            r#"[{"id": 8, "name": "a"}, {"id": 9}]"#,
            &[],
        )
        .await;
    assert_error(&r, 400, "PGRST102");
    assert_eq!(r.body["message"], "All object keys must match");
    let r = t.write("POST", "/clients", r#""just a string""#, &[]).await;
    assert_error(&r, 400, "PGRST102");
    let r = t.write("POST", "/clients", "{not json", &[]).await;
    assert_error(&r, 400, "PGRST102");
    let r = t
        .write("POST", "/clients", r#"{"id": "abc", "name": "x"}"#, &[])
        .await;
    assert_error(&r, 400, "22P02");
    let r = t
        .write(
            "POST",
            "/clients",
            "{}",
            &[("content-type", "application/xml")],
        )
        .await;
    assert_error(&r, 400, "PGRST102");
    assert_eq!(
        t.sql("select count(*) as n from clients").await,
        json!([{"n": 2}])
    );
}

#[tokio::test]
async fn upserts_merge_and_ignore() {
    let t = spawn().await;
    let merge = [(
        "prefer",
        "resolution=merge-duplicates,return=representation",
    )];
    let r = t
        .write(
            "POST",
            "/clients",
            r#"[{"id": 1, "name": "MS"}, {"id": 3, "name": "New"}]"#,
            &merge,
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.body,
        json!([{"id": 1, "name": "MS"}, {"id": 3, "name": "New"}])
    );
    assert_eq!(
        r.header("preference-applied"),
        Some("return=representation, resolution=merge-duplicates")
    );
    let r = t
        .write(
            "POST",
            "/clients",
            r#"[{"id": 1, "name": "Microsoft"}]"#,
            &merge,
        )
        .await;
    assert_eq!(r.status, 200, "all rows updated: {r:?}");
    let r = t
        .write(
            "POST",
            "/clients",
            r#"[{"id": 1, "name": "ignored"}, {"id": 4, "name": "Four"}]"#,
            &[(
                "prefer",
                "resolution=ignore-duplicates,return=representation",
            )],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body, json!([{"id": 4, "name": "Four"}]));
    assert_eq!(
        t.sql("select name from clients order by id").await,
        json!([{"name": "Microsoft"}, {"name": "Apple"}, {"name": "New"}, {"name": "Four"}])
    );

    // on_conflict names a unique column.
    t.exec("create unique index people_name on people(name); notify pgrst;")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let r = t
        .write(
            "POST",
            "/people?on_conflict=name",
            r#"{"id": 2, "name": "Bob"}"#,
            &[(
                "prefer",
                "resolution=merge-duplicates,return=representation",
            )],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = t
        .write(
            "POST",
            "/people?on_conflict=nope",
            r#"{"id": 1, "name": "Bob"}"#,
            &[("prefer", "resolution=merge-duplicates")],
        )
        .await;
    assert_error(&r, 400, "PGRST204");
}

#[tokio::test]
async fn updates_and_deletes() {
    let t = spawn().await;
    let r = t
        .write("PATCH", "/projects?id=eq.1", r#"{"name": "Win7"}"#, &[])
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("content-range"), Some("0-0/*"));
    let r = t
        .write(
            "PATCH",
            "/projects?client_id=eq.2&select=id,name",
            r#"{"name": "Mac"}"#,
            &[("prefer", "return=representation,count=exact")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!([{"id": 3, "name": "Mac"}, {"id": 4, "name": "Mac"}])
    );
    assert_eq!(r.header("content-range"), Some("0-1/2"));
    let r = t
        .write(
            "PATCH",
            "/projects?id=eq.99",
            r#"{"name": "none"}"#,
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!([]));
    assert_eq!(r.header("content-range"), Some("*/*"));

    let r = t
        .write(
            "PATCH",
            "/projects?order=id.desc&limit=1&select=id",
            r#"{"name": "Last"}"#,
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(r.body, json!([{"id": 5}]), "{r:?}");

    let r = t
        .write(
            "DELETE",
            "/tasks?id=in.(7,8)&select=id",
            "",
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!([{"id": 7}, {"id": 8}]));
    let r = t
        .write("DELETE", "/tasks?id=eq.4", "", &[("prefer", "count=exact")])
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("content-range"), Some("*/1"));
    assert_eq!(
        t.sql("select count(*) as n from tasks").await,
        json!([{"n": 5}])
    );

    // Singular writes roll back when not exactly one row.
    let single = [
        ("accept", "application/vnd.pgrst.object+json"),
        ("prefer", "return=representation"),
    ];
    let r = t
        .write(
            "PATCH",
            "/projects?client_id=eq.1",
            r#"{"name": "both"}"#,
            &single,
        )
        .await;
    assert_error(&r, 406, "PGRST116");
    assert_eq!(
        t.sql("select count(*) as n from projects where name = 'both'")
            .await,
        json!([{"n": 0}])
    );
    let r = t
        .write("PATCH", "/projects?id=eq.2", r#"{"name": "one"}"#, &single)
        .await;
    assert_eq!(r.body, json!({"id": 2, "name": "one", "client_id": 1}));
    let r = t.write("DELETE", "/items", "", &single).await;
    assert_error(&r, 406, "PGRST116");
    assert_eq!(
        t.sql("select count(*) as n from items").await,
        json!([{"n": 4}])
    );
}

#[tokio::test]
async fn strict_handling_max_affected_and_tx_rollback() {
    let t = spawn().await;
    let name = t.db.name.clone();
    // Scoped to this database: the cluster is shared by tests.
    t.exec(&format!("alter role authenticator in database {name} set pgrst.db_tx_end = 'commit-allow-override'; notify pgrst;")).await;
    // Before the reload, tx=rollback is not honoured; wait until it is.
    let mut applied = None;
    for _ in 0..40 {
        let r = t
            .write(
                "POST",
                "/clients",
                r#"{"id": 99, "name": "probe"}"#,
                &[("prefer", "tx=rollback")],
            )
            .await;
        if r.header("preference-applied") == Some("tx=rollback") {
            applied = Some(r.status);
            break;
        }
        t.exec("delete from clients where id = 99").await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(applied, Some(201));
    assert_eq!(
        t.sql("select count(*) as n from clients where id = 99")
            .await,
        json!([{"n": 0}])
    );

    let r = t
        .write(
            "DELETE",
            "/items",
            "",
            &[("prefer", "handling=strict, max-affected=2")],
        )
        .await;
    assert_error(&r, 400, "PGRST124");
    assert_eq!(r.body["details"], "The query affects 4 rows");
    assert_eq!(
        t.sql("select count(*) as n from items").await,
        json!([{"n": 4}])
    );
    let r = t
        .write(
            "DELETE",
            "/items?id=eq.1",
            "",
            &[("prefer", "handling=strict, max-affected=2")],
        )
        .await;
    assert_eq!(r.status, 204);

    let r = t
        .write(
            "POST",
            "/clients",
            r#"{"id": 9, "name": "temp"}"#,
            &[("prefer", "tx=rollback, return=representation")],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body, json!([{"id": 9, "name": "temp"}]));
    assert_eq!(
        r.header("preference-applied"),
        Some("return=representation, tx=rollback")
    );
    assert_eq!(
        t.sql("select count(*) as n from clients where id = 9")
            .await,
        json!([{"n": 0}])
    );

    let r = t
        .write(
            "POST",
            "/clients",
            r#"{"id": 9, "name": "temp"}"#,
            &[("prefer", "handling=strict, bogus=1")],
        )
        .await;
    assert_error(&r, 400, "PGRST122");
    assert_eq!(r.body["details"], "Invalid preferences: bogus=1");
    let r = t
        .write(
            "POST",
            "/clients",
            r#"{"id": 9, "name": "temp"}"#,
            &[("prefer", "bogus=1")],
        )
        .await;
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn put_replaces_or_creates_one_row() {
    let t = spawn().await;
    let rep = [("prefer", "return=representation")];
    let r = t
        .write(
            "PUT",
            "/clients?id=eq.1",
            r#"{"id": 1, "name": "MSFT"}"#,
            &rep,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, json!([{"id": 1, "name": "MSFT"}]));
    let r = t
        .write(
            "PUT",
            "/clients?id=eq.3",
            r#"{"id": 3, "name": "New"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        t.sql("select name from clients order by id").await,
        json!([{"name": "MSFT"}, {"name": "Apple"}, {"name": "New"}])
    );
    let r = t
        .write("PUT", "/clients?id=eq.4", r#"{"id": 5, "name": "x"}"#, &[])
        .await;
    assert_error(&r, 400, "PGRST115");
    let r = t
        .write(
            "PUT",
            "/clients?name=eq.x",
            r#"{"id": 5, "name": "x"}"#,
            &[],
        )
        .await;
    assert_error(&r, 405, "PGRST105");
    let r = t
        .write("PUT", "/clients?id=gt.1", r#"{"id": 5, "name": "x"}"#, &[])
        .await;
    assert_error(&r, 405, "PGRST105");
    let r = t
        .write(
            "PUT",
            "/clients?id=eq.5&limit=1",
            r#"{"id": 5, "name": "x"}"#,
            &[],
        )
        .await;
    assert_error(&r, 400, "PGRST114");
    assert_eq!(
        t.sql("select count(*) as n from clients").await,
        json!([{"n": 3}])
    );
}

#[tokio::test]
async fn csv_and_form_bodies() {
    let t = spawn().await;
    let r = t
        .write(
            "POST",
            "/clients?select=id,name",
            "id,name\n5,\"Quoted, \"\"name\"\"\"\n6,Plain\r\n",
            &[
                ("content-type", "text/csv"),
                ("prefer", "return=representation"),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.body,
        json!([{"id": 5, "name": "Quoted, \"name\""}, {"id": 6, "name": "Plain"}])
    );
    let r = t
        .write(
            "POST",
            "/items?select=name,price",
            "name,price\nnull price,NULL",
            &[
                ("content-type", "text/csv"),
                ("prefer", "return=representation"),
            ],
        )
        .await;
    assert_eq!(r.body, json!([{"name": "null price", "price": null}]));
    let r = t
        .write(
            "POST",
            "/clients",
            "id,name\n7",
            &[("content-type", "text/csv")],
        )
        .await;
    assert_error(&r, 400, "PGRST102");
    let r = t
        .write(
            "POST",
            "/clients?select=id,name",
            "id=8&name=Form+Co",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("prefer", "return=representation"),
            ],
        )
        .await;
    assert_eq!(r.body, json!([{"id": 8, "name": "Form Co"}]));
}

#[tokio::test]
async fn patch_with_columns_and_missing_default() {
    let t = spawn().await;
    t.exec("update items set note = 'changed' where id = 1")
        .await;
    let r = t
        .write(
            "PATCH",
            "/items?id=eq.1&columns=name,note&select=name,note",
            r#"{"name": "apricot"}"#,
            &[("prefer", "return=representation,missing=default")],
        )
        .await;
    assert_eq!(
        r.body,
        json!([{"name": "apricot", "note": "none"}]),
        "{r:?}"
    );
    let r = t
        .write(
            "PATCH",
            "/items?id=eq.1&columns=name,note&select=name,note",
            r#"{"name": "avocado"}"#,
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(r.body, json!([{"name": "avocado", "note": null}]), "{r:?}");
    // max-affected on a set-returning function, and refused on a scalar one.
    let r = t
        .call(
            "POST",
            "/rpc/get_projects",
            Some(r#"{"min_id": 1}"#),
            service(),
            &[("prefer", "handling=strict, max-affected=2")],
        )
        .await;
    assert_error(&r, 400, "PGRST124");
    let r = t
        .call(
            "POST",
            "/rpc/add",
            Some(r#"{"a": 1}"#),
            service(),
            &[("prefer", "handling=strict, max-affected=2")],
        )
        .await;
    assert_error(&r, 400, "PGRST128");
}

#[tokio::test]
async fn write_representations_honour_embedded_params() {
    let t = spawn().await;
    let r = t
        .write(
            "PATCH",
            "/clients?id=eq.2&select=id,projects(id)&projects.or=(id.eq.4,id.eq.99)&projects.limit=1",
            r#"{"name": "Apple Inc"}"#,
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(r.body, json!([{"id": 2, "projects": [{"id": 4}]}]), "{r:?}");
    let r = t
        .write(
            "PATCH",
            "/clients?id=eq.2&select=id&nope.id=eq.1",
            r#"{"name": "x"}"#,
            &[("prefer", "return=representation")],
        )
        .await;
    assert_error(&r, 400, "PGRST108");
    assert_eq!(
        t.sql("select name from clients where id = 2").await,
        json!([{"name": "Apple Inc"}])
    );
}

#[tokio::test]
async fn a_deferred_constraint_failing_at_commit_answers_its_error_and_keeps_nothing() {
    let t = spawn_with(
        "create table parents (id int primary key);
         create table kids (id int primary key,
           parent int references parents(id) deferrable initially deferred);
         grant all on parents, kids to service_role;",
        &[],
    )
    .await;
    // The insert itself succeeds; the foreign key is checked by the COMMIT
    // that travels in the same pipeline.
    for prefer in ["return=minimal", "return=representation"] {
        let r = t
            .write(
                "POST",
                "/kids",
                r#"{"id": 1, "parent": 42}"#,
                &[("prefer", prefer)],
            )
            .await;
        assert_error(&r, 409, "23503");
        assert_eq!(
            t.sql("select count(*) as n from kids").await,
            json!([{"n": 0}])
        );
    }
    // The connections are still good.
    t.exec("insert into parents values (42)").await;
    let r = t
        .write("POST", "/kids", r#"{"id": 1, "parent": 42}"#, &[])
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        t.sql("select count(*) as n from kids").await,
        json!([{"n": 1}])
    );
}
