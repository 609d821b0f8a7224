//! The OpenAPI (Swagger 2.0) description served at `GET /`, built from the
//! schema cache.

use serde_json::{Map, Value, json};

use crate::schema::SchemaCache;

fn format_of(type_name: &str) -> (&'static str, Option<&'static str>) {
    let t = type_name.trim_end_matches("[]");
    if type_name.ends_with("[]") {
        return ("array", None);
    }
    match t {
        "smallint" | "integer" | "bigint" => ("integer", None),
        "numeric" | "real" | "double precision" => ("number", None),
        "boolean" => ("boolean", None),
        "json" | "jsonb" => ("object", None),
        _ => ("string", None),
    }
}

/// What the requesting role may use: relation and function names.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Visible {
    #[serde(rename = "t")]
    pub tables: Vec<String>,
    #[serde(rename = "f")]
    pub functions: Vec<String>,
}

/// Lists, as the requesting role, the relations and functions of `$1` it holds privileges on.
pub const VISIBLE_SQL: &str = "select json_build_object(\
  't', coalesce((select json_agg(c.relname) from pg_catalog.pg_class c \
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
    where n.nspname = $1 and c.relkind in ('r', 'v', 'm', 'f', 'p') \
      and pg_catalog.has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')), '[]'), \
  'f', coalesce((select json_agg(distinct p.proname) from pg_catalog.pg_proc p \
    join pg_catalog.pg_namespace n on n.oid = p.pronamespace \
    where n.nspname = $1 and pg_catalog.has_function_privilege(p.oid, 'EXECUTE')), '[]'))::text";

/// The document for `schema`, listing only what `visible` names.
pub fn document(cache: &SchemaCache, schema: &str, exposed: &[String], visible: &Visible) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    paths.insert(
        "/".into(),
        json!({"get": {"produces": ["application/openapi+json", "application/json"], "responses": {"200": {"description": "OK"}}, "summary": "OpenAPI description (this document)", "tags": ["Introspection"]}}),
    );
    let mut tables: Vec<_> = cache
        .tables
        .values()
        .filter(|t| t.schema == schema && visible.tables.contains(&t.name))
        .collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    for t in tables {
        let mut props = Map::new();
        let mut required = Vec::new();
        let mut row_filters = Vec::new();
        for c in &t.columns {
            let (ty, _) = format_of(&c.type_name);
            let mut p = json!({"format": c.type_name, "type": ty});
            if let Some(d) = &c.description {
                p["description"] = Value::String(d.clone());
            }
            if let Some(d) = &c.default {
                p["default"] = Value::String(d.clone());
            }
            if t.pk.contains(&c.name) {
                let note = "Note:\nThis is a Primary Key.<pk/>";
                p["description"] = Value::String(match &c.description {
                    Some(d) => format!("{d}\n\n{note}"),
                    None => note.into(),
                });
            }
            if !c.nullable && c.default.is_none() {
                required.push(Value::String(c.name.clone()));
            }
            props.insert(c.name.clone(), p);
            row_filters
                .push(json!({"$ref": format!("#/parameters/rowFilter.{}.{}", t.name, c.name)}));
        }
        let mut def = json!({"properties": props, "type": "object"});
        if !required.is_empty() {
            def["required"] = Value::Array(required);
        }
        if let Some(d) = &t.description {
            def["description"] = Value::String(d.clone());
        }
        definitions.insert(t.name.clone(), def);
        let tag = json!([t.name]);
        let mut get_params = row_filters.clone();
        for p in [
            "select",
            "order",
            "range",
            "rangeUnit",
            "offset",
            "limit",
            "preferCount",
        ] {
            get_params.push(json!({"$ref": format!("#/parameters/{p}")}));
        }
        let mut ops = json!({
            "get": {"parameters": get_params, "responses": {"200": {"description": "OK", "schema": {"items": {"$ref": format!("#/definitions/{}", t.name)}, "type": "array"}}, "206": {"description": "Partial Content"}}, "tags": tag},
        });
        if t.kind != "v" && t.kind != "m" {
            ops["post"] = json!({"parameters": [{"$ref": format!("#/parameters/body.{}", t.name)}, {"$ref": "#/parameters/select"}, {"$ref": "#/parameters/preferPost"}], "responses": {"201": {"description": "Created"}}, "tags": tag});
            let mut patch_params = row_filters.clone();
            patch_params.push(json!({"$ref": format!("#/parameters/body.{}", t.name)}));
            patch_params.push(json!({"$ref": "#/parameters/preferReturn"}));
            ops["patch"] = json!({"parameters": patch_params, "responses": {"204": {"description": "No Content"}}, "tags": tag});
            let mut delete_params = row_filters.clone();
            delete_params.push(json!({"$ref": "#/parameters/preferReturn"}));
            ops["delete"] = json!({"parameters": delete_params, "responses": {"204": {"description": "No Content"}}, "tags": tag});
        }
        paths.insert(format!("/{}", t.name), ops);
    }
    let mut fns: Vec<_> = cache
        .functions
        .iter()
        .filter(|((s, n), _)| s == schema && visible.functions.contains(n))
        .collect();
    fns.sort_by(|a, b| a.0.1.cmp(&b.0.1));
    for ((_, name), overloads) in fns {
        // Only what `/rpc` can call (functions of unnamed arguments mostly are not).
        let Some(f) = overloads.iter().find(|f| f.rpc_callable()) else {
            continue;
        };
        let mut props = Map::new();
        let mut required = Vec::new();
        for a in f.inputs().filter(|a| !a.name.is_empty()) {
            let (ty, _) = format_of(&a.type_name);
            props.insert(a.name.clone(), json!({"format": a.type_name, "type": ty}));
        }
        for a in f.inputs().take(f.required_inputs()) {
            required.push(Value::String(a.name.clone()));
        }
        let mut schema_obj = json!({"properties": props, "type": "object"});
        if !required.is_empty() {
            schema_obj["required"] = Value::Array(required);
        }
        let mut post = json!({"parameters": [{"in": "body", "name": "args", "required": true, "schema": schema_obj}, {"$ref": "#/parameters/preferParams"}], "produces": ["application/json", "application/vnd.pgrst.object+json"], "responses": {"200": {"description": "OK"}}, "tags": ["(rpc) ".to_owned() + name]});
        if let Some(d) = &f.description {
            post["summary"] = Value::String(d.clone());
        }
        paths.insert(format!("/rpc/{name}"), json!({"post": post}));
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Ferrobase REST API", "description": "A PostgREST-compatible API over the exposed schemas", "version": env!("CARGO_PKG_VERSION")},
        "host": "",
        "basePath": "/",
        "schemes": ["http"],
        "consumes": ["application/json", "application/vnd.pgrst.object+json;nulls=stripped", "application/vnd.pgrst.object+json", "text/csv"],
        "produces": ["application/json", "application/vnd.pgrst.object+json;nulls=stripped", "application/vnd.pgrst.object+json", "text/csv"],
        "paths": paths,
        "definitions": definitions,
        "parameters": {
            "preferParams": {"name": "Prefer", "description": "Preference", "required": false, "enum": ["params=single-object"], "in": "header", "type": "string"},
            "preferReturn": {"name": "Prefer", "description": "Preference", "required": false, "enum": ["return=representation", "return=minimal", "return=none"], "in": "header", "type": "string"},
            "preferCount": {"name": "Prefer", "description": "Preference", "required": false, "enum": ["count=none"], "in": "header", "type": "string"},
            "preferPost": {"name": "Prefer", "description": "Preference", "required": false, "enum": ["return=representation", "return=minimal", "return=none", "resolution=ignore-duplicates", "resolution=merge-duplicates"], "in": "header", "type": "string"},
            "select": {"name": "select", "description": "Filtering Columns", "required": false, "in": "query", "type": "string"},
            "on_conflict": {"name": "on_conflict", "description": "On Conflict", "required": false, "in": "query", "type": "string"},
            "order": {"name": "order", "description": "Ordering", "required": false, "in": "query", "type": "string"},
            "range": {"name": "Range", "description": "Limiting and Pagination", "required": false, "in": "header", "type": "string"},
            "rangeUnit": {"name": "Range-Unit", "description": "Limiting and Pagination", "required": false, "default": "items", "in": "header", "type": "string"},
            "offset": {"name": "offset", "description": "Limiting and Pagination", "required": false, "in": "query", "type": "string"},
            "limit": {"name": "limit", "description": "Limiting and Pagination", "required": false, "in": "query", "type": "string"},
        },
        "externalDocs": {"description": "PostgREST Documentation", "url": "https://postgrest.org/en/stable/references/api.html"},
        "x-exposed-schemas": exposed,
    })
}
