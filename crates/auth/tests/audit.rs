//! The audit trail and the project-wide hourly email cap.

use serde_json::{Value, json};

use crate::support::*;

/// Every audit entry as (action, actor_id, actor_username, log_type, traits, ip), oldest first.
async fn entries(auth: &TestAuth) -> Vec<(String, String, String, String, Value, String)> {
    let db = auth.db.connect().await;
    db.query(
        "select payload::jsonb, ip_address from auth.audit_log_entries order by created_at, id",
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("reading the audit log: {e}"))
    .iter()
    .map(|r| {
        let p: Value = r.get(0);
        (
            s(&p, "action"),
            s(&p, "actor_id"),
            s(&p, "actor_username"),
            s(&p, "log_type"),
            p["traits"].clone(),
            r.get(1),
        )
    })
    .collect()
}

fn actions(all: &[(String, String, String, String, Value, String)]) -> Vec<&str> {
    all.iter().map(|e| e.0.as_str()).collect()
}

#[tokio::test]
async fn records_who_did_what_in_the_transaction_of_the_change() {
    let auth = spawn(&[]).await;
    let session = auth.sign_up("audit@example.com", "password-1").await;
    let id = s(&session["user"], "id");
    let signed_in = auth.sign_in("audit@example.com", "password-1").await;
    let refreshed = auth.refresh(&s(&signed_in, "refresh_token")).await;
    assert_eq!(refreshed.status, 200, "{:?}", refreshed.body);
    let at = s(&refreshed.body, "access_token");
    let r = auth
        .user("PUT", "/user", Some(json!({"data": {"a": 1}})), &at)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = auth
        .user("PUT", "/user", Some(json!({"password": "password-2"})), &at)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = auth.user("POST", "/logout?scope=local", None, &at).await;
    assert_eq!(r.status, 204, "{:?}", r.body);

    let all = entries(&auth).await;
    assert_eq!(
        actions(&all),
        [
            "user_signedup",
            "login",
            "login",
            "token_refreshed",
            "user_modified",
            "user_updated_password",
            "logout",
        ]
    );
    for (action, actor, username, _, _, ip) in &all {
        assert_eq!(actor, &id, "{action}");
        assert_eq!(username, "audit@example.com", "{action}");
        assert_eq!(ip, "127.0.0.1", "{action}");
    }
    let log_types: Vec<&str> = all.iter().map(|e| e.3.as_str()).collect();
    assert_eq!(
        log_types,
        [
            "team", "account", "account", "token", "user", "user", "account"
        ]
    );
    assert_eq!(all[0].4, json!({"provider": "email"}));
    assert_eq!(all[1].4, json!({"method": "password"}));
    assert_eq!(all[6].4, json!({"scope": "local"}));

    // A refused change leaves no entry: a wrong password, a reused token.
    let wrong = auth
        .anon(
            "POST",
            "/token?grant_type=password",
            Some(json!({"email": "audit@example.com", "password": "nope-nope"})),
        )
        .await;
    assert_eq!(wrong.status, 400);
    assert_eq!(entries(&auth).await.len(), all.len());

    // Administrators act under their own name, with the user in the traits.
    let created = auth
        .admin(
            "POST",
            "/admin/users",
            Some(json!({"email": "made@example.com", "password": "password-1"})),
        )
        .await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let made = s(&created.body, "id");
    let r = auth
        .admin("DELETE", &format!("/admin/users/{made}"), None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let all = entries(&auth).await;
    let tail = &all[all.len() - 2..];
    assert_eq!(actions(tail), ["user_signedup", "user_deleted"]);
    for (_, _, username, _, traits, _) in tail {
        assert_eq!(username, "service_role");
        assert_eq!(
            traits,
            &json!({"user_id": made, "user_email": "made@example.com"})
        );
    }
}

#[tokio::test]
async fn a_reused_refresh_token_is_recorded_with_the_revocation() {
    let auth = spawn(&[("FERROBASE_REFRESH_TOKEN_REUSE_INTERVAL", "0")]).await;
    let session = auth.sign_up("reuse-audit@example.com", "password-1").await;
    let first = s(&session, "refresh_token");
    let child = auth.refresh(&first).await;
    assert_eq!(child.status, 200, "{:?}", child.body);
    let grandchild = auth.refresh(&s(&child.body, "refresh_token")).await;
    assert_eq!(grandchild.status, 200, "{:?}", grandchild.body);
    // The first token's child is used up and the interval is zero: real reuse.
    let reused = auth.refresh(&first).await;
    assert_eq!(reused.status, 400, "{:?}", reused.body);
    assert_eq!(reused.body["code"], "refresh_token_already_used");
    let all = entries(&auth).await;
    let last = all.last().unwrap();
    assert_eq!(last.0, "token_revoked");
    assert_eq!(last.4["reason"], "refresh_token_reused");
}

#[tokio::test]
async fn the_trail_can_be_turned_off() {
    let auth = spawn(&[("FERROBASE_AUTH_AUDIT_LOG", "false")]).await;
    let session = auth.sign_up("quiet@example.com", "password-1").await;
    assert_eq!(
        auth.refresh(&s(&session, "refresh_token")).await.status,
        200
    );
    assert!(entries(&auth).await.is_empty());
}

#[tokio::test]
async fn the_hourly_email_cap_is_shared_by_replicas() {
    let settings = [
        ("FERROBASE_AUTH_AUTOCONFIRM", "false"),
        ("FERROBASE_SMTP_MAX_FREQUENCY", "0"),
        ("FERROBASE_RATE_LIMIT_EMAIL_SENT", "3"),
    ];
    let auth = spawn(&settings).await;
    let other = spawn_beside(&auth, &settings).await;
    for (i, replica) in [&auth, &other, &auth].into_iter().enumerate() {
        let r = replica
            .anon(
                "POST",
                "/otp",
                Some(json!({"email": format!("cap{i}@example.com")})),
            )
            .await;
        assert_eq!(r.status, 200, "{i}: {:?}", r.body);
    }
    let over = other
        .anon("POST", "/otp", Some(json!({"email": "cap9@example.com"})))
        .await;
    assert_eq!(over.status, 429, "{:?}", over.body);
    assert_eq!(over.body["code"], "over_email_send_rate_limit");
    assert_eq!(over.body["message"], "Email rate limit exceeded");
    // Nothing was mailed, and the refused request changed nothing.
    assert!(auth.mails().iter().all(|m| m.to != "cap9@example.com"));
    let db = auth.db.connect().await;
    let users: i64 = db
        .query_one(
            "select count(*) from auth.users where email = 'cap9@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 0);
    // Mails that need no sending budget (admin links) still work.
    let link = auth
        .admin(
            "POST",
            "/admin/generate_link",
            Some(json!({"type": "magiclink", "email": "cap0@example.com"})),
        )
        .await;
    assert_eq!(link.status, 200, "{:?}", link.body);
}
