//! In-database settings, role settings, envelope, health and timeouts.

use serde_json::{Value, json};

use crate::support::*;

async fn set_db_config(t: &TestRest, setting: &str, value: &str) {
    let name = t.db.name.clone();
    t.exec(&format!("alter role authenticator in database {name} set pgrst.{setting} = '{value}'; notify pgrst, 'reload config';")).await;
}

#[tokio::test]
async fn exposed_schemas_can_come_from_the_database() {
    let t = spawn_with(
        "create schema personal;
         create table personal.diary (id int primary key, entry text);
         insert into personal.diary values (1, 'dear diary');
         grant usage on schema personal to anon;
         grant select on personal.diary to anon;",
        &[],
    )
    .await;
    let profile = [("accept-profile", "personal")];
    let r = t.get_with("/diary", &profile).await;
    assert_error(&r, 406, "PGRST106");
    set_db_config(&t, "db_schemas", "public, personal").await;
    let mut r = t.get_with("/diary", &profile).await;
    for _ in 0..40 {
        if r.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        r = t.get_with("/diary", &profile).await;
    }
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, json!([{"id": 1, "entry": "dear diary"}]));
    assert_eq!(r.header("content-profile"), Some("personal"));
    // The first one stays the default; others are still refused.
    assert_eq!(t.get("/clients?select=id&id=eq.1").await.status, 200);
    let r = t.get_with("/diary", &[("accept-profile", "secret")]).await;
    assert_error(&r, 406, "PGRST106");
    assert_eq!(
        r.body["hint"],
        "Only the following schemas are exposed: public, personal"
    );
}

#[tokio::test]
async fn aggregates_need_the_in_database_setting() {
    let t = spawn().await;
    let r = t.get("/items?select=price.sum()").await;
    assert_error(&r, 400, "PGRST123");
    assert_eq!(
        r.body["message"],
        "Use of aggregate functions is not allowed"
    );
    set_db_config(&t, "db_aggregates_enabled", "true").await;
    let mut body = json!(null);
    for _ in 0..40 {
        let r = t.get("/items?select=total:price.sum(),count()").await;
        if r.status == 200 {
            body = r.body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(body, json!([{"total": 4.75, "count": 4}]));
    let r = t.get("/items?select=active,n:count(),m:price.max()").await;
    assert_eq!(r.body, json!([{"active": true, "n": 4, "m": 3}]));
    // Aggregates inside an embed, and grouped by an embed.
    let r = t
        .get("/clients?select=name,projects(count())&order=id")
        .await;
    assert_eq!(
        r.body,
        json!([{"name": "Microsoft", "projects": [{"count": 2}]}, {"name": "Apple", "projects": [{"count": 2}]}]),
        "{r:?}"
    );
    let r = t
        .get("/projects?select=clients(name),n:count()&client_id=not.is.null")
        .await;
    let mut rows = r.body.as_array().cloned().unwrap_or_default();
    rows.sort_by_key(|v| v["clients"]["name"].as_str().map(str::to_owned));
    assert_eq!(
        rows,
        vec![
            json!({"clients": {"name": "Apple"}, "n": 2}),
            json!({"clients": {"name": "Microsoft"}, "n": 2})
        ],
        "{r:?}"
    );
    let r = t.get("/items?select=price.sum(),nope.avg()").await;
    assert_error(&r, 400, "42703");
}

#[tokio::test]
async fn explain_plans_need_the_in_database_setting() {
    let t = spawn().await;
    let plan = [("accept", "application/vnd.pgrst.plan+text")];
    let r = t.get_with("/items", &plan).await;
    assert_error(&r, 406, "PGRST107");
    set_db_config(&t, "db_plan_enabled", "true").await;
    let mut text = String::new();
    for _ in 0..40 {
        let r = t.get_with("/items?id=eq.1", &plan).await;
        if r.status == 200 {
            text = r.text;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(text.starts_with("Aggregate  (cost="), "{text}");
    let r = t
        .get_with(
            "/items",
            &[("accept", "application/vnd.pgrst.plan+json; for=\"application/json\"; options=analyze|verbose")],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body[0]["Plan"]["Actual Rows"].is_number(), "{r:?}");
    // Explaining a write (with analyze) never keeps its effect.
    let r = t
        .call(
            "DELETE",
            "/items",
            None,
            service(),
            &[("accept", "application/vnd.pgrst.plan+text; options=analyze")],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text.contains("Delete on items"), "{}", r.text);
    assert_eq!(
        t.sql("select count(*) as n from items").await,
        json!([{"n": 4}])
    );
}

#[tokio::test]
async fn embedded_tables_go_by_name_and_depth_unless_an_enclosing_one_does() {
    let t = spawn_with(
        "create table towns (id int primary key, name text);
         create table towns_1 (id int primary key, town_id int references towns, label text);
         insert into towns values (1, 'a'), (2, 'b');
         insert into towns_1 values (10, 2, 'x'), (11, 1, 'y');
         grant select on towns, towns_1 to anon;",
        &[],
    )
    .await;
    // The embed of towns below towns_1 cannot be called towns_1: the
    // correlation must still reach the enclosing row.
    let r = t.get("/towns_1?select=id,towns(name)&order=id").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        json!([{"id": 10, "towns": {"name": "b"}}, {"id": 11, "towns": {"name": "a"}}])
    );
    let r = t.get("/towns?select=name,towns_1(label)&order=id").await;
    assert_eq!(
        r.body,
        json!([{"name": "a", "towns_1": [{"label": "y"}]}, {"name": "b", "towns_1": [{"label": "x"}]}])
    );
    // Plans show the names PostgREST gives.
    set_db_config(&t, "db_plan_enabled", "true").await;
    let verbose = [("accept", "application/vnd.pgrst.plan+text; options=verbose")];
    let mut text = String::new();
    for _ in 0..40 {
        let r = t
            .get_with("/towns?select=name,towns_1(label)", &verbose)
            .await;
        if r.status == 200 {
            text = r.text;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(text.contains("public.towns_1 towns_1_1"), "{text}");
    let r = t.get_with("/towns_1?select=id,towns(name)", &verbose).await;
    assert!(!r.text.contains("public.towns towns_1"), "{}", r.text);
}

#[tokio::test]
async fn geojson_needs_postgis_and_renders_feature_collections() {
    // Without PostGIS the media type is not on offer.
    let t = spawn().await;
    let r = t
        .get_with("/clients", &[("accept", "application/geo+json")])
        .await;
    assert_error(&r, 406, "PGRST107");

    let t = spawn_with(
        "create extension postgis schema extensions;
         create table places (id int primary key, name text, geom extensions.geometry(Point, 4326));
         insert into places values (1, 'harbour', 'SRID=4326;POINT(1.5 2)'),
                                   (2, 'hill', 'SRID=4326;POINT(-3 4.25)'),
                                   (3, 'nowhere', null);
         grant select on places to anon;",
        &[],
    )
    .await;
    let r = t
        .get_with(
            "/places?select=id,name,geom&id=lt.3&order=id",
            &[("accept", "application/geo+json")],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/geo+json; charset=utf-8")
    );
    let body: Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(
        body,
        json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1.5, 2]},
             "properties": {"id": 1, "name": "harbour"}},
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [-3, 4.25]},
             "properties": {"id": 2, "name": "hill"}},
        ]})
    );
    // No rows: an empty collection.
    let r = t
        .get_with("/places?id=eq.99", &[("accept", "application/geo+json")])
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let body: Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(body, json!({"type": "FeatureCollection", "features": []}));
}

#[tokio::test]
async fn envelope_paths_methods_and_options() {
    let t = spawn().await;
    let r = t.get("/a/b").await;
    assert_error(&r, 404, "PGRST125");
    let r = t.call("TRACE", "/clients", None, anon(), &[]).await;
    assert_error(&r, 405, "PGRST117");
    let r = t.call("OPTIONS", "/clients", None, anon(), &[]).await;
    assert_eq!(r.status, 200);
    let r = t.get("/clients?select=id&order=id&id=eq.1").await;
    assert_eq!(
        r.header("content-location"),
        Some("/clients?select=id&order=id&id=eq.1")
    );
    assert_eq!(r.header("proxy-status"), None);
    let r = t.get("/clients?select=(").await;
    assert_eq!(r.header("proxy-status"), Some("PostgREST; error=PGRST100"));
}

#[tokio::test]
async fn claims_and_request_settings_reach_sql() {
    let t = spawn_with("create function ctx() returns json language sql stable as $$ select json_build_object('role', current_user, 'claims', current_setting('request.jwt.claims')::json, 'path', current_setting('request.path'), 'hdr', current_setting('request.headers')::json->>'x-thing', 'sp', current_setting('search_path')) $$;", &[("FERROBASE_REST_STATEMENT_TIMEOUT_MS", "5000")]).await;
    let r = t
        .call("GET", "/rpc/ctx", None, anon(), &[("x-thing", "v")])
        .await;
    assert_eq!(r.body["role"], "anon");
    assert_eq!(
        r.body["claims"],
        json!({"role": "anon", "iss": "ferrobase"})
    );
    assert_eq!(r.body["path"], "/rpc/ctx");
    assert_eq!(r.body["hdr"], "v");
    // The schema, then the extra search path as configured (PostgREST repeats it too).
    assert_eq!(r.body["sp"], "\"public\", \"public\", \"extensions\"");
}

#[tokio::test]
async fn role_settings_apply_to_requests() {
    let t = spawn_with(
        "create function slow() returns int language sql as $$ select 1 from pg_sleep(2) $$;
         create function greeting() returns text language sql stable as $$ select current_setting('app.greeting', true) $$;",
        &[],
    )
    .await;
    let name = t.db.name.clone();
    t.exec(&format!("alter role anon in database {name} set statement_timeout = '150ms'; alter role anon in database {name} set app.greeting = 'hello anon'; notify pgrst;")).await;
    let mut body = json!(null);
    for _ in 0..40 {
        let r = t
            .call("POST", "/rpc/greeting", Some("{}"), anon(), &[])
            .await;
        if r.body == json!("hello anon") {
            body = r.body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(body, json!("hello anon"));
    let r = t.call("POST", "/rpc/slow", Some("{}"), anon(), &[]).await;
    assert_error(&r, 500, "57014");
    // Other roles keep their own settings.
    let r = t
        .call("POST", "/rpc/greeting", Some("{}"), service(), &[])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body == json!(null) || r.body == json!(""), "{r:?}");
}

#[tokio::test]
async fn legacy_embedded_count() {
    let t = spawn().await;
    let r = t.get("/clients?select=id,projects(count)&order=id").await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "projects": [{"count": 2}]}, {"id": 2, "projects": [{"count": 2}]}]),
        "{r:?}"
    );
}

#[tokio::test]
async fn statement_timeout_applies() {
    let t = spawn_with(
        "create function slow() returns int language sql as $$ select 1 from pg_sleep(2) $$;",
        &[("FERROBASE_REST_STATEMENT_TIMEOUT_MS", "200")],
    )
    .await;
    let r = t.call("POST", "/rpc/slow", Some("{}"), anon(), &[]).await;
    assert_error(&r, 500, "57014");
}

#[tokio::test]
async fn serves_grpc_health_and_reflection() {
    let t = spawn().await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], t.port));
    assert!(ferrobase_common::health::probe_grpc(addr, "").await);
    assert!(ferrobase_common::health::probe_grpc(addr, "ferrobase.rest.v1.Rest").await);
}
