//! Access tokens, sessions and refresh-token rotation.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn access_tokens_carry_the_documented_claims() {
    let auth = spawn(&[("FERROBASE_API_EXTERNAL_URL", "https://api.example.com")]).await;
    let session = auth.sign_up("claims@example.com", "password-1").await;
    assert_eq!(session["token_type"], "bearer");
    assert_eq!(session["expires_in"], 3600);
    let at = s(&session, "access_token");
    // It verifies with the project secret, HS256.
    let verified =
        ferrobase_common::jwt::KeyStore::with_secret(ferrobase_testkit::JWT_SECRET.as_bytes())
            .verify(&at)
            .unwrap();
    for key in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "email",
        "phone",
        "app_metadata",
        "user_metadata",
        "role",
        "aal",
        "amr",
        "session_id",
        "is_anonymous",
    ] {
        assert!(
            verified.get(key).is_some(),
            "claim {key} missing: {verified}"
        );
    }
    assert_eq!(verified["iss"], "https://api.example.com/auth/v1");
    assert_eq!(verified["aud"], "authenticated");
    assert!(verified["aud"].is_string());
    assert_eq!(verified["role"], "authenticated");
    assert_eq!(verified["email"], "claims@example.com");
    assert_eq!(verified["phone"], "");
    assert_eq!(verified["aal"], "aal1");
    assert_eq!(verified["amr"][0]["method"], "password");
    assert_eq!(verified["is_anonymous"], false);
    assert_eq!(verified["sub"], session["user"]["id"]);
    assert_eq!(
        verified["exp"].as_i64().unwrap() - verified["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(session["expires_at"], verified["exp"]);
    assert_eq!(verified["app_metadata"]["provider"], "email");
}

#[tokio::test]
async fn refresh_tokens_are_stored_hashed_and_rotate_on_every_use() {
    let auth = spawn(&[]).await;
    let session = auth.sign_up("rotate@example.com", "password-1").await;
    let rt1 = s(&session, "refresh_token");
    let db = auth.db.connect().await;
    let stored: Vec<String> = db
        .query("select token from auth.refresh_tokens", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], rt1, "the plain token must not be stored");
    assert_eq!(stored[0].len(), 64);

    let r = auth.refresh(&rt1).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rt2 = s(&r.body, "refresh_token");
    assert_ne!(rt1, rt2);
    assert_eq!(r.body["user"]["email"], "rotate@example.com");
    let c1 = claims_of(&s(&session, "access_token"));
    let c2 = claims_of(&s(&r.body, "access_token"));
    assert_eq!(c1["session_id"], c2["session_id"], "same session");
    let r3 = auth.refresh(&rt2).await;
    assert_eq!(r3.status, 200);
    let revoked: i64 = db
        .query_one(
            "select count(*) from auth.refresh_tokens where revoked",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(revoked, 2);
    let parent_chain: i64 = db
        .query_one(
            "select count(*) from auth.refresh_tokens c join auth.refresh_tokens p on c.parent = p.token",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parent_chain, 2);
}

#[tokio::test]
async fn unknown_missing_and_garbage_refresh_tokens_are_refused() {
    let auth = spawn(&[]).await;
    let r = auth.refresh("nope").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "refresh_token_not_found");
    assert_eq!(
        r.body["message"],
        "Invalid Refresh Token: Refresh Token Not Found"
    );
    let r = auth
        .refresh(&"x'; delete from auth.users; --".repeat(100))
        .await;
    assert_eq!(r.body["code"], "refresh_token_not_found");
    let r = auth
        .anon("POST", "/token?grant_type=refresh_token", Some(json!({})))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!({"error": "invalid_request", "error_description": "refresh_token required"})
    );
    let r = auth
        .anon("POST", "/token?grant_type=nonsense", Some(json!({})))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "invalid_credentials");
}

#[tokio::test]
async fn reuse_within_the_interval_succeeds_and_after_it_revokes_the_family() {
    let auth = spawn(&[]).await;
    let session = auth.sign_up("reuse@example.com", "password-1").await;
    let rt1 = s(&session, "refresh_token");
    let r = auth.refresh(&rt1).await;
    let rt2 = s(&r.body, "refresh_token");
    // Using rt2 means rt1 is no longer the parent of an unused token.
    let r = auth.refresh(&rt2).await;
    assert_eq!(r.status, 200);
    let rt3 = s(&r.body, "refresh_token");
    // Within the 10 s window rt1 still works (a second tab).
    let again = auth.refresh(&rt1).await;
    assert_eq!(again.status, 200, "{:?}", again.body);

    // Age every revocation past the window: presenting rt1 now is real reuse.
    let db = auth.db.connect().await;
    db.execute(
        "update auth.refresh_tokens set updated_at = now() - interval '1 hour' where revoked",
        &[],
    )
    .await
    .unwrap();
    // rt1 has an unused child (from the reuse above); use it so none is left unused.
    let child = s(&again.body, "refresh_token");
    assert_eq!(auth.refresh(&child).await.status, 200);
    db.execute(
        "update auth.refresh_tokens set updated_at = now() - interval '1 hour' where revoked",
        &[],
    )
    .await
    .unwrap();
    // rt1's children were all used and its revocation is old: real reuse.
    let reused = auth.refresh(&rt1).await;
    assert_eq!(reused.status, 400, "{:?}", reused.body);
    assert_eq!(reused.body["code"], "refresh_token_already_used");
    assert_eq!(
        reused.body["message"],
        "Invalid Refresh Token: Already Used"
    );
    // The whole family is revoked: even the newest token is dead now.
    let after = auth.refresh(&rt3).await;
    assert_eq!(after.status, 400);
    let active: i64 = db
        .query_one(
            "select count(*) from auth.refresh_tokens where not revoked",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(active, 0);
}

#[tokio::test]
async fn a_revoked_parent_of_an_unused_token_still_refreshes_with_no_interval() {
    let auth = spawn(&[("FERROBASE_REFRESH_TOKEN_REUSE_INTERVAL", "0")]).await;
    let session = auth.sign_up("lost@example.com", "password-1").await;
    let rt1 = s(&session, "refresh_token");
    assert_eq!(auth.refresh(&rt1).await.status, 200);
    // The client lost that answer and retries with rt1.
    let retry = auth.refresh(&rt1).await;
    assert_eq!(retry.status, 200, "{:?}", retry.body);
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_all_succeed() {
    let auth = spawn(&[("FERROBASE_REFRESH_TOKEN_REUSE_INTERVAL", "0")]).await;
    let session = auth.sign_up("tabs@example.com", "password-1").await;
    let rt = s(&session, "refresh_token");
    let calls = (0..20).map(|_| auth.refresh(&rt));
    let replies = futures::future::join_all(calls).await;
    for r in &replies {
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let mut tokens: Vec<String> = replies
        .iter()
        .map(|r| s(&r.body, "refresh_token"))
        .collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 20, "each answer carries its own token");
    // Every issued token works afterwards.
    for t in tokens.iter().take(3) {
        assert_eq!(auth.refresh(t).await.status, 200);
    }
}

#[tokio::test]
async fn logout_ends_refresh_tokens_and_access_tokens_of_the_session() {
    let auth = spawn(&[]).await;
    let session = auth.sign_up("gone@example.com", "password-1").await;
    let at = s(&session, "access_token");
    let r = auth.user("POST", "/logout", None, &at).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.body, serde_json::Value::Null);
    let r = auth.refresh(&s(&session, "refresh_token")).await;
    assert_eq!(r.body["code"], "refresh_token_not_found");
    let r = auth.user("GET", "/user", None, &at).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "session_not_found");
}

#[tokio::test]
async fn sessions_end_at_their_timebox_and_after_inactivity() {
    let auth = spawn(&[
        ("FERROBASE_SESSIONS_TIMEBOX", "3600"),
        ("FERROBASE_SESSIONS_INACTIVITY_TIMEOUT", "600"),
    ])
    .await;
    let a = auth.sign_up("timebox@example.com", "password-1").await;
    let b = auth.sign_in("timebox@example.com", "password-1").await;
    let db = auth.db.connect().await;
    let bounded: bool = db
        .query_one(
            "select bool_and(not_after between now() + interval '59 minutes' and now() + interval '61 minutes')
             from auth.sessions",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(bounded);
    // The session a sign-in or refresh answer belongs to, from its access token.
    let session_of =
        |answer: &serde_json::Value| s(&claims_of(&s(answer, "access_token")), "session_id");
    let sa = session_of(&a);
    let sb = session_of(&b);
    db.execute(
        "update auth.sessions set not_after = now() - interval '1 second' where id = $1::text::uuid",
        &[&sa],
    )
    .await
    .unwrap();
    let r = auth.refresh(&s(&a, "refresh_token")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "session_expired");
    let r = auth
        .user("GET", "/user", None, &s(&a, "access_token"))
        .await;
    assert_eq!(r.body["code"], "session_not_found");
    // Marks a session last refreshed `ago` (an interval) before now.
    let idle_since = |session: String, ago: &'static str| {
        let db = &db;
        async move {
            db.execute(
                "update auth.sessions set refreshed_at = (now() - $2::text::interval) at time zone 'utc'
                 where id = $1::text::uuid",
                &[&session, &ago],
            )
            .await
            .unwrap();
        }
    };
    idle_since(sb, "1 hour").await;
    let r = auth.refresh(&s(&b, "refresh_token")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "session_expired");
    assert!(r.body["message"].as_str().unwrap().contains("Inactivity"));

    // Idle for less than the limit: refreshed as usual.
    let c = auth.sign_in("timebox@example.com", "password-1").await;
    let sc = session_of(&c);
    idle_since(sc, "5 minutes").await;
    let r = auth.refresh(&s(&c, "refresh_token")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let fresh = s(&r.body, "refresh_token");
    // A ban written straight into the table still stops the next refresh.
    db.execute(
        "update auth.users set banned_until = now() + interval '1 hour'
         where email = 'timebox@example.com'",
        &[],
    )
    .await
    .unwrap();
    let r = auth.refresh(&fresh).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "user_banned");
}
