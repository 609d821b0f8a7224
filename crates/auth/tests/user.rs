//! `GET/PUT /user`, `POST /logout` and the checks of user routes.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn user_routes_refuse_missing_forged_expired_and_stale_tokens() {
    let auth = spawn(&[]).await;
    // No bearer at all.
    let r = auth.anon("GET", "/user", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["code"], "no_authorization");
    assert!(r.body["message"].as_str().unwrap().contains("Bearer token"));
    // A forged token: signed with another secret.
    let forged = ferrobase_common::jwt::sign_hs256(
        b"some-other-secret-that-is-32-chars-long!!",
        &json!({"sub": uuid::Uuid::new_v4(), "role": "authenticated", "exp": 9_999_999_999u64}),
    )
    .unwrap();
    let r = auth.user("GET", "/user", None, &forged).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "bad_jwt");
    // Expired.
    let expired = ferrobase_testkit::user_token(&uuid::Uuid::new_v4().to_string(), -3600);
    let r = auth.user("GET", "/user", None, &expired).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "bad_jwt");
    // Valid, but the user does not exist.
    let ghost = ferrobase_testkit::user_token(&uuid::Uuid::new_v4().to_string(), 3600);
    let r = auth.user("GET", "/user", None, &ghost).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "user_not_found");
    // The anon key as bearer: no subject.
    let anon_key = ferrobase_testkit::api_key("anon");
    let r = auth.user("GET", "/user", None, &anon_key).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "bad_jwt");
    // A non-UUID subject.
    let odd = ferrobase_testkit::user_token("'; drop table auth.users; --", 3600);
    let r = auth.user("GET", "/user", None, &odd).await;
    assert_eq!(r.status, 403);
    // A deleted session.
    let session = auth.sign_up("stale@example.com", "password-1").await;
    let at = s(&session, "access_token");
    let db = auth.db.connect().await;
    db.execute("delete from auth.sessions", &[]).await.unwrap();
    let r = auth.user("GET", "/user", None, &at).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "session_not_found");
}

#[tokio::test]
async fn get_user_returns_the_user_of_the_token() {
    let auth = spawn(&[]).await;
    let session = auth.sign_up("me@example.com", "password-1").await;
    let r = auth
        .user("GET", "/user", None, &s(&session, "access_token"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["email"], "me@example.com");
    assert_eq!(r.body["id"], session["user"]["id"]);
    assert!(r.body["identities"].is_array());
}

#[tokio::test]
async fn put_user_merges_metadata_and_refuses_app_metadata() {
    let auth = spawn(&[]).await;
    let at = s(
        &auth.sign_up("meta@example.com", "password-1").await,
        "access_token",
    );
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"data": {"a": 1, "b": {"c": 2}}})),
            &at,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"data": {"a": null, "d": "x"}})),
            &at,
        )
        .await;
    assert_eq!(r.body["user_metadata"]["b"], json!({"c": 2}));
    assert!(r.body["user_metadata"].get("a").is_none());
    assert_eq!(r.body["user_metadata"]["d"], "x");
    assert_eq!(r.body["user_metadata"]["email_verified"], true);
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"app_metadata": {"role": "admin"}})),
            &at,
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "not_admin");
    let db = auth.db.connect().await;
    let app: serde_json::Value = db
        .query_one("select raw_app_meta_data from auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert!(app.get("role").is_none());
}

#[tokio::test]
async fn password_change_checks_strength_sameness_and_ends_other_sessions() {
    let auth = spawn(&[]).await;
    let first = auth.sign_up("pw@example.com", "password-1").await;
    let second = auth.sign_in("pw@example.com", "password-1").await;
    let at = s(&first, "access_token");
    let r = auth
        .user("PUT", "/user", Some(json!({"password": "123"})), &at)
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "weak_password");
    let r = auth
        .user("PUT", "/user", Some(json!({"password": "password-1"})), &at)
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "same_password");
    let r = auth
        .user("PUT", "/user", Some(json!({"password": "password-2"})), &at)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The other session is gone, this one stays.
    let r = auth
        .user("GET", "/user", None, &s(&second, "access_token"))
        .await;
    assert_eq!(r.body["code"], "session_not_found");
    assert_eq!(auth.user("GET", "/user", None, &at).await.status, 200);
    auth.sign_in("pw@example.com", "password-2").await;
    let r = auth
        .anon(
            "POST",
            "/token?grant_type=password",
            Some(json!({"email": "pw@example.com", "password": "password-1"})),
        )
        .await;
    assert_eq!(r.body["code"], "invalid_credentials");
}

#[tokio::test]
async fn secure_password_change_needs_the_reauthentication_nonce_for_old_sessions() {
    let auth = spawn(&[
        ("FERROBASE_SECURE_PASSWORD_CHANGE", "true"),
        ("FERROBASE_SMTP_MAX_FREQUENCY", "0"),
    ])
    .await;
    let at = s(
        &auth.sign_up("nonce@example.com", "password-1").await,
        "access_token",
    );
    let db = auth.db.connect().await;
    db.execute(
        "update auth.sessions set created_at = now() - interval '2 days'",
        &[],
    )
    .await
    .unwrap();
    let r = auth
        .user("PUT", "/user", Some(json!({"password": "password-2"})), &at)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "reauthentication_needed");
    let r = auth.user("GET", "/reauthenticate", None, &at).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mail = auth.last_mail_to("nonce@example.com");
    assert_eq!(mail.kind, "reauthentication");
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"password": "password-2", "nonce": "000000x"})),
            &at,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "reauthentication_not_valid");
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"password": "password-2", "nonce": mail.otp})),
            &at,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    auth.sign_in("nonce@example.com", "password-2").await;
}

#[tokio::test]
async fn email_change_is_confirmed_from_both_addresses() {
    let auth = spawn(&[]).await;
    auth.sign_up("taken@example.com", "password-1").await;
    let at = s(
        &auth.sign_up("old@example.com", "password-1").await,
        "access_token",
    );
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"email": "TAKEN@example.com"})),
            &at,
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "email_exists");
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"email": "new@example.com"})),
            &at,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["email"], "old@example.com");
    assert_eq!(r.body["new_email"], "new@example.com");
    assert!(r.body["email_change_sent_at"].is_string());
    let to_new = auth.last_mail_to("new@example.com");
    let to_old = auth.last_mail_to("old@example.com");
    assert_eq!(to_new.kind, "email_change");
    assert_eq!(to_old.kind, "email_change");
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "email_change", "token_hash": to_new.token_hash})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["code"], "200");
    assert!(r.body["msg"].as_str().unwrap().contains("other email"));
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "email_change", "email": "old@example.com", "token": to_old.otp})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user"]["email"], "new@example.com");
    assert!(r.body["user"].get("new_email").is_none());
    auth.sign_in("new@example.com", "password-1").await;
}

#[tokio::test]
async fn logout_scopes() {
    let auth = spawn(&[]).await;
    let a = auth.sign_up("scopes@example.com", "password-1").await;
    let b = auth.sign_in("scopes@example.com", "password-1").await;
    let c = auth.sign_in("scopes@example.com", "password-1").await;
    let (a, b, c) = (
        s(&a, "access_token"),
        s(&b, "access_token"),
        s(&c, "access_token"),
    );
    let r = auth.user("POST", "/logout?scope=bogus", None, &a).await;
    assert_eq!(r.status, 400);
    // local: only this session.
    assert_eq!(
        auth.user("POST", "/logout?scope=local", None, &a)
            .await
            .status,
        204
    );
    assert_eq!(auth.user("GET", "/user", None, &a).await.status, 403);
    assert_eq!(auth.user("GET", "/user", None, &b).await.status, 200);
    // others: all but this.
    assert_eq!(
        auth.user("POST", "/logout?scope=others", None, &b)
            .await
            .status,
        204
    );
    assert_eq!(auth.user("GET", "/user", None, &b).await.status, 200);
    assert_eq!(auth.user("GET", "/user", None, &c).await.status, 403);
    // global (default): everything.
    let d = s(
        &auth.sign_in("scopes@example.com", "password-1").await,
        "access_token",
    );
    assert_eq!(auth.user("POST", "/logout", None, &b).await.status, 204);
    assert_eq!(auth.user("GET", "/user", None, &b).await.status, 403);
    assert_eq!(auth.user("GET", "/user", None, &d).await.status, 403);
    let r = auth.anon("POST", "/logout", None).await;
    assert_eq!(r.status, 401);
}
