//! Auth service integration tests against a real PostgreSQL.

mod admin;
mod audit;
mod cleanup;
mod concurrency;
mod email;
mod keys;
mod login;
mod mfa;
mod signup;
mod support;
mod tokens;
mod user;

use serde_json::json;
use support::*;

#[tokio::test]
async fn serves_health_settings_and_keys_with_health_and_reflection() {
    let auth = spawn(&[]).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], auth.port));
    assert!(ferrobase_common::health::probe_grpc(addr, "").await);
    assert!(ferrobase_common::health::probe_grpc(addr, "ferrobase.auth.v1.Auth").await);

    let health = auth.anon("GET", "/health", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["name"], "GoTrue");

    let settings = auth.anon("GET", "/settings", None).await;
    assert_eq!(settings.status, 200);
    assert_eq!(settings.body["external"]["email"], true);
    assert_eq!(settings.body["mailer_autoconfirm"], true);
    assert_eq!(settings.body["disable_signup"], false);

    let jwks = auth.anon("GET", "/.well-known/jwks.json", None).await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.body, json!({"keys": []}));
    assert_eq!(jwks.header("cache-control"), Some("public, max-age=600"));
}

#[tokio::test]
async fn unknown_routes_are_404_in_the_auth_error_shape() {
    let auth = spawn(&[]).await;
    let r = auth.anon("GET", "/no/such/route", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, json!({"code": "not_found", "message": "Not Found"}));
    assert_eq!(r.header("x-sb-error-code"), Some("not_found"));
    assert_eq!(r.header("x-supabase-api-version"), Some("2024-01-01"));
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_for_replicas_starting_together() {
    let db = ferrobase_testkit::postgres().create_empty_database().await;
    let env = env_for(&db);
    let builds = (0..3).map(|_| {
        let config = ferrobase_auth::AuthConfig::from_env(&env).unwrap();
        async move {
            <ferrobase_auth::Application as ferrobase_common::service::Service>::build(config).await
        }
    });
    for built in futures::future::join_all(builds).await {
        built.unwrap();
    }
    let client = db.connect().await;
    let applied: i64 = client
        .query_one("select count(*) from auth.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        applied as usize,
        ferrobase_auth::migrations::MIGRATIONS.len()
    );
    let columns: Vec<String> = client
        .query(
            "select column_name::text from information_schema.columns
             where table_schema = 'auth' and table_name = 'users' order by ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for c in [
        "id",
        "aud",
        "role",
        "email",
        "encrypted_password",
        "raw_app_meta_data",
        "raw_user_meta_data",
        "confirmed_at",
        "is_anonymous",
    ] {
        assert!(columns.iter().any(|x| x == c), "auth.users lacks {c}");
    }
}

#[tokio::test]
async fn unfinished_endpoints_answer_501_naming_them() {
    let auth = spawn(&[]).await;
    for (method, path, named) in [
        ("GET", "/authorize?provider=github", "/authorize"),
        ("GET", "/callback", "/callback"),
    ] {
        let r = auth.anon(method, path, Some(json!({}))).await;
        assert_eq!(r.status, 501, "{path}");
        assert_eq!(r.body["code"], "not_implemented");
        assert!(
            r.body["message"].as_str().unwrap().contains(named),
            "{path}: {:?}",
            r.body
        );
    }
    // No OpenID Connect provider is configured: id_token sign-ins say so.
    let r = auth
        .anon(
            "POST",
            "/token?grant_type=id_token",
            Some(json!({"provider": "google", "id_token": "x", "nonce": "n"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "provider_disabled");
    assert_eq!(
        r.body["message"],
        "Provider (issuer \"https://accounts.google.com\") is not enabled"
    );
    let r = auth
        .anon("POST", "/sso", Some(json!({"domain": "x.com"})))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["code"], "saml_provider_disabled");
    let session = auth.sign_up("links@example.com", "password-1").await;
    let at = session["access_token"].as_str().unwrap();
    let r = auth
        .user(
            "GET",
            "/user/identities/authorize?provider=github&skip_http_redirect=true",
            None,
            at,
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["code"], "manual_linking_disabled");
    let r = auth.anon("GET", "/user/identities/authorize", None).await;
    assert_eq!(r.status, 401);
    let r = auth.anon("DELETE", "/signup", None).await;
    assert_eq!(r.status, 405);
}
