//! Answers one request: routing, negotiation, planning and the response.

mod read;
mod rpc;
mod write;

use std::sync::Arc;

use deadpool_postgres::Pool;
use ferrobase_common::wire::percent_decode;
use ferrobase_proto::HttpResponse;
use serde_json::Value;

use crate::api::{
    ApiError, ApiRequest, CountPref, Media, Prefer, Resolution, Response, ReturnPref, TxPref,
    negotiate,
};
use crate::config::RestConfig;
use crate::db::{self, Access, End, Outcome, Settings};
use crate::parser::{self, Condition, OrderTerm, SelectItem};
use crate::plan::{Node, Params, Planner, Renderer, Source, ident, node_at, qualified};
use crate::schema::{Cache, Function, SchemaCache, Table};

/// What every request shares.
pub struct State {
    pub config: RestConfig,
    /// The schema cache's, the OpenAPI document's and plans' connections.
    pub pool: Pool,
    /// The connections requests run on.
    pub requests: crate::pg::Pool,
    pub cache: Arc<Cache>,
}

/// How a write's (or a call's) transaction ends: committed as `commit` says,
/// unless a strict `max-affected` or a singular answer refuses the outcome,
/// which then decides it (and costs a round trip more).
fn end_of(commit: bool, strict_max: Option<i64>, singular: bool) -> End<'static> {
    if strict_max.is_none() && !singular {
        return End::Known(commit);
    }
    End::Decided(Box::new(move |o| {
        if let Some(max) = strict_max
            && o.page_total > max
        {
            return Err(ApiError::new(
                400,
                "PGRST124",
                "Query result exceeds max-affected preference constraint",
            )
            .details(format!("The query affects {} rows", o.page_total)));
        }
        if singular && o.page_total != 1 {
            return Err(singular_error(o.page_total));
        }
        Ok(commit)
    }))
}

/// Answers one request; errors become PostgREST error bodies.
pub async fn handle(state: &State, req: &ApiRequest) -> HttpResponse {
    match route(state, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

/// Query parameters sorted by role.
#[derive(Debug, Default)]
struct Query {
    select: Option<String>,
    columns: Option<String>,
    on_conflict: Option<String>,
    order: Vec<(Vec<String>, String)>,
    limit: Vec<(Vec<String>, String)>,
    offset: Vec<(Vec<String>, String)>,
    logic: Vec<(Vec<String>, bool, bool, String)>,
    filters: Vec<(String, String)>,
}

impl Query {
    /// The parameters addressing the root (`root`) or an embed (`!root`).
    fn scoped(&self, root: bool) -> Self {
        let keep = |path: &[String]| path.is_empty() == root;
        Self {
            filters: self
                .filters
                .iter()
                .filter(|(k, _)| parser::parse_key(k).map_or(root, |(p, _)| keep(&p)))
                .cloned()
                .collect(),
            logic: self.logic.iter().filter(|l| keep(&l.0)).cloned().collect(),
            order: self.order.iter().filter(|o| keep(&o.0)).cloned().collect(),
            limit: self.limit.iter().filter(|o| keep(&o.0)).cloned().collect(),
            offset: self.offset.iter().filter(|o| keep(&o.0)).cloned().collect(),
            ..Self::default()
        }
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut q = Self::default();
        for (k, v) in pairs {
            match k.as_str() {
                "select" => q.select = Some(v),
                "columns" => q.columns = Some(v),
                "on_conflict" => q.on_conflict = Some(v),
                "apikey" => {}
                _ => {
                    let segs: Vec<&str> = k.split('.').collect();
                    let last = segs.last().copied().unwrap_or("");
                    let mut prefix: Vec<String> = segs[..segs.len().saturating_sub(1)]
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect();
                    match last {
                        "order" => q.order.push((prefix, v)),
                        "limit" => q.limit.push((prefix, v)),
                        "offset" => q.offset.push((prefix, v)),
                        "or" | "and" => {
                            let negated = prefix.last().is_some_and(|p| p == "not");
                            if negated {
                                prefix.pop();
                            }
                            q.logic.push((prefix, last == "or", negated, v));
                        }
                        _ => q.filters.push((k, v)),
                    }
                }
            }
        }
        q
    }
}

enum Target {
    Root,
    Relation(String),
    Rpc(String),
}

fn target(path: &str) -> Result<Target, ApiError> {
    let trimmed = path.trim_start_matches('/');
    let segs: Vec<String> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed
            .split('/')
            .map(|s| percent_decode(&s.replace('+', "%2B")))
            .collect()
    };
    let invalid = || ApiError::new(404, "PGRST125", "Invalid path specified in request URL");
    match segs.as_slice() {
        [] => Ok(Target::Root),
        [r, f] if r == "rpc" && !f.is_empty() => Ok(Target::Rpc(f.clone())),
        [t] if !t.is_empty() => Ok(Target::Relation(t.clone())),
        [t, empty] if empty.is_empty() && !t.is_empty() => Ok(Target::Relation(t.clone())),
        _ => Err(invalid()),
    }
}

/// Per-request context.
struct Ctx<'s> {
    state: &'s State,
    cache: Arc<SchemaCache>,
    req: &'s ApiRequest,
    schema: String,
    profile_negotiated: bool,
    prefer: Prefer,
    media: Media,
    anon: bool,
    max_rows: Option<u64>,
}

async fn route(state: &State, req: &ApiRequest) -> Result<HttpResponse, ApiError> {
    if req.body.len() > state.config.max_body_bytes {
        return Err(ApiError::new(413, "PGRST413", "Payload Too Large"));
    }
    // The gateway refuses bad tokens before forwarding; refuse here too if one slipped through.
    if let Some(reason) = &req.ctx.token_error {
        let mut e = ApiError::new(401, "PGRST301", reason.clone());
        e.headers.push((
            "www-authenticate".into(),
            format!("Bearer error=\"invalid_token\", error_description=\"{reason}\""),
        ));
        return Err(e);
    }
    let target = target(&req.path)?;
    let method = req.method.as_str();
    if !matches!(
        method,
        "GET" | "HEAD" | "POST" | "PATCH" | "PUT" | "DELETE" | "OPTIONS"
    ) {
        return Err(ApiError::new(
            405,
            "PGRST117",
            format!("Unsupported HTTP method: {method}"),
        ));
    }
    if method == "OPTIONS" {
        let allow = match target {
            Target::Rpc(_) => "OPTIONS,GET,HEAD,POST",
            Target::Root => "OPTIONS,GET,HEAD",
            Target::Relation(_) => "OPTIONS,GET,HEAD,POST,PUT,PATCH,DELETE",
        };
        return Ok(Response::new(200).header("allow", allow.to_owned()).build());
    }
    let profile_header = if matches!(method, "GET" | "HEAD") {
        req.header("accept-profile")
    } else {
        req.header("content-profile")
    };
    let cache = state.cache.get();
    let exposed = &cache.schemas;
    let schema = match profile_header {
        None => exposed
            .first()
            .cloned()
            .unwrap_or_else(|| "public".to_owned()),
        Some(p) if exposed.iter().any(|s| s == p) => p.to_owned(),
        Some(p) => {
            return Err(
                ApiError::new(406, "PGRST106", format!("Invalid schema: {p}")).hint(format!(
                    "Only the following schemas are exposed: {}",
                    exposed.join(", ")
                )),
            );
        }
    };
    let prefer = Prefer::parse(req.header_joined("prefer").as_deref());
    if prefer.strict && !prefer.invalid.is_empty() {
        return Err(ApiError::new(
            400,
            "PGRST122",
            "Invalid preferences given with handling=strict",
        )
        .details(format!(
            "Invalid preferences: {}",
            prefer.invalid.join(", ")
        )));
    }
    let media = negotiate(req.header("accept"))?;
    let max_rows = cache.settings.max_rows.or(state.config.max_rows);
    let anon = req.ctx.role == "anon";
    let ctx = Ctx {
        state,
        cache,
        req,
        schema,
        profile_negotiated: profile_header.is_some(),
        prefer,
        media,
        anon,
        max_rows,
    };
    if matches!(ctx.media, Media::GeoJson) && ctx.cache.geojson_fn.is_none() {
        // PostGIS renders the features; without it the type is not on offer.
        return Err(ApiError::new(
            406,
            "PGRST107",
            "None of these media types are available: application/geo+json",
        ));
    }
    match target {
        Target::Root => {
            if !matches!(method, "GET" | "HEAD") {
                return Err(ApiError::new(
                    405,
                    "PGRST117",
                    format!("Unsupported HTTP method: {method}"),
                ));
            }
            if !matches!(ctx.media, Media::Json | Media::OpenApi) {
                return Err(ApiError::new(
                    406,
                    "PGRST107",
                    format!(
                        "None of these media types are available: {}",
                        req.header("accept").unwrap_or("")
                    ),
                ));
            }
            let mut params = Params::default();
            params.bind(ctx.schema.clone());
            let rows = db::run_rows(
                &state.pool,
                &ctx.settings(),
                crate::openapi::VISIBLE_SQL,
                &params,
            )
            .await?;
            let visible: crate::openapi::Visible = rows
                .first()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_default();
            let doc =
                crate::openapi::document(&ctx.cache, &ctx.schema, &ctx.cache.schemas, &visible);
            let body = if method == "HEAD" {
                String::new()
            } else {
                doc.to_string()
            };
            Ok(Response::new(200)
                .body("application/openapi+json; charset=utf-8", body.into())
                .build())
        }
        Target::Relation(name) => {
            if matches!(ctx.media, Media::OpenApi) {
                return Err(ApiError::new(
                    406,
                    "PGRST107",
                    "None of these media types are available: application/openapi+json",
                ));
            }
            let cache = ctx.cache.clone();
            let table = cache.table(&ctx.schema, &name).ok_or_else(|| {
                let e = ApiError::new(
                    404,
                    "PGRST205",
                    format!(
                        "Could not find the table '{}.{}' in the schema cache",
                        ctx.schema, name
                    ),
                );
                match cache.similar_table(&ctx.schema, &name) {
                    Some(t) => e.hint(format!("Perhaps you meant the table '{}.{t}'", ctx.schema)),
                    None => e,
                }
            })?;
            match method {
                "GET" | "HEAD" => read::read(&ctx, table).await,
                "POST" => write::insert(&ctx, table).await,
                "PATCH" | "DELETE" => write::update_delete(&ctx, table).await,
                _ => write::put(&ctx, table).await,
            }
        }
        Target::Rpc(name) => {
            if !matches!(method, "GET" | "HEAD" | "POST") {
                return Err(ApiError::new(
                    405,
                    "PGRST101",
                    format!("Cannot use the {method} method on RPC"),
                ));
            }
            rpc::rpc(&ctx, &name).await
        }
    }
}

impl Ctx<'_> {
    fn settings(&self) -> Settings {
        let mut claims = match &self.req.ctx.claims {
            Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        claims.insert("role".into(), Value::String(self.req.ctx.role.clone()));
        let mut path_items = vec![ident(&self.schema)];
        // Like PostgREST, the extra path follows even when it repeats the schema.
        for s in &self.state.config.extra_search_path {
            path_items.push(ident(s));
        }
        Settings {
            search_path: path_items.join(", "),
            role: self.req.ctx.role.clone(),
            claims: Value::Object(claims).to_string(),
            method: self.req.method.clone(),
            path: self.req.path.clone(),
            headers: self.req.headers_json().to_string(),
            cookies: self.req.cookies_json().to_string(),
            statement_timeout: self
                .state
                .config
                .statement_timeout
                .map(|d| d.as_millis().to_string()),
            timezone: self.prefer.timezone.clone(),
            anon: self.anon,
            role_settings: self
                .cache
                .role_settings
                .get(&self.req.ctx.role)
                .cloned()
                .unwrap_or_else(|| "{}".to_owned()),
        }
    }

    fn planner(&self) -> Planner<'_> {
        Planner::new(&self.cache, self.cache.settings.aggregates_enabled)
    }

    fn tx_override(&self) -> bool {
        self.cache.settings.tx_override
    }

    /// Whether a successful write commits.
    fn commit_wanted(&self) -> bool {
        if self.tx_override() {
            match self.prefer.tx {
                Some(TxPref::Rollback) => return false,
                Some(TxPref::Commit) => return true,
                None => {}
            }
        }
        !self.cache.settings.tx_rollback_default
    }

    fn applied(&self, extra: &[String]) -> Option<String> {
        let mut applied: Vec<String> = extra.to_vec();
        if let Some(c) = self.prefer.count {
            applied.push(
                match c {
                    CountPref::Exact => "count=exact",
                    CountPref::Planned => "count=planned",
                    CountPref::Estimated => "count=estimated",
                }
                .to_owned(),
            );
        }
        if self.tx_override() {
            match self.prefer.tx {
                Some(TxPref::Rollback) => applied.push("tx=rollback".into()),
                Some(TxPref::Commit) => applied.push("tx=commit".into()),
                None => {}
            }
        }
        if self.prefer.strict {
            applied.push("handling=strict".into());
            if let Some(n) = self.prefer.max_affected {
                applied.push(format!("max-affected={n}"));
            }
        }
        if let Some(tz) = &self.prefer.timezone {
            applied.push(format!("timezone={tz}"));
        }
        (!applied.is_empty()).then(|| applied.join(", "))
    }

    fn content_type(&self) -> &'static str {
        match self.media {
            Media::Csv => "text/csv; charset=utf-8",
            Media::GeoJson => "application/geo+json; charset=utf-8",
            Media::Object { .. } => "application/vnd.pgrst.object+json; charset=utf-8",
            Media::Array { .. } => "application/vnd.pgrst.array+json; charset=utf-8",
            _ => "application/json; charset=utf-8",
        }
    }

    /// Applies `response.status` / `response.headers` set by SQL.
    fn overrides(&self, mut resp: Response, out: &Outcome) -> Result<Response, ApiError> {
        if let Some(s) = &out.response_status {
            let status = s
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|s| (100..600).contains(s))
                .ok_or_else(|| {
                    ApiError::new(500, "PGRST112", "Invalid response status value")
                        .details(format!("{s} is not a valid status code"))
                })?;
            resp.set_status(status);
        }
        if let Some(h) = &out.response_headers {
            let bad = || {
                ApiError::new(500, "PGRST111", "Invalid response.headers")
                    .details("response.headers must be an array of single-key objects")
            };
            let Ok(Value::Array(items)) = serde_json::from_str::<Value>(h) else {
                return Err(bad());
            };
            for item in items {
                let Value::Object(m) = item else {
                    return Err(bad());
                };
                for (k, v) in m {
                    let v = v.as_str().ok_or_else(bad)?.to_owned();
                    resp = resp.header(&k.to_ascii_lowercase(), v);
                }
            }
        }
        Ok(resp)
    }

    fn finish(&self, mut resp: Response) -> Response {
        if self.profile_negotiated || self.cache.schemas.len() > 1 {
            resp = resp.header("content-profile", self.schema.clone());
        }
        resp
    }

    fn singular(&self) -> bool {
        matches!(self.media, Media::Object { .. })
    }
}

fn singular_error(n: i64) -> ApiError {
    ApiError::new(
        406,
        "PGRST116",
        "Cannot coerce the result to a single JSON object",
    )
    .details(format!("The result contains {n} rows"))
}

fn parse_int(what: &'static str, v: &str) -> Result<i64, ApiError> {
    v.trim().parse::<i64>().map_err(|_| {
        ApiError::parse(&parser::ParseError {
            what,
            input: v.to_owned(),
            column: 1,
            details: "unexpected input expecting an integer".into(),
        })
    })
}

/// Attaches query-string conditions, order and pagination to a node tree.
fn attach(root: &mut Node<'_>, q: &Query) -> Result<(), ApiError> {
    for (key, value) in &q.filters {
        let (path, field) = parser::parse_key(key).map_err(|e| ApiError::parse(&e))?;
        let filter = parser::parse_filter_value(field, value).map_err(|e| ApiError::parse(&e))?;
        node_at(root, &path)?
            .conditions
            .push(Condition::Filter(filter));
    }
    for (path, or, negated, value) in &q.logic {
        let tree = parser::parse_logic(*or, *negated, value).map_err(|e| ApiError::parse(&e))?;
        node_at(root, path)?.conditions.push(tree);
    }
    for (path, value) in &q.order {
        let terms: Vec<OrderTerm> = parser::parse_order(value).map_err(|e| ApiError::parse(&e))?;
        node_at(root, path)?.order.extend(terms);
    }
    for (path, value) in &q.limit {
        let n = parse_int("limit", value)?;
        if n < 0 {
            return Err(
                ApiError::new(416, "PGRST103", "Requested range not satisfiable")
                    .details("Limit should be greater than or equal to zero."),
            );
        }
        node_at(root, path)?.limit = Some(n);
    }
    for (path, value) in &q.offset {
        let n = parse_int("offset", value)?;
        if n < 0 {
            return Err(
                ApiError::new(416, "PGRST103", "Requested range not satisfiable")
                    .details("Offset should be greater than or equal to zero."),
            );
        }
        node_at(root, path)?.offset = Some(n);
    }
    Ok(())
}

/// Applies the `Range` header and `max_rows` to the root.
fn paginate(ctx: &Ctx<'_>, root: &mut Node<'_>) -> Result<(), ApiError> {
    if let Some(range) = ctx.req.header("range") {
        let range = range.trim().trim_start_matches("items=");
        if let Some((a, b)) = range.split_once('-') {
            let lower = a.trim().parse::<i64>().ok();
            let upper = b.trim().parse::<i64>().ok();
            if let Some(lower) = lower {
                if let Some(upper) = upper {
                    if upper < lower {
                        return Err(ApiError::new(416, "PGRST103", "Requested range not satisfiable")
                            .details("The lower boundary must be lower than or equal to the upper boundary in the Range header."));
                    }
                    let n = upper - lower + 1;
                    root.limit = Some(root.limit.map_or(n, |l| l.min(n)));
                }
                root.offset = Some(root.offset.unwrap_or(0).max(lower));
            }
        }
    }
    if let Some(max) = ctx.max_rows {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        root.limit = Some(root.limit.map_or(max, |l| l.min(max)));
    }
    Ok(())
}

fn select_items(q: &Query) -> Result<Vec<SelectItem>, ApiError> {
    parser::parse_select(q.select.as_deref().unwrap_or("*")).map_err(|e| ApiError::parse(&e))
}

/// `Content-Range` and status for a read of `out.page_total` rows from `offset`.
fn range(offset: i64, page: i64, total: Option<i64>) -> Result<(String, u16), ApiError> {
    let upper = offset + page - 1;
    let range = if page > 0 {
        format!("{offset}-{upper}")
    } else {
        "*".to_owned()
    };
    let total_s = total.map_or("*".to_owned(), |t| t.to_string());
    let status = match total {
        None => 200,
        Some(t) if offset > t && !(t == 0 && offset == 0) => {
            return Err(
                ApiError::new(416, "PGRST103", "Requested range not satisfiable")
                    .details(format!(
                        "An offset of {offset} was requested, but there are only {t} rows."
                    ))
                    .with_header("content-range", format!("*/{t}")),
            );
        }
        Some(t) if 1 + upper - offset < t => 206,
        Some(_) => 200,
    };
    Ok((format!("{range}/{total_s}"), status))
}

impl ApiError {
    fn with_header(mut self, k: &str, v: String) -> Self {
        self.headers.push((k.to_owned(), v));
        self
    }
}

fn table_source(t: &Table) -> Source<'_> {
    Source {
        schema: t.schema.clone(),
        name: t.name.clone(),
        columns: &t.columns,
        table: Some(t),
    }
}

/// The total for a count preference, as a SQL expression, plus an `EXPLAIN` statement for planned counts.
fn count_sql(
    ctx: &Ctx<'_>,
    r: &mut Renderer<'_>,
    root: &Node<'_>,
) -> Result<(String, Option<(String, Params)>), ApiError> {
    let Some(pref) = ctx.prefer.count else {
        return Ok(("null::int8".into(), None));
    };
    let count_body = |r: &mut Renderer<'_>| -> Result<String, ApiError> {
        let (from, laterals, conds) = r.from_where(root, true)?;
        let where_ = if conds.is_empty() {
            String::new()
        } else {
            format!(" where {}", conds.join(" and "))
        };
        Ok(format!("select 1 from {from}{laterals}{where_}"))
    };
    let body = count_body(r)?;
    // The estimate runs as its own statement, so it numbers its own parameters.
    let explain = if matches!(pref, CountPref::Planned | CountPref::Estimated) {
        let mut params = Params::default();
        let mut er = Renderer {
            params: &mut params,
            cache: r.cache,
        };
        let ebody = count_body(&mut er)?;
        Some((format!("explain (format json) {ebody}"), params))
    } else {
        None
    };
    Ok(match pref {
        CountPref::Planned => ("null::int8".into(), explain),
        _ => (
            format!("(select count(*) from ({body}) \"pgrst_c\")"),
            explain,
        ),
    })
}

fn resolve_total(ctx: &Ctx<'_>, out: &Outcome) -> Option<i64> {
    match ctx.prefer.count {
        Some(CountPref::Planned) => out.planned,
        Some(CountPref::Estimated) => match (ctx.max_rows, out.total) {
            (Some(max), Some(t)) if t > i64::try_from(max).unwrap_or(i64::MAX) => {
                out.planned.or(Some(t))
            }
            _ => out.total,
        },
        _ => out.total,
    }
}

async fn explain_plan(
    ctx: &Ctx<'_>,
    sql: &str,
    params: &Params,
    json: bool,
) -> Result<HttpResponse, ApiError> {
    if !ctx.cache.settings.plan_enabled {
        return Err(ApiError::new(
            406,
            "PGRST107",
            format!(
                "None of these media types are available: {}",
                ctx.req.header("accept").unwrap_or("")
            ),
        ));
    }
    let format = if json { "json" } else { "text" };
    // `options=analyze|verbose|...` from the Accept header, from a fixed list.
    let accept = ctx.req.header("accept").unwrap_or("").to_ascii_lowercase();
    let mut options = vec![format!("format {format}")];
    if let Some(opts) = accept
        .split(';')
        .find_map(|p| p.trim().strip_prefix("options="))
    {
        for o in opts.trim_matches('"').split('|') {
            if ["analyze", "verbose", "settings", "buffers", "wal"].contains(&o.trim()) {
                options.push(o.trim().to_owned());
            }
        }
    }
    let esql = format!("explain ({}) {sql}", options.join(", "));
    let rows = db::run_rows(&ctx.state.pool, &ctx.settings(), &esql, params).await?;
    let ct = if json {
        "application/vnd.pgrst.plan+json; charset=utf-8"
    } else {
        "application/vnd.pgrst.plan+text; charset=utf-8"
    };
    Ok(Response::new(200).body(ct, rows.join("\n").into()).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(range(0, 5, None).unwrap(), ("0-4/*".into(), 200));
        assert_eq!(range(0, 5, Some(5)).unwrap(), ("0-4/5".into(), 200));
        assert_eq!(range(0, 2, Some(5)).unwrap(), ("0-1/5".into(), 206));
        assert_eq!(range(0, 0, Some(0)).unwrap(), ("*/0".into(), 200));
        assert_eq!(range(5, 0, Some(5)).unwrap(), ("*/5".into(), 206));
        let e = range(10, 0, Some(5)).unwrap_err();
        assert_eq!(e.status, 416);
        assert_eq!(
            e.details,
            Value::String("An offset of 10 was requested, but there are only 5 rows.".into())
        );
    }

    #[test]
    fn targets() {
        assert!(matches!(target("/").unwrap(), Target::Root));
        assert!(matches!(target("/my%20table").unwrap(), Target::Relation(t) if t == "my table"));
        assert!(matches!(target("/rpc/f").unwrap(), Target::Rpc(f) if f == "f"));
        assert_eq!(
            target("/a/b/c").err().map(|e| e.code.clone()),
            Some("PGRST125".into())
        );
    }
}
