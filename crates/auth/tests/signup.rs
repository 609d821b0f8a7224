//! `POST /signup`.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn autoconfirmed_signup_returns_a_session_with_the_user() {
    let auth = spawn(&[]).await;
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "New@Example.com", "password": "password-1", "data": {"name": "Zoë"},
                        "gotrue_meta_security": {"captcha_token": null}, "code_challenge": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let user = &r.body["user"];
    assert_eq!(user["email"], "new@example.com");
    assert_eq!(user["phone"], "");
    assert_eq!(user["role"], "authenticated");
    assert_eq!(user["aud"], "authenticated");
    assert_eq!(
        user["app_metadata"],
        json!({"provider": "email", "providers": ["email"]})
    );
    assert_eq!(user["user_metadata"]["name"], "Zoë");
    assert_eq!(user["user_metadata"]["email_verified"], true);
    assert_eq!(user["is_anonymous"], false);
    assert!(user["email_confirmed_at"].as_str().unwrap().ends_with('Z'));
    assert!(user["last_sign_in_at"].is_string());
    let id = s(user, "id");
    assert_eq!(id, id.to_lowercase());
    let identities = user["identities"].as_array().unwrap();
    assert_eq!(identities.len(), 1);
    assert_eq!(identities[0]["provider"], "email");
    assert_eq!(identities[0]["id"], user["id"]);
    assert_eq!(identities[0]["identity_data"]["email"], "new@example.com");
    assert_eq!(identities[0]["identity_data"]["sub"], user["id"]);
    assert!(user.get("new_email").is_none());
    assert!(user.get("banned_until").is_none());
    let db = auth.db.connect().await;
    let hash: String = db
        .query_one("select encrypted_password from auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert!(hash.starts_with("$2"), "bcrypt");
}

#[tokio::test]
async fn duplicate_signups_say_already_registered_with_autoconfirm() {
    let auth = spawn(&[]).await;
    auth.sign_up("dup@example.com", "password-1").await;
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "DUP@example.com", "password": "other-pass"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "user_already_exists");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("User already registered")
    );
    // The original password still works; nothing was overwritten.
    auth.sign_in("dup@example.com", "password-1").await;
}

#[tokio::test]
async fn without_autoconfirm_signup_mails_a_confirmation_and_hides_existing_users() {
    let auth = spawn(&[("FERROBASE_AUTH_AUTOCONFIRM", "false")]).await;
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "conf@example.com", "password": "password-1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        r.body.get("access_token").is_none(),
        "a user, not a session"
    );
    assert!(r.body["confirmation_sent_at"].is_string());
    assert!(r.body.get("email_confirmed_at").is_none());
    let mail = auth.last_mail_to("conf@example.com");
    assert_eq!(mail.kind, "signup");
    assert!(mail.link.contains("/auth/v1/verify?token="));
    assert_eq!(mail.otp.len(), 6);

    // Sign-in before confirming.
    let r = auth
        .anon(
            "POST",
            "/token?grant_type=password",
            Some(json!({"email": "conf@example.com", "password": "password-1"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "email_not_confirmed");

    // Confirm with the code.
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "signup", "email": "conf@example.com", "token": mail.otp})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["access_token"].is_string());
    assert_eq!(r.body["user"]["user_metadata"]["email_verified"], true);

    // A second signup of a confirmed address looks like success but creates nothing.
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "conf@example.com", "password": "password-2"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["role"], "");
    assert_eq!(r.body["identities"], json!([]));
    let db = auth.db.connect().await;
    let n: i64 = db
        .query_one("select count(*) from auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    auth.sign_in("conf@example.com", "password-1").await;
}

#[tokio::test]
async fn weak_long_and_missing_passwords_and_bad_emails_are_refused() {
    let auth = spawn(&[(
        "FERROBASE_PASSWORD_REQUIRED_CHARACTERS",
        "abcdefghijklmnopqrstuvwxyz:0123456789",
    )])
    .await;
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "w@example.com", "password": "abc"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "weak_password");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("at least 6 characters")
    );
    let reasons = r.body["weak_password"]["reasons"].as_array().unwrap();
    assert!(reasons.contains(&json!("length")));
    assert!(reasons.contains(&json!("characters")));
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "w@example.com", "password": "abcdefgh"})),
        )
        .await;
    assert_eq!(r.body["weak_password"]["reasons"], json!(["characters"]));
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "w@example.com", "password": "a1".repeat(40)})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "validation_failed");
    let r = auth
        .anon("POST", "/signup", Some(json!({"email": "w@example.com"})))
        .await;
    assert_eq!(r.status, 400);
    for bad in [
        "not-an-email",
        "x@y",
        "a@b.com' OR 1=1 --",
        &format!("{}@example.com", "a".repeat(300)),
    ] {
        let r = auth
            .anon(
                "POST",
                "/signup",
                Some(json!({"email": bad, "password": "abc123def"})),
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
        assert_eq!(r.body["code"], "validation_failed");
    }
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "a@b.com", "phone": "15550100", "password": "abc123def"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = auth
        .anon("POST", "/signup", Some(json!({"email": 42})))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "bad_json");
    let r = auth.call("POST", "/signup", None, anon_ctx(), &[]).await;
    assert_eq!(
        r.status, 422,
        "empty body is an anonymous signup: {:?}",
        r.body
    );
    let db = auth.db.connect().await;
    let n: i64 = db
        .query_one("select count(*) from auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "no bad input created a user");
}

#[tokio::test]
async fn sql_looking_metadata_is_stored_verbatim() {
    let auth = spawn(&[]).await;
    let evil = "'); drop table auth.users; --";
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "sql@example.com", "password": "password-1", "data": {"name": evil, evil: 1}})),
        )
        .await;
    assert_eq!(r.status, 200);
    let db = auth.db.connect().await;
    let meta: serde_json::Value = db
        .query_one("select raw_user_meta_data from auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(meta["name"], evil);
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "m@example.com", "password": "password-1", "data": "x"})),
        )
        .await;
    assert_eq!(r.status, 400);
    // NUL characters cannot be stored: refused as bad input, nothing written.
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "nul@example.com", "password": "password-1", "data": {"n": "a\u{0}b"}})),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "nul@example.com", "password": "pass\u{0}word"})),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let n: i64 = db
        .query_one("select count(*) from auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let auth = spawn(&[]).await;
    let big = "x".repeat(1024 * 1024 + 10);
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "big@example.com", "password": "password-1", "data": {"b": big}})),
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["code"], "request_entity_too_large");
}

#[tokio::test]
async fn signups_can_be_disabled() {
    let auth = spawn(&[("FERROBASE_AUTH_DISABLE_SIGNUP", "true")]).await;
    let r = auth
        .anon(
            "POST",
            "/signup",
            Some(json!({"email": "no@example.com", "password": "password-1"})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "signup_disabled");
}

#[tokio::test]
async fn anonymous_sign_in_and_linking_an_email_later() {
    let off = spawn(&[]).await;
    let r = off.anon("POST", "/signup", Some(json!({"data": {}}))).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "anonymous_provider_disabled");

    let auth = spawn(&[("FERROBASE_AUTH_ANONYMOUS_USERS", "true")]).await;
    let r = auth
        .anon("POST", "/signup", Some(json!({"data": {"theme": "dark"}})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let user = &r.body["user"];
    assert_eq!(user["is_anonymous"], true);
    assert_eq!(user["email"], "");
    assert_eq!(user["app_metadata"], json!({}));
    assert_eq!(user["identities"], json!([]));
    let at = s(&r.body, "access_token");
    let claims = claims_of(&at);
    assert_eq!(claims["is_anonymous"], true);
    assert_eq!(claims["amr"][0]["method"], "anonymous");
    assert_eq!(claims["role"], "authenticated");

    // Link an email (autoconfirm: applied at once) and a password.
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"email": "linked@example.com"})),
            &at,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["email"], "linked@example.com");
    assert_eq!(r.body["is_anonymous"], false);
    assert_eq!(r.body["app_metadata"]["providers"], json!(["email"]));
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"password": "linked-pass"})),
            &at,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let s2 = auth.sign_in("linked@example.com", "linked-pass").await;
    assert_eq!(s2["user"]["id"], user["id"]);
    assert_eq!(s2["user"]["user_metadata"]["theme"], "dark");
}

#[tokio::test]
async fn two_hundred_concurrent_signups_are_all_kept() {
    let auth = spawn(&[]).await;
    let calls = (0..200).map(|i| {
        let auth = &auth;
        async move {
            auth.anon(
                "POST",
                "/signup",
                Some(json!({"email": format!("many{i}@example.com"), "password": "password-1"})),
            )
            .await
        }
    });
    let replies = futures::future::join_all(calls).await;
    for r in &replies {
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let db = auth.db.connect().await;
    let n: i64 = db
        .query_one("select count(*) from auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 200);
    let ids: i64 = db
        .query_one("select count(*) from auth.identities", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ids, 200);
}

#[tokio::test]
async fn concurrent_signups_of_one_email_create_one_user() {
    let auth = spawn(&[]).await;
    let calls = (0..20).map(|_| {
        auth.anon(
            "POST",
            "/signup",
            Some(json!({"email": "race@example.com", "password": "password-1"})),
        )
    });
    let replies = futures::future::join_all(calls).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1);
    for r in replies.iter().filter(|r| r.status != 200) {
        assert_eq!(r.body["code"], "user_already_exists");
    }
    let db = auth.db.connect().await;
    let n: i64 = db
        .query_one("select count(*) from auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn anonymous_users_link_an_email_by_confirming_it() {
    let auth = spawn(&[
        ("FERROBASE_AUTH_ANONYMOUS_USERS", "true"),
        ("FERROBASE_AUTH_AUTOCONFIRM", "false"),
    ])
    .await;
    let r = auth.anon("POST", "/signup", Some(json!({}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let at = s(&r.body, "access_token");
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"email": "later@example.com"})),
            &at,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["email"], "");
    assert_eq!(r.body["new_email"], "later@example.com");
    assert_eq!(r.body["is_anonymous"], true);
    let mails = auth.mails();
    assert_eq!(mails.len(), 1, "only the new address is mailed");
    let r = auth
        .anon(
            "POST",
            "/verify",
            Some(json!({"type": "email_change", "email": "later@example.com", "token": mails[0].otp})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user"]["email"], "later@example.com");
    assert_eq!(r.body["user"]["is_anonymous"], false);
    assert_eq!(
        r.body["user"]["app_metadata"]["providers"],
        json!(["email"])
    );
    assert_eq!(
        claims_of(&s(&r.body, "access_token"))["is_anonymous"],
        false
    );
}

#[tokio::test]
async fn the_audience_comes_from_x_jwt_aud() {
    let auth = spawn(&[]).await;
    let r = auth
        .call(
            "POST",
            "/signup",
            Some(json!({"email": "aud@example.com", "password": "password-1"})),
            anon_ctx(),
            &[("x-jwt-aud", "partners")],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["user"]["aud"], "partners");
    assert_eq!(claims_of(&s(&r.body, "access_token"))["aud"], "partners");
    // Users of another audience are invisible to the default one.
    let r = auth
        .anon(
            "POST",
            "/token?grant_type=password",
            Some(json!({"email": "aud@example.com", "password": "password-1"})),
        )
        .await;
    assert_eq!(r.body["code"], "invalid_credentials");
}
