//! The periodic removal of rows no request can use any more.

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test]
async fn stale_rows_are_removed_and_live_ones_kept() {
    let auth = spawn(&[
        ("FERROBASE_SESSIONS_TIMEBOX", "3600"),
        ("FERROBASE_SESSIONS_INACTIVITY_TIMEOUT", "600"),
        ("FERROBASE_AUTH_CLEANUP_INTERVAL", "1"),
    ])
    .await;
    let email = "tidy@example.com";
    let a = auth.sign_up(email, "password-1").await;
    let mut sessions = vec![];
    for _ in 0..5 {
        sessions.push(auth.sign_in(email, "password-1").await);
    }
    let session_of = |answer: &serde_json::Value| {
        s(&claims_of(&s(answer, "access_token")), "session_id")
            .parse::<uuid::Uuid>()
            .unwrap()
    };
    let [
        ended_long_ago,
        ended_lately,
        past_timebox,
        idle_long_ago,
        idle_lately,
    ]: [uuid::Uuid; 5] = sessions
        .iter()
        .map(session_of)
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let live = session_of(&a);

    // The live session: two rotations leave two revoked tokens and a live one.
    let t0 = s(&a, "refresh_token");
    let r = auth.refresh(&t0).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let t1 = s(&r.body, "refresh_token");
    let r = auth.refresh(&t1).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let t2 = s(&r.body, "refresh_token");
    let hash = |t: &str| ferrobase_auth::crypto::sha256_hex(t);

    let db = auth.db.connect().await;
    let user: uuid::Uuid = db
        .query_one("select id from auth.users where email = $1", &[&email])
        .await
        .unwrap()
        .get(0);
    let ago = |interval: &str| format!("now() - interval '{interval}'");
    let script = format!(
        "update auth.refresh_tokens set updated_at = {day_and_more} where token = '{h0}';
         update auth.refresh_tokens set updated_at = {longer} where token = '{h2}';
         update auth.sessions set not_after = {three_days_and_more} where id = '{ended_long_ago}';
         update auth.sessions set not_after = {hour} where id = '{ended_lately}';
         update auth.sessions set created_at = {day_and_two_hours}, refreshed_at = now() at time zone 'utc'
           where id = '{past_timebox}';
         update auth.sessions set created_at = {day_and_half_hour},
           refreshed_at = ({day_and_twenty_minutes}) at time zone 'utc' where id = '{idle_long_ago}';
         update auth.sessions set created_at = {day_less_an_hour},
           refreshed_at = ({day_less_an_hour}) at time zone 'utc' where id = '{idle_lately}';
         insert into auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge,
             provider_type, authentication_method, created_at, updated_at)
           values ('00000000-0000-4000-8000-000000000001', '{user}', 'old', 's256', 'c', 'email',
                   'email/signup', {day_and_more}, {day_and_more}),
                  ('00000000-0000-4000-8000-000000000002', '{user}', 'new', 's256', 'c', 'email',
                   'email/signup', {hour}, {hour});
         insert into auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at, updated_at)
           values ('00000000-0000-4000-8000-000000000011', '{user}', 'abandoned', 'totp', 'unverified',
                   {day_and_more}, {day_and_more}),
                  ('00000000-0000-4000-8000-000000000012', '{user}', 'enrolling', 'totp', 'unverified',
                   {hour}, {hour}),
                  ('00000000-0000-4000-8000-000000000013', '{user}', 'in use', 'totp', 'verified',
                   {day_and_more}, {day_and_more});
         insert into auth.mfa_challenges (id, factor_id, created_at, ip_address)
           values ('00000000-0000-4000-8000-000000000021', '00000000-0000-4000-8000-000000000013',
                   {day_and_more}, '127.0.0.1'),
                  ('00000000-0000-4000-8000-000000000022', '00000000-0000-4000-8000-000000000013',
                   {hour}, '127.0.0.1');",
        h0 = hash(&t0),
        h2 = hash(&t2),
        day_and_more = ago("25 hours"),
        longer = ago("30 hours"),
        three_days_and_more = ago("73 hours"),
        hour = ago("1 hour"),
        day_and_two_hours = ago("26 hours"),
        day_and_half_hour = ago("24 hours 30 minutes"),
        day_and_twenty_minutes = ago("24 hours 20 minutes"),
        day_less_an_hour = ago("23 hours"),
    );
    db.batch_execute(&script).await.unwrap();

    // What must go, checked until the service's pass (every second) removed it.
    let gone_sql = format!(
        "select
           (select count(*) from auth.refresh_tokens where token = '{h0}')
         + (select count(*) from auth.sessions
              where id in ('{ended_long_ago}', '{past_timebox}', '{idle_long_ago}'))
         + (select count(*) from auth.refresh_tokens
              where session_id in ('{ended_long_ago}', '{past_timebox}', '{idle_long_ago}'))
         + (select count(*) from auth.flow_state where auth_code = 'old')
         + (select count(*) from auth.mfa_factors where friendly_name = 'abandoned')
         + (select count(*) from auth.mfa_challenges
              where id = '00000000-0000-4000-8000-000000000021')",
        h0 = hash(&t0),
    );
    let start = Instant::now();
    loop {
        let left: i64 = db.query_one(&gone_sql, &[]).await.unwrap().get(0);
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{left} stale rows still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // What must stay.
    let kept = |sql: String| {
        let db = &db;
        async move {
            let n: i64 = db.query_one(&sql, &[]).await.unwrap().get(0);
            n
        }
    };
    assert_eq!(
        kept(format!(
            "select count(*) from auth.refresh_tokens where token in ('{}', '{}')",
            hash(&t1),
            hash(&t2)
        ))
        .await,
        2,
        "a token revoked lately, and a live one however old"
    );
    assert_eq!(
        kept(format!(
            "select count(*) from auth.sessions where id in ('{live}', '{ended_lately}', '{idle_lately}')"
        ))
        .await,
        3,
        "sessions live, or ended less than the margin ago"
    );
    assert_eq!(
        kept("select count(*) from auth.flow_state where auth_code = 'new'".into()).await,
        1
    );
    assert_eq!(
        kept(
            "select count(*) from auth.mfa_factors where friendly_name in ('enrolling', 'in use')"
                .into()
        )
        .await,
        2,
        "factors being enrolled, and verified ones however old"
    );
    assert_eq!(
        kept(
            "select count(*) from auth.mfa_challenges where id = '00000000-0000-4000-8000-000000000022'"
                .into()
        )
        .await,
        1
    );

    // The live session still refreshes; a token removed is simply unknown.
    let r = auth.refresh(&t2).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = auth.refresh(&t0).await;
    assert_eq!(r.body["code"], "refresh_token_not_found");
}
