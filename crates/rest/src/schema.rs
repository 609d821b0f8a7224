//! The schema cache: the tables, views, columns, keys, relationships and
//! functions of the exposed schemas, plus the in-database `pgrst.*` settings of
//! the `authenticator` role.
//!
//! It is loaded at start and reloaded, without blocking requests, when
//! `NOTIFY pgrst` arrives (sent by `pgrst_ddl_watch`/`pgrst_drop_watch` after
//! DDL, or by an operator). Requests hold an `Arc` of the version they started
//! with; a reload swaps in a new one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use futures::StreamExt as _;
use serde::Deserialize;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

/// One column of a relation.
#[derive(Debug, Clone, Deserialize)]
pub struct Column {
    pub name: String,
    /// `format_type` of the column, schema-qualified unless in `pg_catalog`.
    #[serde(rename = "type")]
    pub type_name: String,
    pub nullable: bool,
    pub default: Option<String>,
    pub description: Option<String>,
}

/// A table, view, materialized view or foreign table.
#[derive(Debug, Clone)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// `pg_class.relkind`.
    pub kind: String,
    pub description: Option<String>,
    pub columns: Vec<Column>,
    pub pk: Vec<String>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A foreign key constraint.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub name: String,
    pub schema: String,
    pub table: String,
    pub columns: Vec<String>,
    pub ref_schema: String,
    pub ref_table: String,
    pub ref_columns: Vec<String>,
}

/// One argument of a function.
#[derive(Debug, Clone, Deserialize)]
pub struct Arg {
    /// Empty for unnamed arguments.
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// `i`, `o`, `b`, `v` or `t` as in `pg_proc.proargmodes`.
    pub mode: String,
    /// Schema and name of the argument's type (for computed fields).
    pub tschema: String,
    pub tname: String,
}

/// A function callable through `/rpc`.
#[derive(Debug, Clone)]
pub struct Function {
    pub schema: String,
    pub name: String,
    pub description: Option<String>,
    /// Every argument, including output ones.
    pub all_args: Vec<Arg>,
    /// How many trailing input arguments have defaults.
    pub n_defaults: usize,
    pub variadic: bool,
    /// `i`, `s` or `v`.
    pub volatility: String,
    pub returns_set: bool,
    /// Declared `ROWS 1`: a set-returning function that yields one row.
    pub rows_one: bool,
    pub return_type: String,
    /// `pg_type.typtype` of the return type (`b`, `c`, `d`, `e`, `p`, `r`, `m`).
    pub return_typtype: String,
    /// For a composite return type: the relation it belongs to.
    pub return_rel: Option<(String, String)>,
    /// Columns of a composite or `TABLE(...)` return type.
    pub return_columns: Vec<Column>,
}

impl Function {
    /// The input arguments (in, inout, variadic).
    pub fn inputs(&self) -> impl Iterator<Item = &Arg> {
        self.all_args
            .iter()
            .filter(|a| matches!(a.mode.as_str(), "i" | "b" | "v"))
    }

    /// How many inputs must be given.
    pub fn required_inputs(&self) -> usize {
        self.inputs().count().saturating_sub(self.n_defaults)
    }

    pub fn is_void(&self) -> bool {
        self.return_type == "void"
    }

    /// True when `/rpc` may call the function: every input is named, or its
    /// only input is an unnamed `json`, `jsonb`, `text`, `xml` or `bytea`
    /// that takes the whole body (as PostgREST's schema cache does).
    pub fn rpc_callable(&self) -> bool {
        let inputs: Vec<&Arg> = self.inputs().collect();
        match inputs.as_slice() {
            [only] if only.name.is_empty() => matches!(
                only.type_name.as_str(),
                "json" | "jsonb" | "text" | "xml" | "bytea"
            ),
            _ => inputs.iter().all(|a| !a.name.is_empty()),
        }
    }

    /// True when the function's only input is unnamed.
    pub fn single_unnamed_input(&self) -> bool {
        let mut inputs = self.inputs();
        matches!((inputs.next(), inputs.next()), (Some(a), None) if a.name.is_empty())
    }

    /// True when the function returns rows with columns (a table-like result).
    pub fn returns_rows(&self) -> bool {
        !self.return_columns.is_empty()
    }
}

/// In-database settings (`ALTER ROLE authenticator SET pgrst.<name> = ...`).
#[derive(Debug, Clone, Default)]
pub struct DbSettings {
    pub plan_enabled: bool,
    pub aggregates_enabled: bool,
    /// `db_tx_end = commit-allow-override` or `rollback-allow-override`.
    pub tx_override: bool,
    /// `db_tx_end = rollback*`: every transaction is rolled back by default.
    pub tx_rollback_default: bool,
    pub max_rows: Option<u64>,
}

impl DbSettings {
    fn from_map(map: &HashMap<String, String>) -> Self {
        let flag = |k: &str| {
            map.get(k).is_some_and(|v| {
                matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "on" | "1")
            })
        };
        let tx_end = map.get("pgrst.db_tx_end").map(|s| s.trim()).unwrap_or("");
        Self {
            plan_enabled: flag("pgrst.db_plan_enabled"),
            aggregates_enabled: flag("pgrst.db_aggregates_enabled"),
            tx_override: tx_end.ends_with("allow-override"),
            tx_rollback_default: tx_end.starts_with("rollback"),
            max_rows: map
                .get("pgrst.db_max_rows")
                .or_else(|| map.get("pgrst.max_rows"))
                .and_then(|v| v.trim().parse().ok()),
        }
    }
}

/// A relation's schema and name.
pub type RelKey = (String, String);

/// A view column passing a base column through: view schema, view, base
/// schema, base, base column, view column.
type Lineage = (String, String, String, String, String, String);

/// The record form of PostGIS's `ST_AsGeoJSON`, if installed.
const GEOJSON_FN_SQL: &str = "select quote_ident(n.nspname) || '.st_asgeojson'
 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
 where p.proname = 'st_asgeojson' and p.proargtypes[0] = 'record'::regtype
 order by n.nspname limit 1";

/// One loaded version of the schema cache.
#[derive(Debug, Default)]
pub struct SchemaCache {
    pub tables: HashMap<(String, String), Table>,
    pub foreign_keys: Vec<ForeignKey>,
    /// Unique column sets (primary keys, unique constraints and indexes) per relation.
    pub unique_keys: HashMap<(String, String), Vec<Vec<String>>>,
    pub functions: HashMap<(String, String), Vec<Function>>,
    /// The exposed schemas, the default first: the authenticator's
    /// `pgrst.db_schemas` when set, else the configured ones.
    pub schemas: Vec<String>,
    pub settings: DbSettings,
    /// Settings of each role (`ALTER ROLE r SET name = value`) that requests
    /// running as it apply, as a JSON object text.
    pub role_settings: HashMap<String, String>,
    /// PostGIS's `ST_AsGeoJSON(record)`, schema-qualified and quoted, when the
    /// extension is installed: what `application/geo+json` responses need.
    pub geojson_fn: Option<String>,
}

impl SchemaCache {
    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.tables.get(&(schema.to_owned(), name.to_owned()))
    }

    pub fn functions(&self, schema: &str, name: &str) -> &[Function] {
        self.functions
            .get(&(schema.to_owned(), name.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The closest relation name in `schema` to a missing `name`, for hints.
    pub fn similar_table(&self, schema: &str, name: &str) -> Option<String> {
        closest(
            name,
            self.tables
                .keys()
                .filter(|(s, _)| s == schema)
                .map(|(_, n)| n.as_str()),
        )
    }

    /// The most similar callable function name in `schema` to `name`, other
    /// than itself, by the looser likeness PostgREST uses for function hints.
    pub fn similar_function(&self, schema: &str, name: &str) -> Option<String> {
        most_alike(
            name,
            self.functions
                .iter()
                .filter(|((s, n), fs)| {
                    s == schema && n != name && fs.iter().any(Function::rpc_callable)
                })
                .map(|((_, n), _)| n.as_str()),
        )
    }

    /// True when `columns` (in any order) cover a unique key of the relation.
    pub fn is_unique(&self, schema: &str, table: &str, columns: &[String]) -> bool {
        self.unique_keys
            .get(&(schema.to_owned(), table.to_owned()))
            .is_some_and(|keys| {
                keys.iter()
                    .any(|k| !k.is_empty() && k.iter().all(|c| columns.contains(c)))
            })
    }

    /// A function of one argument of `table`'s row type, named `name`: a
    /// computed field or relationship.
    pub fn computed(&self, table: &Table, name: &str) -> Option<&Function> {
        self.functions(&table.schema, name).iter().find(|f| {
            row_input(f).is_some_and(|a| a.tschema == table.schema && a.tname == table.name)
        })
    }

    /// True when `f` is a computed field or relationship of some relation in
    /// the cache: its one required input is that relation's row type.
    pub fn is_computed(&self, f: &Function) -> bool {
        row_input(f).is_some_and(|a| self.table(&a.tschema, &a.tname).is_some())
    }

    /// Gives views the keys and foreign keys of the relations they select
    /// from, through the columns they pass through (renamed or not), also
    /// through chains of views. `lineage` rows are (view schema, view, base
    /// schema, base, base column, view column).
    fn inherit_view_keys(&mut self, lineage: &[Lineage]) {
        let mut by_pair: HashMap<(RelKey, RelKey), Vec<(String, String)>> = HashMap::new();
        for (vs, v, ts, t, base_col, view_col) in lineage {
            by_pair
                .entry(((vs.clone(), v.clone()), (ts.clone(), t.clone())))
                .or_default()
                .push((base_col.clone(), view_col.clone()));
        }
        // The view's names for `cols` of the base, when it passes all of them through.
        let map = |cols: &[String], pairs: &[(String, String)]| -> Option<Vec<String>> {
            if cols.is_empty() {
                return None;
            }
            cols.iter()
                .map(|c| pairs.iter().find(|(b, _)| b == c).map(|(_, v)| v.clone()))
                .collect()
        };
        for _ in 0..4 {
            let mut added = false;
            for ((view, base), pairs) in &by_pair {
                let new_keys: Vec<Vec<String>> = self
                    .unique_keys
                    .get(base)
                    .map(|keys| keys.iter().filter_map(|k| map(k, pairs)).collect())
                    .unwrap_or_default();
                for k in new_keys {
                    let entry = self.unique_keys.entry(view.clone()).or_default();
                    if !entry.contains(&k) {
                        entry.push(k);
                        added = true;
                    }
                }
                let base_pk = self.tables.get(base).and_then(|t| map(&t.pk, pairs));
                if let Some(vt) = self.tables.get_mut(view)
                    && vt.pk.is_empty()
                    && let Some(pk) = base_pk
                {
                    vt.pk = pk;
                    added = true;
                }
                let mut new_fks = Vec::new();
                for fk in &self.foreign_keys {
                    if fk.schema == base.0
                        && fk.table == base.1
                        && let Some(columns) = map(&fk.columns, pairs)
                    {
                        new_fks.push(ForeignKey {
                            schema: view.0.clone(),
                            table: view.1.clone(),
                            columns,
                            ..fk.clone()
                        });
                    }
                    if fk.ref_schema == base.0
                        && fk.ref_table == base.1
                        && let Some(ref_columns) = map(&fk.ref_columns, pairs)
                    {
                        new_fks.push(ForeignKey {
                            ref_schema: view.0.clone(),
                            ref_table: view.1.clone(),
                            ref_columns,
                            ..fk.clone()
                        });
                    }
                }
                for fk in new_fks {
                    let exists = self.foreign_keys.iter().any(|f| {
                        f.name == fk.name
                            && f.schema == fk.schema
                            && f.table == fk.table
                            && f.ref_schema == fk.ref_schema
                            && f.ref_table == fk.ref_table
                            && f.columns == fk.columns
                            && f.ref_columns == fk.ref_columns
                    });
                    if !exists {
                        self.foreign_keys.push(fk);
                        added = true;
                    }
                }
            }
            if !added {
                break;
            }
        }
        self.foreign_keys.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Loads a fresh cache for `schemas`.
    pub async fn load(client: &impl GenericClient, schemas: &[String]) -> anyhow::Result<Self> {
        let ctx = |what: &'static str| {
            move |e: tokio_postgres::Error| anyhow::anyhow!("loading {what}: {e}")
        };
        let mut cache = Self::default();
        // In-database settings first: they may choose the schemas.
        let settings: Option<String> = client
            .query_one(SETTINGS_SQL, &[])
            .await
            .map_err(ctx("settings"))?
            .get(0);
        let map: HashMap<String, String> =
            serde_json::from_str(settings.as_deref().unwrap_or("{}"))?;
        cache.settings = DbSettings::from_map(&map);
        cache.schemas = map
            .get("pgrst.db_schemas")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| schemas.to_vec());
        let schemas = cache.schemas.clone();
        for row in client
            .query(TABLES_SQL, &[&schemas])
            .await
            .map_err(ctx("tables"))?
        {
            let columns: Vec<Column> = serde_json::from_str(row.get::<_, &str>(4))?;
            let pk: Vec<String> = serde_json::from_str(row.get::<_, &str>(5))?;
            let t = Table {
                schema: row.get(0),
                name: row.get(1),
                kind: row.get(2),
                description: row.get(3),
                columns,
                pk,
            };
            cache.tables.insert((t.schema.clone(), t.name.clone()), t);
        }
        for row in client
            .query(FKS_SQL, &[&schemas])
            .await
            .map_err(ctx("foreign keys"))?
        {
            cache.foreign_keys.push(ForeignKey {
                name: row.get(0),
                schema: row.get(1),
                table: row.get(2),
                ref_schema: row.get(3),
                ref_table: row.get(4),
                columns: serde_json::from_str(row.get::<_, &str>(5))?,
                ref_columns: serde_json::from_str(row.get::<_, &str>(6))?,
            });
        }
        for row in client
            .query(UNIQUE_SQL, &[&schemas])
            .await
            .map_err(ctx("unique keys"))?
        {
            let cols: Vec<String> = serde_json::from_str(row.get::<_, &str>(2))?;
            cache
                .unique_keys
                .entry((row.get(0), row.get(1)))
                .or_default()
                .push(cols);
        }
        for row in client
            .query(FUNCTIONS_SQL, &[&schemas])
            .await
            .map_err(ctx("functions"))?
        {
            let all_args: Vec<Arg> = serde_json::from_str(row.get::<_, &str>(9))?;
            let mut return_columns: Vec<Column> = serde_json::from_str(row.get::<_, &str>(10))?;
            if return_columns.is_empty() {
                return_columns = all_args
                    .iter()
                    .filter(|a| {
                        a.mode == "t"
                            || (matches!(a.mode.as_str(), "o" | "b")
                                && row.get::<_, String>(6) == "p")
                    })
                    .map(|a| Column {
                        name: a.name.clone(),
                        type_name: a.type_name.clone(),
                        nullable: true,
                        default: None,
                        description: None,
                    })
                    .collect();
            }
            let rel_schema: Option<String> = row.get(7);
            let rel_name: Option<String> = row.get(8);
            let f = Function {
                schema: row.get(0),
                name: row.get(1),
                volatility: row.get(2),
                n_defaults: usize::try_from(row.get::<_, i16>(3)).unwrap_or(0),
                returns_set: row.get(4),
                return_type: row.get(5),
                return_typtype: row.get(6),
                return_rel: rel_schema.zip(rel_name),
                all_args,
                return_columns,
                variadic: row.get(11),
                description: row.get(12),
                rows_one: row.get(13),
            };
            cache
                .functions
                .entry((f.schema.clone(), f.name.clone()))
                .or_default()
                .push(f);
        }
        let mut lineage: Vec<Lineage> = Vec::new();
        for row in client
            .query(VIEW_LINEAGE_SQL, &[&schemas])
            .await
            .map_err(ctx("view lineage"))?
        {
            lineage.push((
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
            ));
        }
        cache.inherit_view_keys(&lineage);
        cache.geojson_fn = client
            .query_opt(GEOJSON_FN_SQL, &[])
            .await
            .map_err(ctx("PostGIS"))?
            .map(|r| r.get(0));
        for row in client
            .query(ROLE_SETTINGS_SQL, &[])
            .await
            .map_err(ctx("role settings"))?
        {
            cache.role_settings.insert(row.get(0), row.get(1));
        }
        Ok(cache)
    }
}

/// The first input of a function whose only required input it is.
fn row_input(f: &Function) -> Option<&Arg> {
    let inputs: Vec<&Arg> = f.inputs().collect();
    (!inputs.is_empty() && inputs.len() - f.n_defaults.min(inputs.len() - 1) == 1)
        .then(|| inputs[0])
}

/// The candidate nearest to `name` by edit distance, if near enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)))
        .map(|(_, c)| c.to_owned())
}

/// The candidate most like `name`, comparing lower-cased letters and digits
/// only: likeness is 1 - edits / length of the longer name, and a candidate
/// needs at least a third.
pub fn most_alike<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = fold(name);
    candidates
        .map(|c| {
            let folded = fold(c);
            let longer = wanted.chars().count().max(folded.chars().count()).max(1);
            let likeness = 1.0 - edit_distance(&wanted, &folded) as f64 / longer as f64;
            (likeness, c)
        })
        .filter(|(likeness, _)| *likeness >= 1.0 / 3.0)
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(a.1)))
        .map(|(_, c)| c.to_owned())
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Columns of views that pass a base relation's column through, read from
/// the target list of the view's stored query (`resorigtbl`/`resorigcol`).
const VIEW_LINEAGE_SQL: &str = r#"
select distinct vn.nspname::text, v.relname::text, tn.nspname::text, t.relname::text,
  ta.attname::text, va.attname::text
from pg_class v
join pg_namespace vn on vn.oid = v.relnamespace
join pg_rewrite r on r.ev_class = v.oid and r.rulename = '_RETURN'
cross join lateral regexp_matches(r.ev_action::text,
  ':resno (\d+) :resname ([^:]*) :ressortgroupref \d+ :resorigtbl (\d+) :resorigcol (\d+)', 'g') m
join pg_attribute va on va.attrelid = v.oid and va.attnum = m[1]::int2 and not va.attisdropped
join pg_class t on t.oid = m[3]::oid
join pg_namespace tn on tn.oid = t.relnamespace
join pg_attribute ta on ta.attrelid = t.oid and ta.attnum = m[4]::int2 and not ta.attisdropped
where v.relkind in ('v', 'm') and vn.nspname = any($1) and m[3] <> '0' and t.oid <> v.oid
  -- entries of nested queries carry other positions or names: keep the view's own
  and replace(m[2], '\', '') = va.attname
"#;

const TABLES_SQL: &str = r#"
select n.nspname::text, c.relname::text, c.relkind::text, obj_description(c.oid, 'pg_class'),
  coalesce((
    select json_agg(json_build_object(
      'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
      'nullable', not a.attnotnull, 'default', case
        when a.attidentity = 'd' then format('nextval(%L::regclass)',
          pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname))
        when a.attgenerated = 's' then null
        else pg_get_expr(d.adbin, d.adrelid) end,
      'description', col_description(c.oid, a.attnum)) order by a.attnum)
    from pg_attribute a
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped), '[]')::text,
  coalesce((
    select json_agg(a.attname order by k.i)
    from pg_constraint con, unnest(con.conkey) with ordinality k(n, i)
    join pg_attribute a on a.attnum = k.n
    where con.conrelid = c.oid and con.contype = 'p' and a.attrelid = c.oid), '[]')::text
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'v', 'm', 'f', 'p') and n.nspname = any($1)
"#;

const FKS_SQL: &str = r#"
select con.conname::text, n1.nspname::text, c1.relname::text, n2.nspname::text, c2.relname::text,
  (select json_agg(a.attname order by k.i) from unnest(con.conkey) with ordinality k(n, i)
     join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.n)::text,
  (select json_agg(a.attname order by k.i) from unnest(con.confkey) with ordinality k(n, i)
     join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.n)::text
from pg_constraint con
join pg_class c1 on c1.oid = con.conrelid join pg_namespace n1 on n1.oid = c1.relnamespace
join pg_class c2 on c2.oid = con.confrelid join pg_namespace n2 on n2.oid = c2.relnamespace
where con.contype = 'f' and (n1.nspname = any($1) or n2.nspname = any($1))
order by con.conname
"#;

const UNIQUE_SQL: &str = r#"
select n.nspname::text, c.relname::text,
  (select json_agg(a.attname) from unnest(i.indkey::int2[]) k(n)
     join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.n)::text
from pg_index i join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace
where i.indisunique and i.indpred is null and i.indexprs is null and n.nspname = any($1)
"#;

const FUNCTIONS_SQL: &str = r#"
select n.nspname::text, p.proname::text, p.provolatile::text, p.pronargdefaults, p.proretset,
  format_type(p.prorettype, null), rt.typtype::text, rn.nspname::text, rc.relname::text,
  coalesce((
    select json_agg(json_build_object(
      'name', coalesce(p.proargnames[k.i], ''), 'type', format_type(k.t, null),
      'mode', coalesce(p.proargmodes[k.i]::text, 'i'),
      'tschema', tn.nspname, 'tname', tt.typname) order by k.i)
    from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) with ordinality k(t, i)
    join pg_type tt on tt.oid = k.t join pg_namespace tn on tn.oid = tt.typnamespace), '[]')::text,
  coalesce((
    select json_agg(json_build_object(
      'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
      'nullable', not a.attnotnull, 'default', null, 'description', null) order by a.attnum)
    from pg_attribute a where a.attrelid = rc.oid and a.attnum > 0 and not a.attisdropped), '[]')::text,
  p.provariadic <> 0, obj_description(p.oid, 'pg_proc'), p.prorows = 1
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_type rt on rt.oid = p.prorettype
left join pg_class rc on rc.oid = rt.typrelid
left join pg_namespace rn on rn.oid = rc.relnamespace
where n.nspname = any($1) and p.prokind = 'f'
"#;

const SETTINGS_SQL: &str = r#"
select json_object_agg(s.k, s.v)::text from (
  select split_part(c, '=', 1) as k, substr(c, strpos(c, '=') + 1) as v
  from pg_db_role_setting r, unnest(r.setconfig) c
  where r.setrole = (select oid from pg_roles where rolname = 'authenticator')
    and r.setdatabase in (0, (select oid from pg_database where datname = current_database()))
    and c like 'pgrst.%'
  order by r.setdatabase) s
"#;

/// Per-role settings a request applies when it switches role: timeouts,
/// `work_mem`, `timezone` and custom (dotted) settings.
const ROLE_SETTINGS_SQL: &str = r#"
select r.rolname::text, json_object_agg(s.k, s.v order by s.db)::text
from (
  select rs.setrole, rs.setdatabase as db, split_part(c, '=', 1) as k, substr(c, strpos(c, '=') + 1) as v
  from pg_db_role_setting rs, unnest(rs.setconfig) c
  where rs.setdatabase in (0, (select oid from pg_database where datname = current_database()))
) s join pg_roles r on r.oid = s.setrole
where r.rolname <> 'authenticator'
  and (s.k in ('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout', 'work_mem', 'timezone')
       or (s.k like '%.%' and s.k not like 'pgrst.%'))
group by r.rolname
"#;

/// The event triggers that notify `pgrst` after DDL, installed when missing.
const WATCH_SQL: &str = r#"
do $watch$
begin
  perform pg_advisory_xact_lock(7238176350412);
  if not exists (select 1 from pg_event_trigger where evtname = 'pgrst_ddl_watch') then
    create or replace function extensions.pgrst_ddl_watch() returns event_trigger
      language plpgsql as $f$ begin notify pgrst, 'reload schema'; end $f$;
    create event trigger pgrst_ddl_watch on ddl_command_end
      execute procedure extensions.pgrst_ddl_watch();
  end if;
  if not exists (select 1 from pg_event_trigger where evtname = 'pgrst_drop_watch') then
    create or replace function extensions.pgrst_drop_watch() returns event_trigger
      language plpgsql as $f$ begin notify pgrst, 'reload schema'; end $f$;
    create event trigger pgrst_drop_watch on sql_drop
      execute procedure extensions.pgrst_drop_watch();
  end if;
exception when insufficient_privilege then
  raise warning 'pgrst event triggers not installed: insufficient privilege';
end
$watch$;
"#;

/// The shared, swappable cache.
pub struct Cache {
    current: RwLock<Arc<SchemaCache>>,
    schemas: Vec<String>,
    pool: Pool,
    requests: crate::pg::Pool,
}

impl Cache {
    /// Loads the first version.
    pub async fn new(
        pool: Pool,
        requests: crate::pg::Pool,
        schemas: Vec<String>,
    ) -> anyhow::Result<Self> {
        let cache = Self {
            current: RwLock::new(Arc::new(SchemaCache::default())),
            schemas,
            pool,
            requests,
        };
        cache.reload().await?;
        Ok(cache)
    }

    /// The current version.
    pub fn get(&self) -> Arc<SchemaCache> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Loads a new version and swaps it in; prepared statements are dropped
    /// since their result shapes may have changed.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| anyhow::anyhow!("connecting for the schema cache: {e}"))?;
        let tx = client.transaction().await?;
        // Only pg_catalog on the path: every other type name comes out qualified.
        tx.batch_execute("set local search_path = pg_catalog")
            .await?;
        let loaded = SchemaCache::load(&tx, &self.schemas).await?;
        tx.rollback().await?;
        drop(client);
        self.pool.manager().statement_caches.clear();
        self.requests.forget_statements();
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(loaded);
        Ok(())
    }
}

/// Installs the DDL event triggers when the connected role may.
pub async fn install_watch(client: &tokio_postgres::Client) {
    if let Err(e) = client.batch_execute(WATCH_SQL).await {
        tracing::warn!(error = %e, "could not install the pgrst event triggers");
    }
}

/// Listens on channel `pgrst` and reloads the cache on each notification,
/// debounced; reconnects when the connection drops.
pub async fn listen(cache: Arc<Cache>, url: String, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    while !stop.is_cancelled() {
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
                let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                let driver = tokio::spawn(async move {
                    let mut messages = std::pin::pin!(messages);
                    while let Some(msg) = messages.next().await {
                        match msg {
                            Ok(AsyncMessage::Notification(n)) if n.channel() == "pgrst" => {
                                let _ = tx.send(());
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                if client.batch_execute("listen pgrst").await.is_ok() {
                    backoff = Duration::from_millis(200);
                    // Changes made while disconnected were not announced.
                    if let Err(e) = cache.reload().await {
                        tracing::warn!(error = %e, "schema cache reload failed");
                    }
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => break,
                            got = rx.recv() => {
                                if got.is_none() { break; }
                                // Debounce a burst of notifications into one reload.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                while rx.try_recv().is_ok() {}
                                match cache.reload().await {
                                    Ok(()) => tracing::info!("schema cache reloaded"),
                                    Err(e) => tracing::warn!(error = %e, "schema cache reload failed"),
                                }
                            }
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "schema listener could not connect"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let names = ["clients", "projects", "tasks"];
        assert_eq!(
            closest("client", names.iter().copied()),
            Some("clients".to_owned())
        );
        assert_eq!(
            closest("projcts", names.iter().copied()),
            Some("projects".to_owned())
        );
        assert_eq!(closest("zebra", names.iter().copied()), None);
    }

    #[test]
    fn function_hints_use_the_looser_likeness() {
        let names = [
            "polymorphic_function_with_unnamed_text",
            "get_user_messages",
            "add",
        ];
        // Too far for `closest`, alike enough for a function hint.
        let wanted = "polymorphic_function_with_unnamed_integer";
        assert_eq!(closest(wanted, names.iter().copied()), None);
        assert_eq!(
            most_alike(wanted, names.iter().copied()).as_deref(),
            Some("polymorphic_function_with_unnamed_text")
        );
        // Separators and case do not count.
        assert_eq!(
            most_alike("GetUserMessages", names.iter().copied()).as_deref(),
            Some("get_user_messages")
        );
        assert_eq!(most_alike("missing", names.iter().copied()), None);
    }
}
