//! TOTP MFA: enroll, challenge, verify, unenroll, and aal2 enforcement.

use serde_json::json;

use crate::support::*;

fn code_for(secret: &str) -> String {
    let key = ferrobase_auth::crypto::base32_decode(secret).expect("base32 secret");
    let now = ferrobase_common::jwt::now_secs();
    ferrobase_auth::crypto::totp_code(&key, now)
}

/// Enrolls and verifies a TOTP factor; returns (factor id, secret, aal2 session).
async fn enroll_verified(auth: &TestAuth, at: &str) -> (String, String, serde_json::Value) {
    let r = auth
        .user(
            "POST",
            "/factors",
            Some(json!({"factor_type": "totp", "friendly_name": "phone app"})),
            at,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let factor = s(&r.body, "id");
    let secret = s(&r.body["totp"], "secret");
    let c = auth
        .user("POST", &format!("/factors/{factor}/challenge"), None, at)
        .await;
    assert_eq!(c.status, 200, "{:?}", c.body);
    let v = auth
        .user(
            "POST",
            &format!("/factors/{factor}/verify"),
            Some(json!({"challenge_id": c.body["id"], "code": code_for(&secret)})),
            at,
        )
        .await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    (factor, secret, v.body)
}

#[tokio::test]
async fn enroll_challenge_verify_raises_the_session_to_aal2() {
    let auth = spawn(&[("FERROBASE_SITE_URL", "https://app.example.com")]).await;
    let session = auth.sign_up("mfa@example.com", "password-1").await;
    let at = s(&session, "access_token");
    let r = auth
        .user(
            "POST",
            "/factors",
            Some(json!({"factor_type": "totp"})),
            &at,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["type"], "totp");
    assert_eq!(r.body["friendly_name"], "");
    assert!(
        s(&r.body["totp"], "qr_code").starts_with("<?xml")
            || s(&r.body["totp"], "qr_code").contains("<svg")
    );
    let uri = s(&r.body["totp"], "uri");
    assert!(
        uri.starts_with("otpauth://totp/app.example.com:mfa%40example.com?algorithm=SHA1&digits=6"),
        "{uri}"
    );
    let factor = s(&r.body, "id");
    let secret = s(&r.body["totp"], "secret");

    let c = auth
        .user("POST", &format!("/factors/{factor}/challenge"), None, &at)
        .await;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["type"], "totp");
    assert!(c.body["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    let challenge = c.body["id"].clone();
    let bad = auth
        .user(
            "POST",
            &format!("/factors/{factor}/verify"),
            Some(json!({"challenge_id": challenge, "code": "000000x"})),
            &at,
        )
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["code"], "mfa_verification_failed");
    assert_eq!(bad.body["message"], "Invalid TOTP code entered");
    let v = auth
        .user(
            "POST",
            &format!("/factors/{factor}/verify"),
            Some(json!({"challenge_id": challenge, "code": code_for(&secret)})),
            &at,
        )
        .await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    let claims = claims_of(&s(&v.body, "access_token"));
    assert_eq!(claims["aal"], "aal2");
    assert_eq!(claims["amr"][0]["method"], "totp", "newest first");
    assert_eq!(claims["amr"][1]["method"], "password");
    assert_eq!(claims["session_id"], claims_of(&at)["session_id"]);
    assert_eq!(v.body["user"]["factors"][0]["status"], "verified");
    // The challenge is single-use.
    let again = auth
        .user(
            "POST",
            &format!("/factors/{factor}/verify"),
            Some(json!({"challenge_id": challenge, "code": code_for(&secret)})),
            &s(&v.body, "access_token"),
        )
        .await;
    assert_eq!(again.status, 422);
    // Refreshing keeps aal2, and the aal1 token of before still refreshes
    // within the reuse interval (another tab), into the same raised session.
    let r = auth.refresh(&s(&v.body, "refresh_token")).await;
    let refreshed = claims_of(&s(&r.body, "access_token"));
    assert_eq!(refreshed["aal"], "aal2");
    assert_eq!(
        refreshed["amr"], claims["amr"],
        "the session's methods and times"
    );
    let me = auth
        .user("GET", "/user", None, &s(&r.body, "access_token"))
        .await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(
        r.body["user"], me.body,
        "a refresh answers the user object, identities and factors as GET /user"
    );
    assert_eq!(r.body["user"]["identities"][0]["provider"], "email");
    let old = auth.refresh(&s(&session, "refresh_token")).await;
    assert_eq!(old.status, 200, "{:?}", old.body);
    assert_eq!(claims_of(&s(&old.body, "access_token"))["aal"], "aal2");
    // A fresh sign-in is aal1 and may not change the password or unenroll.
    let aal1 = s(
        &auth.sign_in("mfa@example.com", "password-1").await,
        "access_token",
    );
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"password": "password-2"})),
            &aal1,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["code"], "insufficient_aal");
    let r = auth
        .user("DELETE", &format!("/factors/{factor}"), None, &aal1)
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "insufficient_aal");
    let r = auth
        .user(
            "POST",
            "/factors",
            Some(json!({"factor_type": "totp"})),
            &aal1,
        )
        .await;
    assert_eq!(r.body["code"], "insufficient_aal");
    // With aal2 the password changes and the factor goes.
    let aal2 = s(&v.body, "access_token");
    let r = auth
        .user(
            "PUT",
            "/user",
            Some(json!({"password": "password-2"})),
            &aal2,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = auth
        .user("DELETE", &format!("/factors/{factor}"), None, &aal2)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], factor.as_str());
}

#[tokio::test]
async fn factors_are_private_named_uniquely_and_closed_to_anonymous_users() {
    let auth = spawn(&[("FERROBASE_AUTH_ANONYMOUS_USERS", "true")]).await;
    let a = s(
        &auth.sign_up("fa@example.com", "password-1").await,
        "access_token",
    );
    let b = s(
        &auth.sign_up("fb@example.com", "password-1").await,
        "access_token",
    );
    let (factor, _, _) = enroll_verified(&auth, &a).await;
    let r = auth
        .user("POST", &format!("/factors/{factor}/challenge"), None, &b)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["code"], "mfa_factor_not_found");
    let r = auth
        .user("DELETE", &format!("/factors/{factor}"), None, &b)
        .await;
    assert_eq!(r.status, 404);
    let r = auth
        .user("POST", "/factors/not-a-uuid/challenge", None, &b)
        .await;
    assert_eq!(r.status, 404);
    let r = auth
        .user("POST", "/factors", Some(json!({"factor_type": "sms"})), &b)
        .await;
    assert_eq!(r.status, 400);
    let r = auth
        .user(
            "POST",
            "/factors",
            Some(json!({"factor_type": "totp", "friendly_name": "x"})),
            &b,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = auth
        .user(
            "POST",
            "/factors",
            Some(json!({"factor_type": "totp", "friendly_name": "x"})),
            &b,
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "mfa_factor_name_conflict");
    let anon = auth.anon("POST", "/signup", Some(json!({}))).await;
    let r = auth
        .user(
            "POST",
            "/factors",
            Some(json!({"factor_type": "totp"})),
            &s(&anon.body, "access_token"),
        )
        .await;
    assert_eq!(r.status, 403);
    // The admin sees and removes factors.
    let uid = claims_of(&a)["sub"].as_str().unwrap().to_owned();
    let r = auth
        .admin("GET", &format!("/admin/users/{uid}/factors"), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    let r = auth
        .admin(
            "DELETE",
            &format!("/admin/users/{uid}/factors/{factor}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], factor.as_str());
}

#[tokio::test]
async fn expired_challenges_are_refused() {
    let auth = spawn(&[]).await;
    let at = s(
        &auth.sign_up("slow@example.com", "password-1").await,
        "access_token",
    );
    let r = auth
        .user(
            "POST",
            "/factors",
            Some(json!({"factor_type": "totp"})),
            &at,
        )
        .await;
    let factor = s(&r.body, "id");
    let secret = s(&r.body["totp"], "secret");
    let c = auth
        .user("POST", &format!("/factors/{factor}/challenge"), None, &at)
        .await;
    let db = auth.db.connect().await;
    db.execute(
        "update auth.mfa_challenges set created_at = now() - interval '10 minutes'",
        &[],
    )
    .await
    .unwrap();
    let r = auth
        .user(
            "POST",
            &format!("/factors/{factor}/verify"),
            Some(json!({"challenge_id": c.body["id"], "code": code_for(&secret)})),
            &at,
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "mfa_challenge_expired");
}
