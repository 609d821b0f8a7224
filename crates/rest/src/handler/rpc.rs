//! Functions: `/rpc/<name>` over `POST`, `GET` and `HEAD`.

use ferrobase_proto::HttpResponse;
use serde_json::Value;

use super::*;

/// Which function `/rpc/name` calls for the given argument names.
fn choose_function<'c>(
    cache: &'c SchemaCache,
    schema: &str,
    name: &str,
    keys: &[String],
    post: bool,
) -> Result<(&'c Function, bool), ApiError> {
    let all: Vec<&Function> = cache
        .functions(schema, name)
        .iter()
        .filter(|f| f.rpc_callable())
        .collect();
    let matches: Vec<&Function> = all
        .iter()
        .copied()
        .filter(|f| {
            let names: Vec<&str> = f.inputs().map(|a| a.name.as_str()).collect();
            keys.iter().all(|k| names.contains(&k.as_str()))
                && f.inputs()
                    .take(f.required_inputs())
                    .all(|a| keys.iter().any(|k| k == &a.name))
        })
        .collect();
    match matches.len() {
        1 => return Ok((matches[0], matches[0].single_unnamed_input())),
        0 => {}
        _ => {
            // Fewest arguments first, then by signature text (as PostgREST lists them).
            let mut sigs: Vec<(usize, String)> = matches
                .iter()
                .map(|f| {
                    let args: Vec<String> = f
                        .inputs()
                        .map(|a| format!("{} => {}", a.name, a.type_name))
                        .collect();
                    (args.len(), format!("{schema}.{name}({})", args.join(", ")))
                })
                .collect();
            sigs.sort();
            let sigs: Vec<String> = sigs.into_iter().map(|(_, s)| s).collect();
            return Err(ApiError::new(
                300,
                "PGRST203",
                format!("Could not choose the best candidate function between: {}", sigs.join(", ")),
            )
            .hint("Try renaming the parameters or the function itself in the database so function overloading can be resolved"));
        }
    }
    // A single unnamed json/jsonb parameter takes the whole body.
    if post {
        let single: Vec<&Function> = all
            .iter()
            .copied()
            .filter(|f| {
                let inputs: Vec<_> = f.inputs().collect();
                inputs.len() == 1
                    && inputs[0].name.is_empty()
                    && matches!(inputs[0].type_name.as_str(), "json" | "jsonb")
            })
            .collect();
        if single.len() == 1 {
            return Ok((single[0], true));
        }
    }
    let with = if keys.is_empty() {
        " without parameters".to_owned()
    } else {
        format!("({})", keys.join(", "))
    };
    let params_txt = match keys.len() {
        0 => "without parameters".to_owned(),
        1 => format!("with parameter {}", keys[0]),
        _ => format!("with parameters {}", keys.join(", ")),
    };
    let e = ApiError::new(
        404,
        "PGRST202",
        format!("Could not find the function {schema}.{name}{with} in the schema cache"),
    )
    .details(format!(
        "Searched for the function {schema}.{name} {params_txt}{}, but no matches were found in the schema cache.",
        if post { " or with a single unnamed json/jsonb parameter" } else { "" }
    ));
    let computed_fields_only = cache
        .functions(schema, name)
        .iter()
        .all(|f| cache.is_computed(f));
    let similar = if !all.is_empty() {
        Some(name.to_owned())
    } else if cache.functions(schema, name).is_empty() || !computed_fields_only {
        cache.similar_function(schema, name)
    } else {
        // The name is a computed field of a table, not a function to call: no guess.
        None
    };
    Err(match similar {
        Some(f) => e.hint(format!(
            "Perhaps you meant to call the function {schema}.{f}"
        )),
        None => e,
    })
}

/// An argument's type as SQL without an implied length: `format_type` prints
/// `character` and `bit`, which in a cast or a column definition mean
/// `character(1)` and `bit(1)`, while an argument takes values of any length.
fn arg_type(type_name: &str) -> String {
    let (base, dims) = type_name.split_at(type_name.find('[').unwrap_or(type_name.len()));
    let base = match base {
        "character" => "bpchar",
        "bit" => "\"bit\"",
        other => other,
    };
    format!("{base}{dims}")
}

pub(super) async fn rpc(ctx: &Ctx<'_>, name: &str) -> Result<HttpResponse, ApiError> {
    let post = ctx.req.method == "POST";
    let pairs = ctx.req.query_pairs();
    let cache = ctx.cache.clone();
    let ct = ctx
        .req
        .header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // A text/plain, octet-stream or XML body is the single unnamed argument of that type.
    let raw_type = match ct.as_str() {
        "text/plain" if post => Some("text"),
        "application/octet-stream" if post => Some("bytea"),
        "text/xml" if post => Some("xml"),
        _ => None,
    };
    let (args_json, keys): (String, Vec<String>) = if let Some(ty) = raw_type {
        let text = if ty == "bytea" {
            let mut hex = String::from("\\x");
            for b in ctx.req.body.iter() {
                hex.push_str(&format!("{b:02x}"));
            }
            hex
        } else {
            String::from_utf8(ctx.req.body.to_vec())
                .map_err(|_| ApiError::new(400, "PGRST102", "The body is not valid UTF-8"))?
        };
        (text, Vec::new())
    } else if post {
        let body: &[u8] = if ctx.req.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &ctx.req.body
        };
        let v: Value = serde_json::from_slice(body)
            .map_err(|_| ApiError::new(400, "PGRST102", "Empty or invalid json"))?;
        let keys = match &v {
            Value::Object(m) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        (v.to_string(), keys)
    } else {
        // Every parameter naming an argument of some overload is an argument.
        let arg_names: Vec<String> = cache
            .functions(&ctx.schema, name)
            .iter()
            .flat_map(|f| f.inputs().map(|a| a.name.clone()))
            .collect();
        let mut m = serde_json::Map::new();
        for (k, v) in &pairs {
            if arg_names.contains(k) {
                match m.get_mut(k) {
                    Some(Value::Array(a)) => a.push(Value::String(v.clone())),
                    Some(prev) => {
                        let first = prev.take();
                        *prev = Value::Array(vec![first, Value::String(v.clone())]);
                    }
                    None => {
                        m.insert(k.clone(), Value::String(v.clone()));
                    }
                }
            }
        }
        let keys = m.keys().cloned().collect();
        (Value::Object(m).to_string(), keys)
    };
    let (f, whole_body) = match raw_type {
        Some(ty) => {
            let found = cache.functions(&ctx.schema, name).iter().find(|f| {
                let inputs: Vec<_> = f.inputs().collect();
                inputs.len() == 1 && inputs[0].name.is_empty() && inputs[0].type_name == ty
            });
            match found {
                Some(f) => (f, true),
                None => {
                    return Err(ApiError::new(
                        404,
                        "PGRST202",
                        format!(
                            "Could not find the function {}.{name} with a single unnamed {ty} parameter in the schema cache",
                            ctx.schema
                        ),
                    )
                    .details(format!(
                        "Searched for the function {}.{name} with a single unnamed {ty} parameter, but no matches were found in the schema cache.",
                        ctx.schema
                    )));
                }
            }
        }
        None => choose_function(&cache, &ctx.schema, name, &keys, post)?,
    };
    // Repeated GET parameters of a variadic argument become an array literal.
    let args_json = if !post {
        let mut v: Value = serde_json::from_str(&args_json).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            for a in f.inputs() {
                if let Some(Value::Array(items)) = m.get(&a.name) {
                    let strings: Vec<String> = items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect();
                    m.insert(
                        a.name.clone(),
                        Value::String(crate::plan::array_literal(&strings)),
                    );
                } else if a.mode == "v"
                    && let Some(Value::String(s)) = m.get(&a.name)
                {
                    let s = s.clone();
                    m.insert(
                        a.name.clone(),
                        Value::String(crate::plan::array_literal(&[s])),
                    );
                }
            }
        }
        v.to_string()
    } else {
        args_json
    };
    let q = Query::from_pairs(
        pairs
            .into_iter()
            .filter(|(k, _)| post || !keys.contains(k))
            .collect(),
    );
    let mut params = Params::default();
    let fq = qualified(&f.schema, &f.name);
    let given_any = f.inputs().any(|a| keys.contains(&a.name));
    let data = if whole_body || given_any {
        params.bind(args_json)
    } else {
        String::new()
    };
    let call = if whole_body {
        let ty = f
            .inputs()
            .next()
            .map(|a| a.type_name.clone())
            .unwrap_or_else(|| "json".into());
        format!("{fq}({data}::{ty})")
    } else {
        let given: Vec<&crate::schema::Arg> =
            f.inputs().filter(|a| keys.contains(&a.name)).collect();
        if given.is_empty() {
            format!("{fq}()")
        } else {
            // A JSON body's values are typed by the arguments; query-string
            // values are text read by the argument type's input function, as
            // a literal would be (`json_to_record` would keep a json/jsonb
            // argument's text as a JSON string instead of parsing it).
            let defs: Vec<String> = given
                .iter()
                .map(|a| {
                    let ty = if post {
                        arg_type(&a.type_name)
                    } else {
                        "text".to_owned()
                    };
                    format!("{} {ty}", ident(&a.name))
                })
                .collect();
            let args: Vec<String> = given
                .iter()
                .map(|a| {
                    let v = if a.mode == "v" { "variadic " } else { "" };
                    let cast = if post {
                        String::new()
                    } else {
                        format!("::{}", arg_type(&a.type_name))
                    };
                    format!("{v}{} => (select {}{cast} from json_to_record({data}::json) as \"pgrst_args\"({})) ", ident(&a.name), ident(&a.name), defs.join(", "))
                })
                .collect();
            format!("{fq}({})", args.join(", "))
        }
    };
    let strict_max = ctx.prefer.max_affected.filter(|_| ctx.prefer.strict);
    if strict_max.is_some() && !f.returns_set {
        return Err(ApiError::new(
            400,
            "PGRST128",
            "Function must return SETOF or TABLE when max-affected preference is used with handling=strict",
        ));
    }
    let access = if !post || matches!(f.volatility.as_str(), "s" | "i") {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let scalar_col: Option<String>;
    let owned_cols;
    let (columns, table): (&[crate::schema::Column], Option<&Table>) = if f.returns_rows() {
        scalar_col = None;
        let t = f.return_rel.as_ref().and_then(|(s, n)| cache.table(s, n));
        (&f.return_columns, t)
    } else {
        scalar_col = Some(f.name.clone());
        owned_cols = vec![crate::schema::Column {
            name: f.name.clone(),
            type_name: f.return_type.clone(),
            nullable: true,
            default: None,
            description: None,
        }];
        (&owned_cols, None)
    };
    let source = Source {
        schema: f.schema.clone(),
        name: f.name.clone(),
        columns,
        table,
    };
    let items = if scalar_col.is_some() {
        vec![SelectItem::Star]
    } else {
        select_items(&q)?
    };
    let mut planner = ctx.planner();
    let mut root = planner.node(f.name.clone(), source, call, &items)?;
    // Filters apply to every result shape; a scalar's only column is named after the function.
    attach(&mut root, &q)?;
    if f.returns_set {
        paginate(ctx, &mut root)?;
    }
    let offset = root.offset.unwrap_or(0);
    let mut r = Renderer {
        params: &mut params,
        cache: &cache,
    };
    let source_sql = r.select(&root, &[], true)?;
    let (total, explain) = count_sql(ctx, &mut r, &root)?;
    let media = if f.returns_set || ctx.singular() {
        ctx.media
    } else if matches!(ctx.media, Media::Csv) {
        Media::Csv
    } else {
        Media::Object {
            strip_nulls: matches!(ctx.media, Media::Array { strip_nulls: true }),
        }
    };
    let body = if f.is_void() {
        "''::text".to_owned()
    } else {
        r.body(media, scalar_col.as_deref(), &root.names)
    };
    let body = if !f.returns_set && !f.is_void() && !matches!(media, Media::Csv) {
        // A single value or row: `null` rather than nothing.
        format!("coalesce(nullif({body}, ''), 'null')")
    } else {
        body
    };
    let sql = format!(
        "with pgrst_source as ({source_sql}) select {total}, count(*)::int8, {body}, \
         current_setting('response.headers', true), current_setting('response.status', true), \
         null::text, null::int8 from pgrst_source \"pgrst_t\""
    );
    if let Media::Plan { json } = ctx.media {
        return explain_plan(ctx, &sql, &params, json).await;
    }
    let singular = ctx.singular() && f.returns_set;
    let commit = ctx.commit_wanted();
    let end = end_of(commit, strict_max, singular);
    let out = db::run(
        &ctx.state.requests,
        &ctx.settings(),
        access,
        &sql,
        &params,
        explain.as_ref().map(|(s, p)| (s.as_str(), p)),
        end,
    )
    .await?;
    if f.is_void() {
        let mut resp = Response::new(204);
        if let Some(a) = ctx.applied(&[]) {
            resp = resp.header("preference-applied", a);
        }
        let resp = ctx.overrides(resp, &out)?;
        return Ok(ctx.finish(resp).build());
    }
    if !f.returns_set {
        let body = if ctx.req.method == "HEAD" {
            String::new()
        } else {
            out.body.clone()
        };
        let mut resp = Response::new(200)
            .body(ctx.content_type(), body.into())
            .header(
                "content-range",
                format!(
                    "0-0/{}",
                    resolve_total(ctx, &out).map_or_else(|| "*".to_owned(), |t| t.to_string())
                ),
            );
        if let Some(a) = ctx.applied(&[]) {
            resp = resp.header("preference-applied", a);
        }
        let resp = ctx.overrides(resp, &out)?;
        return Ok(ctx.finish(resp).build());
    }
    super::read::respond_read(ctx, &out, offset, &format!("/rpc/{name}"))
}
