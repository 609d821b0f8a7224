//! Reads: select grammar, filters, ordering, ranges, counts, media types, embedding, RLS and the schema cache.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn selects_columns_renames_casts_and_json_paths() {
    let t = spawn().await;
    let r = t.get("/clients?select=id,name&order=id").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!([{"id": 1, "name": "Microsoft"}, {"id": 2, "name": "Apple"}])
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("content-range"), Some("0-1/*"));

    let r = t.get("/clients?select=n:name,id::text&id=eq.1").await;
    assert_eq!(r.body, json!([{"n": "Microsoft", "id": "1"}]));

    let r = t
        .get("/items?select=name,color:data->>color,data->size,data->nested->>k&id=eq.1")
        .await;
    assert_eq!(
        r.body,
        json!([{"name": "apple", "color": "red", "size": 3, "k": "v"}])
    );

    let r = t.get("/items?select=id,id,name&id=eq.2").await;
    assert_eq!(r.body, json!([{"id": 2, "name": "banana"}]));

    // Types render as PostgreSQL renders them.
    let r = t
        .get("/items?select=price,tags,created,active&id=eq.1")
        .await;
    assert_eq!(
        r.body,
        json!([{"price": 1.50, "tags": ["fruit", "red"], "created": "2024-01-01", "active": true}])
    );
    assert_eq!(
        r.text,
        r#"[{"price":1.50,"tags":["fruit","red"],"created":"2024-01-01","active":true}]"#
    );

    let r = t.get("/items?select=missing").await;
    assert_error(&r, 400, "42703");
    assert_eq!(r.body["message"], "column items.missing does not exist");

    let r = t.get("/nope").await;
    assert_error(&r, 404, "PGRST205");
    assert_eq!(
        r.body["message"],
        "Could not find the table 'public.nope' in the schema cache"
    );
    assert_eq!(r.body["hint"], serde_json::Value::Null);
    let r = t.get("/client").await;
    assert_eq!(
        r.body["hint"],
        "Perhaps you meant the table 'public.clients'"
    );
}

#[tokio::test]
async fn filters_cover_every_operator() {
    let t = spawn().await;
    let ids = |r: &Reply| -> Vec<i64> {
        r.body
            .as_array()
            .unwrap_or_else(|| panic!("{r:?}"))
            .iter()
            .map(|o| o["id"].as_i64().unwrap())
            .collect()
    };
    let cases: &[(&str, &[i64])] = &[
        ("id=eq.2", &[2]),
        ("id=neq.2", &[1, 3, 4]),
        ("id=gt.2", &[3, 4]),
        ("id=gte.2", &[2, 3, 4]),
        ("id=lt.2", &[1]),
        ("id=lte.2", &[1, 2]),
        ("name=like.*an*", &[2]),
        ("name=ilike.A*", &[1]),
        ("name=match.^[ab]", &[1, 2]),
        ("name=imatch.^[AB]", &[1, 2]),
        ("id=in.(1,3)", &[1, 3]),
        ("id=not.in.(1,3)", &[2, 4]),
        ("id=in.()", &[]),
        ("price=is.null", &[3]),
        ("price=not.is.null", &[1, 2, 4]),
        ("price=is.not_null", &[1, 2, 4]),
        ("active=is.true", &[1, 2, 3, 4]),
        ("price=isdistinct.3", &[1, 2, 3]),
        ("tags=cs.{fruit}", &[1, 2]),
        ("tags=cd.{fruit,red,x}", &[1, 2, 4]),
        ("tags=ov.{red,vegetable}", &[1, 3]),
        ("data->>color=eq.red", &[1]),
        ("data->size=gt.4", &[2, 3]),
        ("data=cs.{\"color\":\"yellow\"}", &[2]),
        ("name=like(any).{a*,c*}", &[1, 3]),
        ("name=like(all).{*a*,*n*}", &[2]),
        ("id=eq(any).{1,4}", &[1, 4]),
        ("or=(id.eq.1,name.eq.date)", &[1, 4]),
        ("or=(id.eq.1,and(id.gt.2,price.is.null))", &[1, 3]),
        ("not.or=(id.eq.1,id.eq.2)", &[3, 4]),
        ("and=(id.gt.1,or(price.lt.1,price.gt.2))", &[2, 4]),
        ("or=(name.in.(apple,\"banana\"),id.eq.4)", &[1, 2, 4]),
        ("id=gt.1&id=lt.4", &[2, 3]),
        ("name=not.eq.apple&price=not.is.null", &[2, 4]),
    ];
    for (q, want) in cases {
        let r = t.get(&format!("/items?select=id&order=id&{q}")).await;
        assert_eq!(r.status, 200, "{q}: {r:?}");
        assert_eq!(ids(&r), *want, "{q}");
    }
    let r = t.get("/docs?select=id&tsv=fts(english).fat").await;
    assert_eq!(r.body, json!([{"id": 1}]));
    let r = t.get("/docs?select=id&body=plfts.lean+cat").await;
    assert_eq!(r.body, json!([{"id": 2}]));
    let r = t
        .get("/docs?select=id&body=wfts(english).%22fat+rat%22")
        .await;
    assert_eq!(r.body, json!([{"id": 1}]));
    let r = t.get("/docs?select=id&body=phfts.lean+cat").await;
    assert_eq!(r.body, json!([{"id": 2}]));
}

#[tokio::test]
async fn order_limit_offset_range_and_counts() {
    let t = spawn().await;
    let r = t
        .get("/items?select=id,price&order=price.desc.nullslast,id")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 4, "price": 3}, {"id": 1, "price": 1.50}, {"id": 2, "price": 0.25}, {"id": 3, "price": null}])
    );
    let r = t.get("/items?select=id&order=price.asc.nullsfirst").await;
    assert_eq!(r.body[0], json!({"id": 3}));
    let r = t
        .get("/items?select=id&order=data->>color.desc.nullslast")
        .await;
    assert_eq!(r.body[0], json!({"id": 2}));

    let r = t.get("/items?select=id&order=id&limit=2&offset=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!([{"id": 2}, {"id": 3}]));
    assert_eq!(r.header("content-range"), Some("1-2/*"));

    let r = t
        .get_with(
            "/items?select=id&order=id&limit=2",
            &[("prefer", "count=exact")],
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("0-1/4"));
    assert_eq!(r.header("preference-applied"), Some("count=exact"));

    let r = t
        .get_with("/items?select=id&order=id", &[("prefer", "count=exact")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-range"), Some("0-3/4"));

    let r = t
        .get_with("/items?select=id&order=id", &[("range", "1-2")])
        .await;
    assert_eq!(r.body, json!([{"id": 2}, {"id": 3}]));
    assert_eq!(r.header("content-range"), Some("1-2/*"));

    let r = t
        .get_with("/items?select=id&offset=10", &[("prefer", "count=exact")])
        .await;
    assert_error(&r, 416, "PGRST103");
    assert_eq!(
        r.body["details"],
        "An offset of 10 was requested, but there are only 4 rows."
    );

    let r = t
        .get_with("/items?limit=0", &[("prefer", "count=exact")])
        .await;
    assert_eq!(r.header("content-range"), Some("*/4"));
    assert_eq!(r.body, json!([]));

    let r = t.get("/items?limit=-1").await;
    assert_error(&r, 416, "PGRST103");
    let r = t.get("/items?limit=abc").await;
    assert_error(&r, 400, "PGRST100");

    let r = t
        .get_with("/items?select=id", &[("prefer", "count=planned")])
        .await;
    let planned = r
        .header("content-range")
        .and_then(|c| c.strip_prefix("0-3/"))
        .and_then(|n| n.parse::<i64>().ok());
    assert!(planned.is_some_and(|n| n > 0), "{r:?}");
    let r = t
        .get_with(
            "/items?select=id&id=eq.99",
            &[("prefer", "count=estimated")],
        )
        .await;
    assert_eq!(r.header("content-range"), Some("*/0"));

    let r = t
        .call(
            "HEAD",
            "/items?select=id",
            None,
            anon(),
            &[("prefer", "count=exact")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text.is_empty());
    assert_eq!(r.header("content-range"), Some("0-3/4"));
}

#[tokio::test]
async fn max_rows_caps_rows_not_counts() {
    let t = spawn_with("", &[("FERROBASE_REST_MAX_ROWS", "2")]).await;
    let r = t
        .get_with("/items?select=id&order=id", &[("prefer", "count=exact")])
        .await;
    assert_eq!(r.body, json!([{"id": 1}, {"id": 2}]));
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("0-1/4"));
}

#[tokio::test]
async fn singular_objects_and_stripped_nulls() {
    let t = spawn().await;
    let obj = [("accept", "application/vnd.pgrst.object+json")];
    let r = t.get_with("/clients?id=eq.1", &obj).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"id": 1, "name": "Microsoft"}));
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.pgrst.object+json; charset=utf-8")
    );
    let r = t.get_with("/clients", &obj).await;
    assert_error(&r, 406, "PGRST116");
    assert_eq!(r.body["details"], "The result contains 2 rows");
    assert_eq!(
        r.body["message"],
        "Cannot coerce the result to a single JSON object"
    );
    let r = t.get_with("/clients?id=eq.9", &obj).await;
    assert_eq!(r.body["details"], "The result contains 0 rows");

    let r = t
        .get_with(
            "/items?select=id,price&id=eq.3",
            &[("accept", "application/vnd.pgrst.array+json;nulls=stripped")],
        )
        .await;
    assert_eq!(r.body, json!([{"id": 3}]));
    let r = t
        .get_with(
            "/items?select=id,price&id=eq.3",
            &[("accept", "application/vnd.pgrst.object+json;nulls=stripped")],
        )
        .await;
    assert_eq!(r.body, json!({"id": 3}));

    let r = t.get_with("/clients", &[("accept", "image/png")]).await;
    assert_error(&r, 406, "PGRST107");
}

#[tokio::test]
async fn embeds_many_to_one_one_to_many_and_many_to_many() {
    let t = spawn().await;
    let r = t
        .get("/projects?select=id,client:clients(name)&order=id&id=in.(1,5)")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "client": {"name": "Microsoft"}}, {"id": 5, "client": null}])
    );

    let r = t
        .get("/clients?select=name,projects(id,name)&order=id&projects.order=id.desc")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        json!([
            {"name": "Microsoft", "projects": [{"id": 2, "name": "Windows 10"}, {"id": 1, "name": "Windows 7"}]},
            {"name": "Apple", "projects": [{"id": 4, "name": "OSX"}, {"id": 3, "name": "IOS"}]},
        ])
    );

    let r = t.get("/clients?select=id,projects(id,tasks(id))&id=eq.1&projects.id=eq.1&projects.tasks.limit=1&projects.tasks.order=id").await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "projects": [{"id": 1, "tasks": [{"id": 1}]}]}])
    );

    let r = t
        .get("/users?select=name,tasks(id)&id=eq.1&tasks.order=id")
        .await;
    assert_eq!(
        r.body,
        json!([{"name": "Angela Martin", "tasks": [{"id": 1}, {"id": 2}, {"id": 3}]}])
    );

    // One-to-one both ways.
    let r = t
        .get("/users?select=id,profiles(bio)&order=id&limit=2")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "profiles": {"bio": "accountant"}}, {"id": 2, "profiles": null}])
    );
    let r = t.get("/profiles?select=bio,users(name)").await;
    assert_eq!(
        r.body,
        json!([{"bio": "accountant", "users": {"name": "Angela Martin"}}])
    );

    // Embedding through the FK column name keeps that key.
    let r = t.get("/projects?select=id,client_id(name)&id=eq.3").await;
    assert_eq!(r.body, json!([{"id": 3, "client_id": {"name": "Apple"}}]));

    // Empty embed filters only; is.null is an anti-join.
    let r = t.get("/projects?select=id,clients()&clients=is.null").await;
    assert_eq!(r.body, json!([{"id": 5}]), "{r:?}");
    let r = t
        .get("/clients?select=id,projects()&projects.name=eq.IOS&projects=not.is.null")
        .await;
    assert_eq!(r.body, json!([{"id": 2}]));

    // Inner joins drop parents without matching children.
    let r = t
        .get("/clients?select=id,projects!inner(name)&projects.name=eq.OSX")
        .await;
    assert_eq!(r.body, json!([{"id": 2, "projects": [{"name": "OSX"}]}]));
    let r = t
        .get("/projects?select=id,clients!inner(id)&order=id")
        .await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(4));
    let r = t
        .get("/clients?select=id,projects!left(name)&projects.name=eq.OSX&order=id")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "projects": []}, {"id": 2, "projects": [{"name": "OSX"}]}])
    );

    // Spread lifts to-one columns.
    let r = t
        .get("/projects?select=id,...clients(client_name:name)&id=eq.1")
        .await;
    assert_eq!(r.body, json!([{"id": 1, "client_name": "Microsoft"}]));

    // Ordering by a to-one embed.
    let r = t
        .get("/projects?select=id,clients(name)&order=clients(name).desc,id&id=lt.5")
        .await;
    assert_eq!(r.body[0]["id"], 1);
    let r = t
        .get("/clients?select=id,projects(name)&order=projects(name)")
        .await;
    assert_error(&r, 400, "PGRST118");

    // Filter on an embed not selected.
    let r = t.get("/clients?select=id&projects.id=eq.1").await;
    assert_error(&r, 400, "PGRST108");
    assert_eq!(
        r.body["message"],
        "'projects' is not an embedded resource in this request"
    );
    let r = t.get("/clients?select=id,projects(id)&projects=eq.1").await;
    assert_error(&r, 400, "PGRST120");
}

#[tokio::test]
async fn self_references_hints_and_ambiguity() {
    let t = spawn().await;
    let r = t
        .get("/collections?select=id,collections(id)&id=eq.1")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "collections": [{"id": 2}, {"id": 3}]}]),
        "{r:?}"
    );
    let r = t
        .get("/collections?select=id,collections!parent_id(id)&id=eq.2")
        .await;
    assert_eq!(r.body, json!([{"id": 2, "collections": [{"id": 4}]}]));
    let r = t
        .get("/collections?select=id,collections!collections_parent_id_fkey(id)")
        .await;
    assert_error(&r, 400, "PGRST200");

    let r = t.get("/messages?select=id,people(name)").await;
    assert_error(&r, 300, "PGRST201");
    assert_eq!(
        r.body["message"],
        "Could not embed because more than one relationship was found for 'messages' and 'people'"
    );
    assert_eq!(
        r.body["details"],
        json!([
            {"cardinality": "many-to-one", "embedding": "messages with people", "relationship": "message_recipient_fkey using messages(recipient) and people(id)"},
            {"cardinality": "many-to-one", "embedding": "messages with people", "relationship": "message_sender_fkey using messages(sender) and people(id)"},
        ])
    );
    assert_eq!(
        r.body["hint"],
        "Try changing 'people' to one of the following: 'people!message_recipient_fkey', 'people!message_sender_fkey'. Find the desired relationship in the 'details' key."
    );

    // The same key twice is PostgreSQL's duplicate alias error, as with PostgREST.
    let r = t
        .get("/messages?select=id,people!sender(name),people!recipient(name)")
        .await;
    assert_error(&r, 400, "42712");
    assert_eq!(
        r.body["message"],
        "table name \"messages_people_1\" specified more than once"
    );
    let r = t
        .get("/messages?select=id,p:people!sender(name),p:people!recipient(name)")
        .await;
    assert_error(&r, 400, "42712");
    let r = t.get("/messages?select=id,from:people!message_sender_fkey(name),to:people!recipient(name)&id=eq.1").await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "from": {"name": "Alice"}, "to": {"name": "Bob"}}])
    );
    let r = t
        .get("/people?select=name,messages!sender(body)&id=eq.1")
        .await;
    assert_eq!(
        r.body,
        json!([{"name": "Alice", "messages": [{"body": "hi bob"}]}])
    );

    let r = t.get("/clients?select=id,project(id)").await;
    assert_error(&r, 400, "PGRST200");
    assert_eq!(
        r.body["hint"],
        "Perhaps you meant 'projects' instead of 'project'."
    );
    let r = t.get("/clients?select=id,tasks(id)").await;
    assert_error(&r, 400, "PGRST200");
    assert_eq!(
        r.body["message"],
        "Could not find a relationship between 'clients' and 'tasks' in the schema cache"
    );
    assert_eq!(
        r.body["details"],
        "Searched for a foreign key relationship between 'clients' and 'tasks' in the schema 'public', but no matches were found."
    );

    // Computed field.
    let r = t.get("/people?select=id,full_name&id=eq.1").await;
    assert_eq!(r.body, json!([{"id": 1, "full_name": "Alice!"}]));
    let r = t.get("/people?select=id&full_name=eq.Bob!").await;
    assert_eq!(r.body, json!([{"id": 2}]));
}

#[tokio::test]
async fn profiles_csv_and_openapi() {
    let t = spawn_with("create schema personal; create table personal.secrets (id int primary key, s text); insert into personal.secrets values (1, 'x'); grant usage on schema personal to anon; grant select on personal.secrets to anon;", &[("FERROBASE_REST_SCHEMAS", "public,personal")]).await;
    let r = t
        .get_with("/secrets", &[("accept-profile", "personal")])
        .await;
    assert_eq!(r.body, json!([{"id": 1, "s": "x"}]), "{r:?}");
    assert_eq!(r.header("content-profile"), Some("personal"));
    let r = t.get_with("/secrets", &[("accept-profile", "nope")]).await;
    assert_error(&r, 406, "PGRST106");
    assert_eq!(r.body["message"], "Invalid schema: nope");
    assert_eq!(
        r.body["hint"],
        "Only the following schemas are exposed: public, personal"
    );
    let r = t.get("/secrets").await;
    assert_error(&r, 404, "PGRST205");

    let r = t
        .get_with(
            "/items?select=id,name,price&order=id&limit=3",
            &[("accept", "text/csv")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(
        r.text,
        "id,name,price\n1,apple,1.50\n2,banana,0.25\n3,carrot,"
    );
    let r = t
        .get_with(
            "/clients?select=id,%22it's,%20quoted%22:name&order=id",
            &[("accept", "text/csv")],
        )
        .await;
    assert_eq!(r.text, "id,\"it's, quoted\"\n1,Microsoft\n2,Apple", "{r:?}");

    let r = t
        .get_with("/", &[("accept", "application/openapi+json")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["swagger"], "2.0");
    assert_eq!(
        r.body["definitions"]["clients"]["properties"]["name"]["format"],
        "text"
    );
    assert!(r.body["paths"]["/rpc/add"]["post"].is_object());
    assert!(r.body["paths"]["/clients"]["get"].is_object());
    // Only what the role may use is described.
    t.exec("revoke all on table docs from anon; revoke execute on function status() from anon, public;").await;
    let r = t
        .get_with("/", &[("accept", "application/openapi+json")])
        .await;
    assert!(r.body["paths"]["/docs"].is_null(), "{r:?}");
    assert!(r.body["paths"]["/rpc/status"].is_null());
    assert!(r.body["paths"]["/items"].is_object());
    let r = t.call("GET", "/", None, service(), &[]).await;
    assert!(r.body["paths"]["/docs"].is_object());
    assert_eq!(
        r.header("content-type"),
        Some("application/openapi+json; charset=utf-8")
    );
}

#[tokio::test]
async fn rls_runs_as_the_callers_role() {
    let t = spawn().await;
    let alice = "00000000-0000-4000-8000-00000000000a";
    let bob = "00000000-0000-4000-8000-00000000000b";
    let r = t
        .call(
            "POST",
            "/notes",
            Some(r#"{"body": "alice's"}"#),
            user(alice),
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body[0]["owner"], alice);
    let r = t
        .call(
            "POST",
            "/notes",
            Some(r#"{"body": "bob's"}"#),
            user(bob),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = t
        .call("GET", "/notes?select=body", None, user(alice), &[])
        .await;
    assert_eq!(r.body, json!([{"body": "alice's"}]));
    let r = t
        .call("GET", "/notes?select=body", None, user(bob), &[])
        .await;
    assert_eq!(r.body, json!([{"body": "bob's"}]));
    // Writing a row for someone else violates the policy: 403 for a user, 401 for anon.
    let r = t
        .call(
            "POST",
            "/notes",
            Some(&format!(r#"{{"body": "forged", "owner": "{alice}"}}"#)),
            user(bob),
            &[],
        )
        .await;
    assert_error(&r, 403, "42501");
    assert_eq!(
        r.body["message"],
        "new row violates row-level security policy for table \"notes\""
    );
    let r = t
        .call("POST", "/notes", Some(r#"{"body": "anon"}"#), anon(), &[])
        .await;
    assert_error(&r, 401, "42501");
    assert!(r.header("www-authenticate").is_some());
    // Bob cannot update or delete Alice's note.
    let r = t
        .call(
            "PATCH",
            "/notes",
            Some(r#"{"body": "hacked"}"#),
            user(bob),
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(r.body, json!([{"id": 2, "owner": bob, "body": "hacked"}]));
    let r = t.call("DELETE", "/notes", None, user(bob), &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        t.sql("select body from notes order by id").await,
        json!([{"body": "alice's"}])
    );
    // The service role bypasses RLS; anon sees nothing.
    let r = t
        .call("GET", "/notes?select=body", None, service(), &[])
        .await;
    assert_eq!(r.body, json!([{"body": "alice's"}]));
    let r = t.call("GET", "/notes?select=body", None, anon(), &[]).await;
    assert_eq!(r.body, json!([]));
    // A role authenticator may not switch to is refused like an unknown one.
    let ctx = ferrobase_common::AuthContext::from_claims(json!({"role": "postgres"}));
    let r = t.call("GET", "/notes", None, ctx, &[]).await;
    assert_error(&r, 401, "22023");
    // Unknown role.
    let ctx = ferrobase_common::AuthContext::from_claims(json!({"role": "nobody"}));
    let r = t.call("GET", "/notes", None, ctx, &[]).await;
    assert_error(&r, 401, "22023");
    // Names are exact: a mixed-case role outside authenticator's reach is
    // refused even when a lower-case namesake would be allowed.
    t.exec(
        "create role \"Boss\" superuser nologin; create role boss nologin; grant boss to authenticator;",
    )
    .await;
    let ctx = ferrobase_common::AuthContext::from_claims(json!({"role": "Boss"}));
    let r = t.call("GET", "/notes", None, ctx, &[]).await;
    assert_error(&r, 401, "22023");
    assert_eq!(
        t.sql("select body from notes order by id").await,
        json!([{"body": "alice's"}])
    );
}

#[tokio::test]
async fn schema_cache_reloads_after_ddl_and_notify() {
    let t = spawn().await;
    let r = t.get("/fresh").await;
    assert_error(&r, 404, "PGRST205");
    t.exec("create table fresh (id int primary key); insert into fresh values (7);")
        .await;
    let mut last = None;
    for _ in 0..50 {
        let r = t.get("/fresh").await;
        if r.status == 200 {
            last = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last.map(|r| r.body), Some(json!([{"id": 7}])));
    // A column added later appears after an explicit NOTIFY too.
    t.exec("alter table fresh add column label text default 'x'; notify pgrst, 'reload schema';")
        .await;
    let mut ok = false;
    for _ in 0..50 {
        let r = t.get("/fresh?select=label").await;
        if r.status == 200 {
            assert_eq!(r.body, json!([{"label": "x"}]));
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok);
}

#[tokio::test]
async fn views_computed_relationships_and_spreads() {
    let t = spawn_with(
        "create view projects_view as select id, name, client_id from projects where id < 5;
         create view renamed_projects as select p.id as pid, p.name as title, p.client_id as owner from projects p;
         create view clients_view as select id, name from clients;
         create function parent_collection(collections) returns setof collections rows 1 language sql stable as $$ select * from collections where id = $1.parent_id $$;
         create function child_tasks(projects) returns setof tasks language sql stable as $$ select * from tasks where project_id = $1.id $$;",
        &[],
    )
    .await;
    // Views inherit foreign keys in both directions, and chains of views.
    let r = t
        .get("/projects_view?select=id,clients(name)&id=eq.3")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 3, "clients": {"name": "Apple"}}]),
        "{r:?}"
    );
    let r = t
        .get("/clients?select=id,projects_view(id)&id=eq.1&projects_view.order=id")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "projects_view": [{"id": 1}, {"id": 2}]}]),
        "{r:?}"
    );
    let r = t
        .get("/projects_view?select=id,clients_view(name)&id=eq.1")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "clients_view": {"name": "Microsoft"}}]),
        "{r:?}"
    );
    let r = t
        .get("/projects_view?select=id,tasks(id)&id=eq.1&tasks.order=id")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "tasks": [{"id": 1}, {"id": 2}]}]),
        "{r:?}"
    );

    // Renamed columns keep their relationships.
    let r = t
        .get("/renamed_projects?select=pid,clients(name)&pid=eq.3")
        .await;
    assert_eq!(
        r.body,
        json!([{"pid": 3, "clients": {"name": "Apple"}}]),
        "{r:?}"
    );
    let r = t
        .get("/clients?select=id,renamed_projects(title)&id=eq.1&renamed_projects.order=pid")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "renamed_projects": [{"title": "Windows 7"}, {"title": "Windows 10"}]}]),
        "{r:?}"
    );
    let r = t
        .write(
            "POST",
            "/renamed_projects",
            r#"{"pid": 30, "title": "T", "owner": 1}"#,
            &[("prefer", "return=headers-only")],
        )
        .await;
    assert_eq!(
        r.header("location"),
        Some("/renamed_projects?pid=eq.30"),
        "{r:?}"
    );
    // Computed relationships: to-many, and to-one when declared `rows 1`.
    let r = t
        .get("/projects?select=id,child_tasks(name)&id=eq.2&child_tasks.order=id")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 2, "child_tasks": [{"name": "Design w10"}, {"name": "Code w10"}]}]),
        "{r:?}"
    );
    let r = t
        .get("/collections?select=id,parent:parent_collection(name)&id=eq.4")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 4, "parent": {"name": "child a"}}]),
        "{r:?}"
    );

    // Spread of a to-many embed turns each column into an array.
    let r = t
        .get("/clients?select=id,...projects(project_names:name)&id=eq.2&projects.order=id")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 2, "project_names": ["IOS", "OSX"]}]),
        "{r:?}"
    );

    // Many-to-many with the junction as hint.
    let r = t
        .get("/tasks?select=id,users!users_tasks(name)&id=eq.1&users.order=id")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "users": [{"name": "Angela Martin"}, {"name": "Dwight Schrute"}]}]),
        "{r:?}"
    );

    // Embeds in write responses.
    let r = t
        .write(
            "POST",
            "/tasks?select=name,projects(name,clients(name))",
            r#"{"id": 20, "name": "New", "project_id": 3}"#,
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(
        r.body,
        json!([{"name": "New", "projects": {"name": "IOS", "clients": {"name": "Apple"}}}]),
        "{r:?}"
    );
}

#[tokio::test]
async fn embedded_logic_pagination_timezones_and_token_errors() {
    let t = spawn_with(
        "create table events (id int primary key, at timestamptz, span int4range, days date[]);
         insert into events values (1, '2024-01-01 00:00:00+00', '[20,30)', '{2024-01-01,2024-02-01}');",
        &[],
    )
    .await;
    let r = t
        .get("/clients?select=id,projects(id)&id=eq.1&projects.or=(id.eq.2,name.eq.nothing)")
        .await;
    assert_eq!(r.body, json!([{"id": 1, "projects": [{"id": 2}]}]), "{r:?}");
    let r = t.get("/clients?select=id,projects(id)&id=eq.2&projects.order=id&projects.offset=1&projects.limit=5").await;
    assert_eq!(r.body, json!([{"id": 2, "projects": [{"id": 4}]}]), "{r:?}");
    let r = t
        .get("/projects?select=id&not.and=(id.gt.1,id.lt.5)&order=id")
        .await;
    assert_eq!(r.body, json!([{"id": 1}, {"id": 5}]), "{r:?}");

    // Types render as PostgreSQL's JSON renders them, in the requested time zone.
    let r = t.get("/events").await;
    assert_eq!(
        r.text,
        r#"[{"id":1,"at":"2024-01-01T00:00:00+00:00","span":"[20,30)","days":["2024-01-01","2024-02-01"]}]"#
    );
    let r = t
        .get_with(
            "/events?select=at",
            &[("prefer", "timezone=America/Los_Angeles")],
        )
        .await;
    assert_eq!(
        r.body,
        json!([{"at": "2023-12-31T16:00:00-08:00"}]),
        "{r:?}"
    );
    assert_eq!(
        r.header("preference-applied"),
        Some("timezone=America/Los_Angeles")
    );
    let r = t
        .get("/events?select=id&span=cs.[25,26)&at=gte.2023-12-31T00:00:00Z")
        .await;
    assert_eq!(r.body, json!([{"id": 1}]), "{r:?}");
    let r = t.get("/events?select=id&span=sl.[40,50)").await;
    assert_eq!(r.body, json!([{"id": 1}]), "{r:?}");
    let r = t.get("/events?select=id&span=adj.[30,40)").await;
    assert_eq!(r.body, json!([{"id": 1}]), "{r:?}");

    // A call carrying a failed token is refused even if it got past the gateway.
    let mut ctx = anon();
    ctx.token_error = Some("JWT expired".into());
    let r = t.call("GET", "/events", None, ctx, &[]).await;
    assert_error(&r, 401, "PGRST301");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\", error_description=\"JWT expired\"")
    );
}

#[tokio::test]
async fn counts_follow_embed_filters_and_estimates() {
    let t = spawn_with("", &[("FERROBASE_REST_MAX_ROWS", "2")]).await;
    let exact = [("prefer", "count=exact")];
    let r = t
        .get_with(
            "/clients?select=id,projects!inner(name)&projects.name=eq.OSX",
            &exact,
        )
        .await;
    assert_eq!(r.header("content-range"), Some("0-0/1"), "{r:?}");
    let r = t
        .get_with("/projects?select=id,clients()&clients=is.null", &exact)
        .await;
    assert_eq!(r.header("content-range"), Some("0-0/1"), "{r:?}");
    // Embeds that do not filter do not change the count.
    let r = t
        .get_with(
            "/clients?select=id,projects(name)&projects.name=eq.OSX",
            &exact,
        )
        .await;
    assert_eq!(r.header("content-range"), Some("0-1/2"), "{r:?}");
    // Estimated: exact up to max rows, the planner's estimate above.
    let r = t
        .get_with("/clients?select=id", &[("prefer", "count=estimated")])
        .await;
    assert_eq!(r.header("content-range"), Some("0-1/2"), "{r:?}");
    let r = t
        .get_with("/projects?select=id", &[("prefer", "count=estimated")])
        .await;
    let total = r
        .header("content-range")
        .and_then(|c| c.strip_prefix("0-1/"))
        .and_then(|n| n.parse::<i64>().ok());
    assert!(total.is_some_and(|n| n > 0), "{r:?}");
    assert_eq!(r.status, 206);
}
