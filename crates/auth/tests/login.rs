//! `POST /token?grant_type=password`.

use serde_json::json;

use crate::support::*;

async fn login(auth: &TestAuth, body: serde_json::Value) -> Reply {
    auth.anon("POST", "/token?grant_type=password", Some(body))
        .await
}

#[tokio::test]
async fn signs_in_with_the_right_password_only() {
    let auth = spawn(&[]).await;
    auth.sign_up("login@example.com", "password-1").await;
    let session = auth.sign_in("LOGIN@example.com", "password-1").await;
    assert!(session["access_token"].is_string());
    assert!(session["refresh_token"].is_string());
    assert!(session.get("weak_password").is_none());
    assert_eq!(
        claims_of(&s(&session, "access_token"))["amr"][0]["method"],
        "password"
    );

    for body in [
        json!({"email": "login@example.com", "password": "wrong-password"}),
        json!({"email": "nobody@example.com", "password": "password-1"}),
        json!({"email": "login@example.com", "password": ""}),
        json!({"email": "login@example.com"}),
        json!({"email": "login@example.com' or '1'='1", "password": "x' or '1'='1"}),
        json!({"email": "a".repeat(10_000), "password": "password-1"}),
        json!({"email": "login@example.com", "password": "p".repeat(100)}),
    ] {
        let r = login(&auth, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_eq!(r.body["code"], "invalid_credentials");
        assert_eq!(r.body["message"], "Invalid login credentials");
    }
    // Unknown and wrong-password answers are identical (no enumeration).
    let a = login(
        &auth,
        json!({"email": "login@example.com", "password": "nope-nope"}),
    )
    .await;
    let b = login(
        &auth,
        json!({"email": "ghost@example.com", "password": "nope-nope"}),
    )
    .await;
    assert_eq!(a.body, b.body);
    assert_eq!(a.status, b.status);
}

#[tokio::test]
async fn error_format_follows_the_api_version_header() {
    let auth = spawn(&[]).await;
    let r = auth
        .call(
            "POST",
            "/token?grant_type=password",
            Some(json!({"email": "x@example.com", "password": "password-1"})),
            anon_ctx(),
            &[("x-supabase-api-version", "")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], 400);
    assert_eq!(r.body["error_code"], "invalid_credentials");
    assert_eq!(r.body["msg"], "Invalid login credentials");
    assert_eq!(r.header("x-sb-error-code"), Some("invalid_credentials"));
}

#[tokio::test]
async fn weak_passwords_are_flagged_on_sign_in_and_banned_users_refused() {
    let auth = spawn(&[]).await;
    auth.sign_up("weak@example.com", "password-1").await;
    let strict = spawn_on_same_db_strict(&auth).await;
    let session = strict.sign_in("weak@example.com", "password-1").await;
    assert_eq!(session["weak_password"]["reasons"], json!(["length"]));

    let id = {
        let db = auth.db.connect().await;
        db.execute(
            "update auth.users set banned_until = now() + interval '1 hour'",
            &[],
        )
        .await
        .unwrap();
        db.query_one("select id from auth.users", &[])
            .await
            .unwrap()
            .get::<_, uuid::Uuid>(0)
    };
    let r = login(
        &auth,
        json!({"email": "weak@example.com", "password": "password-1"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "user_banned");
    let _ = id;
}

async fn spawn_on_same_db_strict(auth: &TestAuth) -> TestAuth {
    // A second service on the same database with a stricter policy.
    let db = ferrobase_testkit::postgres().create_database().await;
    let env = env_for(&db)
        .with("FERROBASE_DB_URL", auth.db.url.as_str())
        .with("FERROBASE_PASSWORD_MIN_LENGTH", "12");
    spawn_on(db, env).await
}

#[tokio::test]
async fn phone_sign_in_works_for_users_created_with_a_phone() {
    let auth = spawn(&[]).await;
    let r = auth
        .admin(
            "POST",
            "/admin/users",
            Some(json!({"phone": "+1 555 0100", "password": "phone-pass", "phone_confirm": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["phone"], "15550100");
    let r = login(
        &auth,
        json!({"phone": "+15550100", "password": "phone-pass"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(claims_of(&s(&r.body, "access_token"))["phone"], "15550100");
    let r = login(
        &auth,
        json!({"phone": "+15550100", "email": "a@b.com", "password": "phone-pass"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "validation_failed");
}
