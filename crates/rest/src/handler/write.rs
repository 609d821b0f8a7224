//! Writes: `POST` (insert, upsert), `PUT`, `PATCH` and `DELETE`.

use ferrobase_proto::HttpResponse;
use serde_json::Value;

use super::*;

/// The JSON payload of a write: rows as a JSON array text and their keys.
pub(super) struct Payload {
    json: String,
    keys: Vec<String>,
    rows: usize,
}

pub(super) fn payload(ctx: &Ctx<'_>, allow_array: bool) -> Result<Payload, ApiError> {
    let ct = ctx
        .req
        .header("content-type")
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let invalid = || ApiError::new(400, "PGRST102", "Empty or invalid json");
    let value: Value = match ct.as_str() {
        "application/json" | "" => serde_json::from_slice(&ctx.req.body).map_err(|_| invalid())?,
        "text/csv" => csv_rows(&String::from_utf8_lossy(&ctx.req.body))?,
        "application/x-www-form-urlencoded" => {
            let text = String::from_utf8_lossy(&ctx.req.body);
            let mut m = serde_json::Map::new();
            for (k, v) in ferrobase_common::wire::query_pairs(&text) {
                m.insert(k, Value::String(v));
            }
            Value::Object(m)
        }
        other => {
            return Err(ApiError::new(
                400,
                "PGRST102",
                format!("Content-Type not acceptable: {other}"),
            ));
        }
    };
    let (rows, json): (Vec<&serde_json::Map<String, Value>>, String) = match &value {
        Value::Object(m) => (vec![m], format!("[{value}]")),
        Value::Array(items) if allow_array => {
            let mut rows = Vec::with_capacity(items.len());
            for i in items {
                rows.push(i.as_object().ok_or_else(invalid)?);
            }
            (rows, value.to_string())
        }
        _ => return Err(invalid()),
    };
    let keys: Vec<String> = rows
        .first()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    Ok(Payload {
        json,
        keys,
        rows: rows.len(),
    })
    .and_then(|p| {
        if ctx.req.query_pairs().iter().any(|(k, _)| k == "columns") {
            return Ok(p);
        }
        // Without `columns`, every object must have the same keys.
        for r in &rows {
            if r.len() != p.keys.len() || !p.keys.iter().all(|k| r.contains_key(k)) {
                return Err(ApiError::new(400, "PGRST102", "All object keys must match"));
            }
        }
        Ok(p)
    })
}

/// A CSV body (header row, then rows; unquoted `NULL` is null) as a JSON array of objects.
fn csv_rows(text: &str) -> Result<Value, ApiError> {
    let bad = |m: &str| ApiError::new(400, "PGRST102", format!("Invalid CSV body: {m}"));
    let mut records: Vec<Vec<Option<String>>> = Vec::new();
    let mut record: Vec<Option<String>> = Vec::new();
    let mut field = String::new();
    let mut quoted_field = false;
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut any = false;
    let end_field = |field: &mut String, quoted: &mut bool, record: &mut Vec<Option<String>>| {
        let v = std::mem::take(field);
        record.push(if !*quoted && v == "NULL" {
            None
        } else {
            Some(v)
        });
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        any = true;
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                in_quotes = true;
                quoted_field = true;
            }
            ',' => end_field(&mut field, &mut quoted_field, &mut record),
            '\r' => {}
            '\n' => {
                end_field(&mut field, &mut quoted_field, &mut record);
                records.push(std::mem::take(&mut record));
                any = false;
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(bad("unterminated quoted field"));
    }
    if any {
        end_field(&mut field, &mut quoted_field, &mut record);
        records.push(record);
    }
    let mut it = records.into_iter();
    let header: Vec<String> = it
        .next()
        .ok_or_else(|| bad("missing header row"))?
        .into_iter()
        .map(|h| h.unwrap_or_default())
        .collect();
    let mut rows = Vec::new();
    for rec in it {
        if rec.len() != header.len() {
            return Err(bad("every row must have as many fields as the header"));
        }
        let mut m = serde_json::Map::new();
        for (k, v) in header.iter().zip(rec) {
            m.insert(k.clone(), v.map_or(Value::Null, Value::String));
        }
        rows.push(Value::Object(m));
    }
    Ok(Value::Array(rows))
}

fn check_columns(table: &Table, cols: &[String]) -> Result<(), ApiError> {
    for c in cols {
        if table.column(c).is_none() {
            return Err(ApiError::new(
                400,
                "PGRST204",
                format!(
                    "Could not find the '{c}' column of '{}' in the schema cache",
                    table.name
                ),
            ));
        }
    }
    Ok(())
}

fn returning(ctx: &Ctx<'_>) -> ReturnPref {
    ctx.prefer.return_.unwrap_or(ReturnPref::Minimal)
}

/// The whole statement around the data-modifying `mutation` (as CTE
/// `pgrst_source`): the representation, counts, `Location` and, for merges,
/// how many rows were inserted rather than updated.
fn mutation_sql(
    ctx: &Ctx<'_>,
    table: &Table,
    q: &Query,
    r: &mut Renderer<'_>,
    mutation: &str,
    merge_flag: bool,
) -> Result<String, ApiError> {
    let ret = returning(ctx);
    let flag = if merge_flag {
        ", (xmax = 0) as \"pgrst_inserted\""
    } else {
        ""
    };
    let inserted = if merge_flag {
        "(select count(*) filter (where \"pgrst_inserted\") from pgrst_source)"
    } else {
        "null::int8"
    };
    let location = if ret == ReturnPref::HeadersOnly && !table.pk.is_empty() {
        let mut pairs = Vec::new();
        for c in &table.pk {
            let k = r.params.bind(c.clone());
            pairs.push(format!("{k}::text, \"pgrst_loc\".{}", ident(c)));
        }
        format!(
            "(select json_build_object({})::text from pgrst_source \"pgrst_loc\" limit 1)",
            pairs.join(", ")
        )
    } else {
        "null::text".to_owned()
    };
    if ret == ReturnPref::Representation {
        let items = select_items(q)?;
        let mut planner = Planner::new(r.cache, r.cache.settings.aggregates_enabled);
        let mut node = planner.node(
            table.name.clone(),
            table_source(table),
            "pgrst_source".into(),
            &items,
        )?;
        // Root filters shaped the write itself; embed-scoped ones shape the representation.
        attach(&mut node, &q.scoped(false))?;
        let rows = r.select(&node, &[], false)?;
        let body = r.body(ctx.media, None, &node.names);
        Ok(format!(
            "with pgrst_source as ({mutation} returning {}.*{flag}), pgrst_rows as ({rows}) \
             select null::int8, (select count(*) from pgrst_source), {body}, \
             current_setting('response.headers', true), current_setting('response.status', true), \
             {location}, {inserted} from pgrst_rows \"pgrst_t\"",
            ident(&table.name)
        ))
    } else {
        let ret_cols = if ret == ReturnPref::HeadersOnly && !table.pk.is_empty() {
            table
                .pk
                .iter()
                .map(|c| format!("{}.{}", ident(&table.name), ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            "1".to_owned()
        };
        Ok(format!(
            "with pgrst_source as ({mutation} returning {ret_cols}{flag}) \
             select null::int8, count(*), ''::text, \
             current_setting('response.headers', true), current_setting('response.status', true), \
             {location}, {inserted} from pgrst_source"
        ))
    }
}

fn location_header(table: &Table, loc: &str) -> Option<String> {
    let Value::Object(m) = serde_json::from_str::<Value>(loc).ok()? else {
        return None;
    };
    let parts: Vec<String> = table
        .pk
        .iter()
        .map(|c| {
            let v = match m.get(c) {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            format!("{}=eq.{}", encode(c), encode(&v))
        })
        .collect();
    Some(format!("/{}?{}", table.name, parts.join("&")))
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `PUT /t?pk=eq.v`: replaces or creates the one row the primary key names.
pub(super) async fn put(ctx: &Ctx<'_>, table: &Table) -> Result<HttpResponse, ApiError> {
    let q = Query::from_pairs(ctx.req.query_pairs());
    if !q.limit.is_empty() || !q.offset.is_empty() || ctx.req.header("range").is_some() {
        return Err(ApiError::new(
            400,
            "PGRST114",
            "Range header and limit/offset querystring parameters are not allowed for PUT",
        ));
    }
    let not_pk = || {
        ApiError::new(
            405,
            "PGRST105",
            "Filters must include all and only primary key columns with 'eq' operators",
        )
    };
    if table.pk.is_empty() || !q.logic.is_empty() {
        return Err(not_pk());
    }
    let mut keys: Vec<(String, String)> = Vec::new();
    for (k, v) in &q.filters {
        let (path, field) = parser::parse_key(k).map_err(|e| ApiError::parse(&e))?;
        let f = parser::parse_filter_value(field, v).map_err(|e| ApiError::parse(&e))?;
        match f.operation {
            parser::Operation::Simple {
                op: parser::Op::Eq,
                value,
            } if path.is_empty() && !f.negated && f.field.path.is_empty() => {
                keys.push((f.field.name, value));
            }
            _ => return Err(not_pk()),
        }
    }
    let mut named: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    named.sort_unstable();
    named.dedup();
    let mut pk: Vec<&str> = table.pk.iter().map(String::as_str).collect();
    pk.sort_unstable();
    if named != pk || keys.len() != pk.len() {
        return Err(not_pk());
    }
    let p = payload(ctx, true)?;
    if p.rows != 1 {
        return Err(ApiError::new(
            400,
            "PGRST102",
            "Payload must contain exactly one object",
        ));
    }
    let row: Value = serde_json::from_str(&p.json).unwrap_or(Value::Null);
    for (k, v) in &keys {
        let given = match row.get(0).and_then(|r| r.get(k)) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        if given.as_deref() != Some(v.as_str()) {
            return Err(ApiError::new(
                400,
                "PGRST115",
                "Payload values do not match URL in primary key column(s)",
            ));
        }
    }
    write_rows(ctx, table, &q, p, true).await
}

pub(super) async fn insert(ctx: &Ctx<'_>, table: &Table) -> Result<HttpResponse, ApiError> {
    let q = Query::from_pairs(ctx.req.query_pairs());
    let p = payload(ctx, true)?;
    write_rows(ctx, table, &q, p, false).await
}

/// Inserts (or, for `put`, upserts on the primary key) the payload rows.
async fn write_rows(
    ctx: &Ctx<'_>,
    table: &Table,
    q: &Query,
    p: Payload,
    put: bool,
) -> Result<HttpResponse, ApiError> {
    let cols = match &q.columns {
        Some(c) => parser::parse_columns(c).map_err(|e| ApiError::parse(&e))?,
        None => p.keys.clone(),
    };
    check_columns(table, &cols)?;
    let conflict: Vec<String> = match &q.on_conflict {
        Some(c) => {
            let c = parser::parse_columns(c).map_err(|e| ApiError::parse(&e))?;
            check_columns(table, &c)?;
            c
        }
        None => table.pk.clone(),
    };
    let resolution = if put {
        Some(Resolution::Merge)
    } else {
        ctx.prefer.resolution.filter(|_| !conflict.is_empty())
    };
    let mut params = Params::default();
    let mut r = Renderer {
        params: &mut params,
        cache: &ctx.cache,
    };
    let data = r.params.bind(p.json.clone());
    let t = ident(&table.name);
    let target = format!("{} as {t}", qualified(&table.schema, &table.name));
    let col_list: Vec<String> = cols.iter().map(|c| ident(c)).collect();
    let mutation = if cols.is_empty() {
        // An empty array: nothing to insert.
        format!(
            "insert into {target} select * from json_populate_recordset(null::{}, {data}::json)",
            qualified(&table.schema, &table.name)
        )
    } else {
        // With `missing=default`, every row evaluates every listed column's default
        // (as PostgREST does, so sequences advance alike) and uses it where the
        // row's object lacks the key.
        let default_of = |c: &String| table.column(c).and_then(|col| col.default.clone());
        let values: Vec<String> = if ctx.prefer.missing_default {
            cols.iter()
                .enumerate()
                .map(|(i, c)| {
                    let key = r.params.bind(c.clone());
                    let default = if default_of(c).is_some() {
                        format!("\"pgrst_d\".\"pgrst_d{i}\"")
                    } else {
                        "null".to_owned()
                    };
                    format!(
                        "case when \"pgrst_j\"::jsonb ? {key}::text then (json_populate_record(null::{}, \"pgrst_j\")).{} else {default} end",
                        qualified(&table.schema, &table.name),
                        ident(c)
                    )
                })
                .collect()
        } else {
            col_list
                .iter()
                .map(|c| format!("\"pgrst_body\".{c}"))
                .collect()
        };
        let from = if ctx.prefer.missing_default {
            let mut defaults: Vec<String> = cols
                .iter()
                .enumerate()
                .filter_map(|(i, c)| default_of(c).map(|d| format!("{d} as \"pgrst_d{i}\"")))
                .collect();
            if defaults.is_empty() {
                defaults.push("1 as \"pgrst_none\"".to_owned());
            }
            // The lateral refers to the row, so it runs once per row.
            format!(
                "json_array_elements({data}::json) as \"pgrst_e\"(\"pgrst_j\") cross join lateral (select {} from (select \"pgrst_j\") as \"pgrst_r\") as \"pgrst_d\"",
                defaults.join(", ")
            )
        } else {
            format!(
                "json_populate_recordset(null::{}, {data}::json) as \"pgrst_body\"",
                qualified(&table.schema, &table.name)
            )
        };
        let mut m = format!(
            "insert into {target} ({}) select {} from {from}",
            col_list.join(", "),
            values.join(", ")
        );
        if let Some(res) = resolution {
            let target_cols: Vec<String> = conflict.iter().map(|c| ident(c)).collect();
            match res {
                Resolution::Ignore => {
                    m.push_str(&format!(
                        " on conflict ({}) do nothing",
                        target_cols.join(", ")
                    ));
                }
                Resolution::Merge => {
                    let sets: Vec<String> = col_list
                        .iter()
                        .map(|c| format!("{c} = excluded.{c}"))
                        .collect();
                    m.push_str(&format!(
                        " on conflict ({}) do update set {}",
                        target_cols.join(", "),
                        sets.join(", ")
                    ));
                }
            }
        }
        m
    };
    if cols.is_empty() && p.rows > 0 {
        return Err(ApiError::not_implemented("Inserting rows with no columns"));
    }
    let merge = resolution == Some(Resolution::Merge);
    let sql = mutation_sql(ctx, table, q, &mut r, &mutation, merge)?;
    if let Media::Plan { json } = ctx.media {
        // The explained write is always rolled back.
        return explain_plan(ctx, &sql, &params, json).await;
    }
    let singular = ctx.singular() && returning(ctx) == ReturnPref::Representation;
    let end = end_of(ctx.commit_wanted(), None, singular);
    let out = db::run(
        &ctx.state.requests,
        &ctx.settings(),
        Access::ReadWrite,
        &sql,
        &params,
        None,
        end,
    )
    .await?;
    let status = match resolution {
        Some(Resolution::Merge) if out.page_total == 0 || out.inserted == Some(0) => 200,
        _ => 201,
    };
    if put {
        let ret = returning(ctx);
        let mut resp = Response::new(if ret == ReturnPref::Representation {
            200
        } else {
            204
        });
        if ret == ReturnPref::Representation {
            resp = resp.body(ctx.content_type(), out.body.clone().into());
        }
        if let Some(a) = ctx.applied(&[]) {
            resp = resp.header("preference-applied", a);
        }
        let resp = ctx.overrides(resp, &out)?;
        return Ok(ctx.finish(resp).build());
    }
    let mut applied = Vec::new();
    match resolution {
        Some(Resolution::Merge) => applied.push("resolution=merge-duplicates".to_owned()),
        Some(Resolution::Ignore) => applied.push("resolution=ignore-duplicates".to_owned()),
        None => {}
    }
    if ctx.prefer.missing_default {
        applied.push("missing=default".into());
    }
    write_response(ctx, table, &out, status, applied, "*/*", "POST")
}

fn write_response(
    ctx: &Ctx<'_>,
    table: &Table,
    out: &Outcome,
    status: u16,
    mut applied: Vec<String>,
    range: &str,
    method: &str,
) -> Result<HttpResponse, ApiError> {
    let ret = returning(ctx);
    if let Some(r) = ctx.prefer.return_ {
        applied.insert(
            0,
            match r {
                ReturnPref::Minimal => "return=minimal",
                ReturnPref::HeadersOnly => "return=headers-only",
                ReturnPref::Representation => "return=representation",
            }
            .to_owned(),
        );
    }
    let content_range = match ctx.prefer.count {
        Some(_) => {
            let front = range.split('/').next().unwrap_or("*");
            format!("{front}/{}", out.page_total)
        }
        None => range.to_owned(),
    };
    let (status, body) = match ret {
        ReturnPref::Representation => (
            if method == "POST" { status } else { 200 },
            out.body.clone(),
        ),
        _ => (if method == "POST" { status } else { 204 }, String::new()),
    };
    let mut resp = Response::new(status).header("content-range", content_range);
    if !body.is_empty() || ret == ReturnPref::Representation {
        resp = resp.body(ctx.content_type(), body.into());
    }
    if ret == ReturnPref::HeadersOnly
        && let Some(loc) = out
            .location
            .as_deref()
            .and_then(|l| location_header(table, l))
    {
        resp = resp.header("location", loc);
    }
    if let Some(a) = ctx.applied(&applied) {
        resp = resp.header("preference-applied", a);
    }
    let resp = ctx.overrides(resp, out)?;
    Ok(ctx.finish(resp).build())
}

pub(super) async fn update_delete(ctx: &Ctx<'_>, table: &Table) -> Result<HttpResponse, ApiError> {
    let is_patch = ctx.req.method == "PATCH";
    let q = Query::from_pairs(ctx.req.query_pairs());
    let mut planner = ctx.planner();
    let mut filter_node = planner.node(
        table.name.clone(),
        table_source(table),
        qualified(&table.schema, &table.name),
        &[],
    )?;
    // Only root-level filters, order and limit shape the write.
    attach(&mut filter_node, &q.scoped(true))?;
    let mut params = Params::default();
    let mut r = Renderer {
        params: &mut params,
        cache: &ctx.cache,
    };
    let mut conds = Vec::new();
    for c in &filter_node.conditions {
        conds.push(r.condition(&filter_node, c)?);
    }
    let t = ident(&table.name);
    let qt = qualified(&table.schema, &table.name);
    if filter_node.limit.is_some() || filter_node.offset.is_some() {
        let inner = r.ctid_select(&filter_node, &conds)?;
        conds = vec![format!("{t}.ctid = any(array({inner}))")];
    }
    let where_ = if conds.is_empty() {
        String::new()
    } else {
        format!(" where {}", conds.join(" and "))
    };
    let mutation = if is_patch {
        let p = payload(ctx, false)?;
        let cols = match &q.columns {
            Some(c) => parser::parse_columns(c).map_err(|e| ApiError::parse(&e))?,
            None => p.keys.clone(),
        };
        check_columns(table, &cols)?;
        if cols.is_empty() {
            // Nothing to set: an update that matches no row.
            let first = ident(
                &table
                    .columns
                    .first()
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
            );
            format!("update {qt} as {t} set {first} = {t}.{first} where false")
        } else {
            let data = r.params.bind(p.json.clone());
            let sets: Vec<String> = cols
                .iter()
                .map(|c| {
                    // With `missing=default`, a listed column absent from the body gets its default.
                    if ctx.prefer.missing_default && !p.keys.contains(c) {
                        format!("{} = default", ident(c))
                    } else {
                        format!("{} = \"pgrst_body\".{}", ident(c), ident(c))
                    }
                })
                .collect();
            format!(
                "update {qt} as {t} set {} from (select * from json_populate_recordset(null::{qt}, {data}::json) limit 1) as \"pgrst_body\"{where_}",
                sets.join(", ")
            )
        }
    } else {
        format!("delete from {qt} as {t}{where_}")
    };
    let sql = mutation_sql(ctx, table, &q, &mut r, &mutation, false)?;
    if let Media::Plan { json } = ctx.media {
        return explain_plan(ctx, &sql, &params, json).await;
    }
    let singular = ctx.singular() && returning(ctx) == ReturnPref::Representation;
    let strict_max = ctx.prefer.max_affected.filter(|_| ctx.prefer.strict);
    let commit = ctx.commit_wanted();
    let end = end_of(commit, strict_max, singular);
    let out = db::run(
        &ctx.state.requests,
        &ctx.settings(),
        Access::ReadWrite,
        &sql,
        &params,
        None,
        end,
    )
    .await?;
    let range = if is_patch && out.page_total > 0 {
        format!("0-{}/*", out.page_total - 1)
    } else {
        "*/*".to_owned()
    };
    write_response(ctx, table, &out, 200, Vec::new(), &range, &ctx.req.method)
}
