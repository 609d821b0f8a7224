//! Test support: a rest service on port 0 over a fresh database of the
//! private PostgreSQL, with fixture tables, called over real gRPC the way the
//! gateway calls it.

use ferrobase_common::service::Service as _;
use std::time::Duration;

use ferrobase_common::AuthContext;
use ferrobase_common::RequestId;
use ferrobase_common::config::Env;
use ferrobase_common::grpc::{ClientContext, ClientContextLayer};
use ferrobase_proto::rest::v1::rest_client::RestClient;
use ferrobase_proto::{Header, HttpRequest};
use ferrobase_rest::{Application, RestConfig};
use ferrobase_testkit::{JWT_SECRET, TestDatabase};
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};
use tower_layer::Layer as _;

/// The fixture schema every test starts with.
pub const FIXTURES: &str = r#"
create table clients (id int primary key, name text not null);
create table projects (id int primary key, name text not null, client_id int references clients(id));
create table tasks (id int primary key, name text not null, project_id int references projects(id));
create table users (id int primary key, name text not null);
create table users_tasks (user_id int references users(id), task_id int references tasks(id), primary key (user_id, task_id));
create table profiles (id int primary key references users(id), bio text);
create table items (
  id serial primary key, name text, price numeric, data jsonb, tags text[],
  created date default '2024-01-01', active boolean default true, note text default 'none');
create table collections (id int primary key, name text, parent_id int references collections(id));
create table people (id int primary key, name text);
create table messages (id int primary key, body text,
  sender int constraint message_sender_fkey references people(id),
  recipient int constraint message_recipient_fkey references people(id));
create table notes (id serial primary key, owner uuid not null default auth.uid(), body text);
alter table notes enable row level security;
create policy notes_owner on notes for all to authenticated
  using (owner = auth.uid()) with check (owner = auth.uid());
grant select on notes to anon;
create table docs (id int primary key, body text, tsv tsvector);

insert into clients values (1, 'Microsoft'), (2, 'Apple');
insert into projects values (1, 'Windows 7', 1), (2, 'Windows 10', 1), (3, 'IOS', 2), (4, 'OSX', 2), (5, 'Orphan', null);
insert into tasks values (1, 'Design w7', 1), (2, 'Code w7', 1), (3, 'Design w10', 2), (4, 'Code w10', 2),
  (5, 'Design IOS', 3), (6, 'Code IOS', 3), (7, 'Design OSX', 4), (8, 'Code OSX', 4);
insert into users values (1, 'Angela Martin'), (2, 'Michael Scott'), (3, 'Dwight Schrute');
insert into users_tasks values (1, 1), (1, 2), (1, 3), (2, 5), (2, 6), (3, 1);
insert into profiles values (1, 'accountant');
insert into items (name, price, data, tags) values
  ('apple', 1.50, '{"color": "red", "size": 3, "nested": {"k": "v"}}', '{fruit,red}'),
  ('banana', 0.25, '{"color": "yellow", "size": 5}', '{fruit}'),
  ('carrot', null, '{"color": "orange", "size": 20}', '{vegetable}'),
  ('date', 3, null, '{}');
insert into collections values (1, 'root', null), (2, 'child a', 1), (3, 'child b', 1), (4, 'grandchild', 2);
insert into people values (1, 'Alice'), (2, 'Bob');
insert into messages values (1, 'hi bob', 1, 2), (2, 'hi alice', 2, 1);
insert into docs values (1, 'the fat rat', to_tsvector('english', 'the fat rat')), (2, 'a lean cat', to_tsvector('english', 'a lean cat'));

create function add(a int, b int default 10) returns int language sql immutable as $$ select a + b $$;
create function get_projects(min_id int) returns setof projects language sql stable as $$ select * from projects where id >= min_id order by id $$;
create function project_by_id(pid int) returns projects language sql stable as $$ select * from projects where id = pid $$;
create function noop() returns void language sql as $$ select $$;
create function status() returns text language sql stable as $$ select 'OFFLINE'::text $$;
create function echo(jsonb) returns jsonb language sql immutable as $$ select $1 $$;
create function overloaded(a int) returns int language sql immutable as $$ select a $$;
create function overloaded(a text) returns text language sql immutable as $$ select a $$;
create function new_client(id int, name text) returns clients language sql volatile as $$ insert into clients values (id, name) returning * $$;
create function whoami() returns text language sql stable as $$ select current_user || ':' || coalesce(auth.uid()::text, '-') || ':' || current_setting('request.method', true) $$;
create function numbers(n int) returns setof int language sql immutable as $$ select generate_series(1, n) $$;
create function full_name(people) returns text language sql stable as $$ select $1.name || '!' $$;
create function teapot() returns text language plpgsql as $$ begin perform set_config('response.status', '418', true); perform set_config('response.headers', '[{"X-Brew": "earl grey"}]', true); return 'short and stout'; end $$;
create function fail_payment() returns void language plpgsql as $$ begin raise sqlstate 'PGRST' using message = '{"code":"123","message":"Payment Required","details":"Quota exceeded","hint":"Upgrade"}', detail = '{"status":402,"headers":{"X-Powered-By":"Ferrobase"}}'; end $$;
create function raise_plain() returns void language plpgsql as $$ begin raise exception 'custom failure' using hint = 'try again'; end $$;
"#;

pub struct TestRest {
    pub db: TestDatabase,
    pub port: u16,
    client: RestClient<ClientContext<Channel>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A response as a client sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<Header>,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }
}

/// The environment the tests run the service with, on `db`.
pub fn env_for(db: &TestDatabase) -> Env {
    Env::from_pairs([
        ("FERROBASE_GRPC_ADDR", "127.0.0.1:0"),
        ("FERROBASE_METRICS_ADDR", "off"),
        ("FERROBASE_DB_URL", db.url.as_str()),
        ("FERROBASE_DB_POOL_SIZE", "4"),
        ("FERROBASE_JWT_SECRET", JWT_SECRET),
    ])
}

/// Starts the service on a fresh database holding the fixtures plus `sql`.
pub async fn spawn_with(sql: &str, extra: &[(&str, &str)]) -> TestRest {
    let db = ferrobase_testkit::postgres().create_database().await;
    let client = db.connect().await;
    client
        .batch_execute(FIXTURES)
        .await
        .unwrap_or_else(|e| panic!("fixtures: {e}"));
    if !sql.is_empty() {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("extra fixtures: {e}"));
    }
    let mut env = env_for(&db);
    for (k, v) in extra {
        env = env.with(*k, *v);
    }
    spawn_on(db, env).await
}

/// Starts the service with the fixtures.
pub async fn spawn() -> TestRest {
    spawn_with("", &[]).await
}

/// Starts the service on `db` with exactly `env`.
pub async fn spawn_on(db: TestDatabase, env: Env) -> TestRest {
    let config = RestConfig::from_env(&env).unwrap_or_else(|e| panic!("config: {e}"));
    let app = Application::build(config)
        .await
        .unwrap_or_else(|e| panic!("build: {e:#}"));
    let port = app.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap_or_else(|e| panic!("endpoint: {e}"))
        .timeout(Duration::from_secs(30));
    let client = RestClient::new(ClientContextLayer.layer(endpoint.connect_lazy()));
    TestRest {
        db,
        port,
        client,
        _stop: stop,
    }
}

impl TestRest {
    /// Sends one HTTP request as the gateway would, with `ctx` as the caller.
    pub async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&str>,
        ctx: AuthContext,
        headers: &[(&str, &str)],
    ) -> Reply {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut all: Vec<Header> = Vec::new();
        if method != "GET" && method != "HEAD" {
            all.push(Header {
                name: "content-type".into(),
                value: "application/json".into(),
            });
        }
        for (k, v) in headers {
            all.retain(|h| h.name != *k);
            all.push(Header {
                name: (*k).to_owned(),
                value: (*v).to_owned(),
            });
        }
        let mut request = tonic::Request::new(HttpRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: all,
            body: body.unwrap_or_default().to_owned().into(),
            remote_addr: "127.0.0.1".into(),
        });
        request.extensions_mut().insert(ctx);
        request.extensions_mut().insert(RequestId::generate());
        let resp = self
            .client
            .clone()
            .handle(request)
            .await
            .unwrap_or_else(|s| panic!("grpc: {s}"))
            .into_inner();
        let text = String::from_utf8_lossy(&resp.body).into_owned();
        let body = if resp.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&resp.body).unwrap_or_else(|_| Value::String(text.clone()))
        };
        Reply {
            status: resp.status,
            headers: resp.headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None, anon(), &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.call("GET", path, None, anon(), headers).await
    }

    /// A write as the service role.
    pub async fn write(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.call(method, path, Some(body), service(), headers)
            .await
    }

    /// Runs SQL as the superuser and returns the first column of each row as JSON.
    pub async fn sql(&self, sql: &str) -> Value {
        let client = self.db.connect().await;
        let rows = client
            .query(
                &format!("select coalesce(json_agg(t), '[]')::text from ({sql}) t"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("sql {sql}: {e}"));
        serde_json::from_str(rows[0].get::<_, &str>(0)).unwrap_or(Value::Null)
    }

    pub async fn exec(&self, sql: &str) {
        let client = self.db.connect().await;
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("exec {sql}: {e}"));
    }
}

pub fn anon() -> AuthContext {
    AuthContext::from_claims(json!({"role": "anon", "iss": "ferrobase"}))
}

pub fn service() -> AuthContext {
    AuthContext::from_claims(json!({"role": "service_role", "iss": "ferrobase"}))
}

pub fn user(sub: &str) -> AuthContext {
    AuthContext::from_claims(json!({"role": "authenticated", "sub": sub, "iss": "ferrobase"}))
}

/// Asserts the body is a PostgREST error with all four keys and `code`.
pub fn assert_error(r: &Reply, status: u32, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    let obj = r
        .body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {r:?}"));
    for k in ["code", "details", "hint", "message"] {
        assert!(obj.contains_key(k), "missing {k}: {r:?}");
    }
    assert_eq!(obj["code"], code, "{r:?}");
}
