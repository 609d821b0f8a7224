//! Many clients at once.

use std::collections::HashSet;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_signups_are_all_kept() {
    const N: usize = 1000;
    let auth = spawn(&[]).await;
    let signups = (0..N).map(|i| {
        let auth = &auth;
        async move {
            let email = format!("crowd-{i}@example.com");
            let r = auth
                .anon(
                    "POST",
                    "/signup",
                    Some(json!({"email": email, "password": "password-1"})),
                )
                .await;
            (email, r)
        }
    });
    let replies = futures::future::join_all(signups).await;
    let mut ids = HashSet::new();
    for (email, r) in &replies {
        assert_eq!(r.status, 200, "{email}: {:?}", r.body);
        assert_eq!(r.body["token_type"], "bearer", "{email}: {:?}", r.body);
        assert!(!s(&r.body, "access_token").is_empty(), "{email}");
        assert!(!s(&r.body, "refresh_token").is_empty(), "{email}");
        assert_eq!(r.body["user"]["email"], email.as_str());
        assert_eq!(
            r.body["user"]["identities"].as_array().map(Vec::len),
            Some(1)
        );
        ids.insert(s(&r.body["user"], "id"));
    }
    assert_eq!(ids.len(), N, "every sign-up made its own user");

    let db = auth.db.connect().await;
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("select count(*) from auth.users").await, N as i64);
    assert_eq!(
        count("select count(distinct email) from auth.users where email like 'crowd-%'").await,
        N as i64
    );
    assert_eq!(
        count("select count(*) from auth.identities where provider = 'email'").await,
        N as i64
    );
    assert_eq!(
        count(
            "select count(*) from auth.users u
             where exists(select 1 from auth.identities i where i.user_id = u.id)
               and u.email_confirmed_at is not null and u.encrypted_password like '$2%'"
        )
        .await,
        N as i64
    );
    assert_eq!(count("select count(*) from auth.sessions").await, N as i64);
    assert_eq!(
        count("select count(*) from auth.refresh_tokens").await,
        N as i64
    );
    // Every returned session can be used: sign one back in by its refresh token.
    let (_, last) = replies.last().unwrap();
    let r = auth
        .anon(
            "POST",
            "/token?grant_type=refresh_token",
            Some(json!({"refresh_token": s(&last.body, "refresh_token")})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}
