//! Functions under `/rpc`.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn calls_functions_by_named_arguments() {
    let t = spawn().await;
    let r = t
        .call("POST", "/rpc/add", Some(r#"{"a": 1, "b": 2}"#), anon(), &[])
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text, "3");
    let r = t
        .call("POST", "/rpc/add", Some(r#"{"a": 1}"#), anon(), &[])
        .await;
    assert_eq!(r.body, json!(11));
    let r = t.get("/rpc/add?a=4&b=5").await;
    assert_eq!(r.body, json!(9));
    let r = t.get("/rpc/add?a=4&b=5&bogus=eq.1").await;
    assert_error(&r, 400, "42703");
    let r = t.call("POST", "/rpc/status", Some("{}"), anon(), &[]).await;
    assert_eq!(r.text, "\"OFFLINE\"");
    let r = t
        .call(
            "POST",
            "/rpc/echo",
            Some(r#"{"x": [1, {"y": null}]}"#),
            anon(),
            &[],
        )
        .await;
    assert_eq!(r.body, json!({"x": [1, {"y": null}]}));
    let r = t.call("POST", "/rpc/noop", Some("{}"), anon(), &[]).await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    let r = t
        .call(
            "POST",
            "/rpc/project_by_id",
            Some(r#"{"pid": 3}"#),
            anon(),
            &[],
        )
        .await;
    assert_eq!(r.body, json!({"id": 3, "name": "IOS", "client_id": 2}));
    let r = t
        .call(
            "POST",
            "/rpc/whoami",
            Some("{}"),
            user("00000000-0000-4000-8000-000000000001"),
            &[],
        )
        .await;
    assert_eq!(
        r.body,
        json!("authenticated:00000000-0000-4000-8000-000000000001:POST")
    );
}

/// Query-string arguments (GET, HEAD) are text read by the argument's type: a
/// json/jsonb argument receives the parsed document (supabase-py 2.34 sends
/// dict arguments of `rpc(..., get=True)` as JSON text), while a JSON body's
/// string stays a JSON string.
#[tokio::test]
async fn query_string_arguments_are_read_by_the_argument_type() {
    let t = spawn_with(
        "create function jtype(arg json) returns text language sql stable as $$ select json_typeof(arg) $$;
         create function jb(doc jsonb) returns jsonb language sql stable as $$ select doc $$;
         create function firsts(vals text[], variadic more int[]) returns text language sql stable
           as $$ select vals[1] || ':' || more[1] $$;",
        &[],
    )
    .await;
    // {"a":1}
    let r = t.get("/rpc/jtype?arg=%7B%22a%22%3A1%7D").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, json!("object"));
    // [1,"b,c"]
    let r = t.get("/rpc/jb?doc=%5B1%2C%22b%2Cc%22%5D").await;
    assert_eq!(r.body, json!([1, "b,c"]), "{r:?}");
    // "quoted" is a JSON string, 7 a number.
    let r = t.get("/rpc/jtype?arg=%22quoted%22").await;
    assert_eq!(r.body, json!("string"), "{r:?}");
    let r = t.get("/rpc/jb?doc=7").await;
    assert_eq!(r.body, json!(7), "{r:?}");
    let r = t.get("/rpc/jb?doc=not%20json").await;
    assert_error(&r, 400, "22P02");
    // Other types are unaffected: array literals, repeated variadic values.
    let r = t
        .get("/rpc/firsts?vals=%7B%22a%2Cb%22%2Cc%7D&more=3&more=4")
        .await;
    assert_eq!(r.body, json!("a,b:3"), "{r:?}");
    // A JSON body keeps its value types: a string stays a string.
    let r = t
        .call(
            "POST",
            "/rpc/jtype",
            Some(r#"{"arg": "{\"a\": 1}"}"#),
            anon(),
            &[],
        )
        .await;
    assert_eq!(r.body, json!("string"), "{r:?}");
    let r = t
        .call(
            "POST",
            "/rpc/jtype",
            Some(r#"{"arg": {"a": 1}}"#),
            anon(),
            &[],
        )
        .await;
    assert_eq!(r.body, json!("object"), "{r:?}");
}

/// `character` and `bit` arguments take values of any length, as in SQL
/// (`format_type` prints them without the length, which alone means 1).
#[tokio::test]
async fn character_and_bit_arguments_keep_their_length() {
    let t = spawn_with(
        "create function chars(c character, b bit, cs character[]) returns text language sql stable
           as $$ select c::text || '/' || b::text || '/' || cs::text $$;",
        &[],
    )
    .await;
    let r = t
        .call(
            "POST",
            "/rpc/chars",
            Some(r#"{"c": "AB", "b": "101", "cs": ["XY", "Z"]}"#),
            anon(),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, json!("AB/101/{XY,Z}"));
    let r = t.get("/rpc/chars?c=AB&b=101&cs=%7BXY%2CZ%7D").await;
    assert_eq!(r.body, json!("AB/101/{XY,Z}"), "{r:?}");
}

#[tokio::test]
async fn set_returning_functions_filter_order_embed_and_count() {
    let t = spawn().await;
    let r = t
        .get("/rpc/get_projects?min_id=2&select=id,name&order=id.desc&id=lt.5")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        json!([{"id": 4, "name": "OSX"}, {"id": 3, "name": "IOS"}, {"id": 2, "name": "Windows 10"}])
    );
    let r = t
        .call(
            "POST",
            "/rpc/get_projects?select=id,clients(name)&limit=1&order=id",
            Some(r#"{"min_id": 3}"#),
            anon(),
            &[("prefer", "count=exact")],
        )
        .await;
    assert_eq!(r.body, json!([{"id": 3, "clients": {"name": "Apple"}}]));
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("0-0/3"));
    let r = t.get("/rpc/numbers?n=3").await;
    assert_eq!(r.body, json!([1, 2, 3]));
    let r = t
        .get_with(
            "/rpc/get_projects?min_id=5",
            &[("accept", "application/vnd.pgrst.object+json")],
        )
        .await;
    assert_eq!(
        r.body,
        json!({"id": 5, "name": "Orphan", "client_id": null})
    );
}

#[tokio::test]
async fn function_resolution_errors() {
    let t = spawn().await;
    let r = t
        .call("POST", "/rpc/add", Some(r#"{"x": 1}"#), anon(), &[])
        .await;
    assert_error(&r, 404, "PGRST202");
    assert_eq!(
        r.body["message"],
        "Could not find the function public.add(x) in the schema cache"
    );
    assert_eq!(
        r.body["details"],
        "Searched for the function public.add with parameter x or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache."
    );
    let r = t
        .call("POST", "/rpc/missing", Some("{}"), anon(), &[])
        .await;
    assert_error(&r, 404, "PGRST202");
    assert_eq!(
        r.body["message"],
        "Could not find the function public.missing without parameters in the schema cache"
    );
    assert_eq!(r.body["hint"], serde_json::Value::Null);
    let r = t
        .call("POST", "/rpc/ad", Some(r#"{"a": 1}"#), anon(), &[])
        .await;
    assert_eq!(
        r.body["hint"],
        "Perhaps you meant to call the function public.add"
    );
    // A function /rpc cannot call (one unnamed int) gets a hint too.
    t.exec(
        "create function poly_unnamed_integer(int) returns int language sql as $$ select $1 $$;
         create function poly_unnamed_text(text) returns text language sql as $$ select $1 $$;
         notify pgrst, 'reload schema';",
    )
    .await;
    let mut r = t
        .call(
            "POST",
            "/rpc/poly_unnamed_integer",
            Some("{\"\": 1}"),
            anon(),
            &[],
        )
        .await;
    for _ in 0..40 {
        if r.body["hint"] != serde_json::Value::Null {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        r = t
            .call(
                "POST",
                "/rpc/poly_unnamed_integer",
                Some("{\"\": 1}"),
                anon(),
                &[],
            )
            .await;
    }
    assert_error(&r, 404, "PGRST202");
    assert_eq!(
        r.body["hint"],
        "Perhaps you meant to call the function public.poly_unnamed_text"
    );
    let r = t
        .call("POST", "/rpc/Ad_D", Some(r#"{"a": 1}"#), anon(), &[])
        .await;
    assert_eq!(
        r.body["hint"],
        "Perhaps you meant to call the function public.add"
    );
    let r = t
        .call("POST", "/rpc/overloaded", Some(r#"{"a": 1}"#), anon(), &[])
        .await;
    assert_error(&r, 300, "PGRST203");
    assert_eq!(
        r.body["message"],
        "Could not choose the best candidate function between: public.overloaded(a => integer), public.overloaded(a => text)"
    );
    let r = t.call("PATCH", "/rpc/add", Some("{}"), anon(), &[]).await;
    assert_error(&r, 405, "PGRST101");
    assert_eq!(r.body["message"], "Cannot use the PATCH method on RPC");
}

#[tokio::test]
async fn volatile_functions_write_only_over_post() {
    let t = spawn().await;
    let r = t
        .call(
            "POST",
            "/rpc/new_client",
            Some(r#"{"id": 7, "name": "Seven"}"#),
            service(),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, json!({"id": 7, "name": "Seven"}));
    let r = t
        .call(
            "GET",
            "/rpc/new_client?id=8&name=Eight",
            None,
            service(),
            &[],
        )
        .await;
    assert_error(&r, 405, "25006");
    assert_eq!(
        t.sql("select id from clients where id > 2 order by id")
            .await,
        json!([{"id": 7}])
    );
}

#[tokio::test]
async fn response_overrides_and_raised_errors() {
    let t = spawn().await;
    let r = t.call("POST", "/rpc/teapot", Some("{}"), anon(), &[]).await;
    assert_eq!(r.status, 418, "{r:?}");
    assert_eq!(r.header("x-brew"), Some("earl grey"));
    assert_eq!(r.body, json!("short and stout"));
    let r = t
        .call("POST", "/rpc/fail_payment", Some("{}"), anon(), &[])
        .await;
    assert_eq!(r.status, 402);
    assert_eq!(
        r.body,
        json!({"code": "123", "details": "Quota exceeded", "hint": "Upgrade", "message": "Payment Required"})
    );
    assert_eq!(r.header("x-powered-by"), Some("Ferrobase"));
    let r = t
        .call("POST", "/rpc/raise_plain", Some("{}"), anon(), &[])
        .await;
    assert_eq!(
        r.body,
        json!({"code": "P0001", "details": null, "hint": "try again", "message": "custom failure"})
    );
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn raw_bodies_reach_single_unnamed_parameters() {
    let t = spawn_with(
        "create function vsum(variadic nums int[]) returns int language sql immutable as $$ select sum(n)::int from unnest(nums) n $$;
         create function shout(text) returns text language sql immutable as $$ select upper($1) $$;
         create function byte_len(bytea) returns int language sql immutable as $$ select length($1) $$;",
        &[],
    )
    .await;
    let r = t
        .call(
            "POST",
            "/rpc/shout",
            Some("hello, {world}"),
            anon(),
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(r.body, json!("HELLO, {WORLD}"), "{r:?}");
    let r = t
        .call(
            "POST",
            "/rpc/byte_len",
            Some("\u{1}\u{2}\u{3}"),
            anon(),
            &[("content-type", "application/octet-stream")],
        )
        .await;
    assert_eq!(r.body, json!(3), "{r:?}");
    let r = t
        .call(
            "POST",
            "/rpc/add",
            Some("1"),
            anon(),
            &[("content-type", "text/plain")],
        )
        .await;
    assert_error(&r, 404, "PGRST202");
    // Variadic arguments: an array in JSON, a repeated parameter over GET.
    let r = t
        .call(
            "POST",
            "/rpc/vsum",
            Some(r#"{"nums": [1, 2, 3]}"#),
            anon(),
            &[],
        )
        .await;
    assert_eq!(r.body, json!(6), "{r:?}");
    let r = t.get("/rpc/vsum?nums=1&nums=2&nums=3").await;
    assert_eq!(r.body, json!(6), "{r:?}");
    let r = t.get("/rpc/vsum?nums=5").await;
    assert_eq!(r.body, json!(5), "{r:?}");
}

#[tokio::test]
async fn reads_run_read_committed_and_read_only_whatever_the_database_default() {
    let t = spawn_with(
        "create function isolation() returns text language sql stable
           as $$ select current_setting('transaction_isolation') || ' ' || current_setting('transaction_read_only') $$;
         create function isolation_rw() returns text language sql volatile
           as $$ select current_setting('transaction_isolation') || ' ' || current_setting('transaction_read_only') $$;",
        &[],
    )
    .await;
    t.exec(&format!(
        "alter database {} set default_transaction_isolation = 'serializable'",
        t.db.name
    ))
    .await;
    // New connections pick the database default up; so would the service's.
    let r = t.get("/rpc/isolation").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, json!("read committed on"));
    // A stable function runs read only over POST as well.
    let r = t
        .call("POST", "/rpc/isolation", Some("{}"), service(), &[])
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, json!("read committed on"));
    let r = t
        .call("POST", "/rpc/isolation_rw", Some("{}"), service(), &[])
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, json!("read committed off"));
}
