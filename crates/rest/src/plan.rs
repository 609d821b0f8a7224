//! From parsed query parameters to SQL: relationship resolution against the
//! schema cache, then rendering with every identifier quoted (and known to the
//! cache) and every value bound as a parameter.

use std::collections::HashSet;

use serde_json::json;

use crate::api::{ApiError, Media};
use crate::parser::{
    AggFn, Arrow, Condition, Field, Filter, IsVal, JoinKind, JsonKey, Op, Operation, OrderTarget,
    OrderTerm, Quant, SelectItem,
};
use crate::schema::{Column, ForeignKey, Function, SchemaCache, Table};

/// A double-quoted SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// A text array literal (`{"a","b"}`) for binding as one parameter.
pub fn array_literal(values: &[String]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", items.join(","))
}

/// Parameters bound to a statement, all sent as text and typed by the server.
#[derive(Debug, Default)]
pub struct Params {
    pub values: Vec<Option<String>>,
}

impl Params {
    /// Binds `v`, returning its placeholder.
    pub fn bind(&mut self, v: impl Into<String>) -> String {
        self.values.push(Some(v.into()));
        format!("${}", self.values.len())
    }
}

/// How a relationship joins two relations.
#[derive(Debug, Clone)]
pub enum Join<'a> {
    /// The parent holds the foreign key (many-to-one, or one-to-one).
    Forward(&'a ForeignKey),
    /// The child holds the foreign key (one-to-many, or one-to-one).
    Backward(&'a ForeignKey),
    /// Through a junction: its key to the parent, its key to the child.
    Junction(&'a ForeignKey, &'a ForeignKey),
    /// A function of the parent row.
    Computed(&'a Function),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    ManyToOne,
    OneToMany,
    OneToOne,
    ManyToMany,
}

impl Cardinality {
    fn label(self) -> &'static str {
        match self {
            Self::ManyToOne => "many-to-one",
            Self::OneToMany => "one-to-many",
            Self::OneToOne => "one-to-one",
            Self::ManyToMany => "many-to-many",
        }
    }
}

/// A resolved relationship.
#[derive(Debug, Clone)]
pub struct Relationship<'a> {
    pub join: Join<'a>,
    pub cardinality: Cardinality,
    pub target: &'a Table,
}

impl Relationship<'_> {
    pub fn to_one(&self) -> bool {
        match self.join {
            Join::Computed(f) => !f.returns_set || f.rows_one,
            _ => matches!(
                self.cardinality,
                Cardinality::ManyToOne | Cardinality::OneToOne
            ),
        }
    }
}

/// Where a node's rows come from.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub schema: String,
    pub name: String,
    pub columns: &'a [Column],
    /// The table whose relationships and computed fields apply.
    pub table: Option<&'a Table>,
}

/// An embedded resource.
#[derive(Debug)]
pub struct Embed<'a> {
    /// Output key (alias or name).
    pub key: String,
    /// The name as written (table, FK column or function).
    pub name: String,
    pub rel: Relationship<'a>,
    pub node: Node<'a>,
    pub inner: bool,
    pub spread: bool,
    /// False for `rel()`: used only for filtering.
    pub output: bool,
    pub lateral: String,
}

/// One selected output.
#[derive(Debug, Clone)]
enum Out {
    Column {
        field: Field,
        cast: Option<String>,
        agg: Option<AggFn>,
        agg_cast: Option<String>,
        name: String,
    },
    CountAll {
        cast: Option<String>,
        name: String,
    },
    Embed(usize),
}

/// A relation in the query tree: the root or an embed.
#[derive(Debug)]
pub struct Node<'a> {
    pub alias: String,
    pub source: Source<'a>,
    /// The `FROM` item (without alias).
    pub from: String,
    outs: Vec<Out>,
    pub conditions: Vec<Condition>,
    pub order: Vec<OrderTerm>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    pub embeds: Vec<Embed<'a>>,
    /// Output key names, in order.
    pub names: Vec<String>,
    /// Embedding depth: 0 for the request's own relation.
    pub depth: usize,
}

impl Node<'_> {
    /// The relation's name in error messages: PostgREST aliases an embedded
    /// relation `<name>_<depth>`.
    fn error_name(&self) -> String {
        if self.depth == 0 {
            self.source.name.clone()
        } else {
            format!("{}_{}", self.source.name, self.depth)
        }
    }
}

/// Builds query trees against one schema cache version.
pub struct Planner<'a> {
    pub cache: &'a SchemaCache,
    pub aggregates: bool,
    counter: usize,
    depth: usize,
    /// Aliases of the nodes enclosing the one being planned, outermost first.
    enclosing: Vec<String>,
}

fn undefined_column(rel: &str, col: &str) -> ApiError {
    ApiError::new(400, "42703", format!("column {rel}.{col} does not exist"))
}

impl<'a> Planner<'a> {
    pub fn new(cache: &'a SchemaCache, aggregates: bool) -> Self {
        Self {
            cache,
            aggregates,
            counter: 0,
            depth: 0,
            enclosing: Vec::new(),
        }
    }

    /// The alias of an embedded `table` one level below the current node:
    /// `<table>_<depth>` as PostgREST names it (plans show it), unless a node
    /// it is nested in already goes by that name (a table itself called so)
    /// or it could be taken for one of the planner's own names; then a
    /// generated one.
    fn embed_alias(&mut self, table: &str, parent: &str) -> String {
        let alias = format!("{table}_{}", self.depth + 1);
        let taken =
            alias == parent || self.enclosing.contains(&alias) || alias.starts_with("pgrst_");
        if taken { self.next_alias("e") } else { alias }
    }

    fn next_alias(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("pgrst_{prefix}{}", self.counter)
    }

    /// Builds a node for `source` with the given select items.
    pub fn node(
        &mut self,
        alias: String,
        source: Source<'a>,
        from: String,
        items: &[SelectItem],
    ) -> Result<Node<'a>, ApiError> {
        let mut node = Node {
            alias,
            source,
            from,
            outs: Vec::new(),
            conditions: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: None,
            embeds: Vec::new(),
            names: Vec::new(),
            depth: self.depth,
        };
        let mut seen: HashSet<String> = HashSet::new();
        let mut push_name = |node: &mut Node<'a>, name: &str| -> bool {
            if seen.insert(name.to_owned()) {
                node.names.push(name.to_owned());
                true
            } else {
                false
            }
        };
        for item in items {
            match item {
                SelectItem::Star => {
                    for c in node.source.columns {
                        if push_name(&mut node, &c.name) {
                            node.outs.push(Out::Column {
                                field: Field {
                                    name: c.name.clone(),
                                    path: vec![],
                                },
                                cast: None,
                                agg: None,
                                agg_cast: None,
                                name: c.name.clone(),
                            });
                        }
                    }
                }
                SelectItem::Column {
                    field,
                    alias,
                    cast,
                    agg,
                    agg_cast,
                } => {
                    if agg.is_some() && !self.aggregates {
                        return Err(aggregates_disabled());
                    }
                    self.check_field(&node, field)?;
                    let name = alias.clone().unwrap_or_else(|| match agg {
                        Some(a) => a.sql().to_owned(),
                        None => field.output_name(),
                    });
                    if push_name(&mut node, &name) {
                        node.outs.push(Out::Column {
                            field: field.clone(),
                            cast: cast.clone(),
                            agg: *agg,
                            agg_cast: agg_cast.clone(),
                            name,
                        });
                    }
                }
                SelectItem::CountAll { alias, cast } => {
                    if !self.aggregates {
                        return Err(aggregates_disabled());
                    }
                    let name = alias.clone().unwrap_or_else(|| "count".to_owned());
                    if push_name(&mut node, &name) {
                        node.outs.push(Out::CountAll {
                            cast: cast.clone(),
                            name,
                        });
                    }
                }
                SelectItem::Embed {
                    name,
                    alias,
                    hint,
                    join,
                    spread,
                    items,
                } => {
                    // A key named after an FK column keeps that name.
                    let key = alias.clone().unwrap_or_else(|| name.clone());
                    if node.embeds.iter().any(|e| e.key == key) {
                        // PostgreSQL's own answer to PostgREST's join alias used twice.
                        return Err(ApiError::new(
                            400,
                            "42712",
                            format!(
                                "table name \"{}_{}_{}\" specified more than once",
                                node.source.name,
                                key,
                                self.depth + 1
                            ),
                        ));
                    }
                    let rel = self.relationship(&node.source, name, hint.as_deref())?;
                    let target = rel.target;
                    let child_alias = self.embed_alias(&target.name, &node.alias);
                    let lateral = self.next_alias("l");
                    let (from, columns): (String, &'a [Column]) = match rel.join {
                        Join::Computed(f) => (
                            format!("{}({})", qualified(&f.schema, &f.name), ident(&node.alias)),
                            &target.columns,
                        ),
                        _ => (qualified(&target.schema, &target.name), &target.columns),
                    };
                    let source = Source {
                        schema: target.schema.clone(),
                        name: target.name.clone(),
                        columns,
                        table: Some(target),
                    };
                    // `rel(count)`: the legacy form of `rel(count())`.
                    let legacy_count = matches!(
                        items.as_slice(),
                        [SelectItem::Column { field, alias: None, cast: None, agg: None, .. }]
                            if field.name == "count" && field.path.is_empty()
                    ) && !columns.iter().any(|c| c.name == "count");
                    self.depth += 1;
                    self.enclosing.push(node.alias.clone());
                    let child = if legacy_count {
                        let allowed = std::mem::replace(&mut self.aggregates, true);
                        let child = self.node(
                            child_alias,
                            source,
                            from,
                            &[SelectItem::CountAll {
                                alias: None,
                                cast: None,
                            }],
                        );
                        self.aggregates = allowed;
                        child
                    } else {
                        self.node(child_alias, source, from, items)
                    };
                    self.enclosing.pop();
                    self.depth -= 1;
                    let child = child?;
                    let output = !items.is_empty();
                    let idx = node.embeds.len();
                    if output {
                        if *spread {
                            for n in &child.names {
                                push_name(&mut node, n);
                            }
                        } else {
                            push_name(&mut node, &key);
                        }
                        node.outs.push(Out::Embed(idx));
                    }
                    node.embeds.push(Embed {
                        key,
                        name: name.clone(),
                        inner: *join == Some(JoinKind::Inner),
                        rel,
                        node: child,
                        spread: *spread,
                        output,
                        lateral,
                    });
                }
            }
        }
        Ok(node)
    }

    fn check_field(&self, node: &Node<'a>, field: &Field) -> Result<(), ApiError> {
        if node.source.columns.iter().any(|c| c.name == field.name) {
            return Ok(());
        }
        if let Some(t) = node.source.table
            && self
                .cache
                .computed(t, &field.name)
                .is_some_and(|f| !f.returns_set)
        {
            return Ok(());
        }
        Err(undefined_column(&node.error_name(), &field.name))
    }

    /// Resolves the relationship `name` (with an optional hint) from `parent`.
    pub fn relationship(
        &self,
        parent: &Source<'a>,
        name: &str,
        hint: Option<&str>,
    ) -> Result<Relationship<'a>, ApiError> {
        let not_found = || {
            let details = match hint {
                Some(h) => format!(
                    "Searched for a foreign key relationship between '{}' and '{}' using the hint '{}' in the schema '{}', but no matches were found.",
                    parent.name, name, h, parent.schema
                ),
                None => format!(
                    "Searched for a foreign key relationship between '{}' and '{}' in the schema '{}', but no matches were found.",
                    parent.name, name, parent.schema
                ),
            };
            let e = ApiError::new(
                400,
                "PGRST200",
                format!(
                    "Could not find a relationship between '{}' and '{}' in the schema cache",
                    parent.name, name
                ),
            )
            .details(details);
            // Suggest a related relation whose name is close to the one asked for.
            let related: Vec<&str> = self
                .cache
                .foreign_keys
                .iter()
                .filter_map(|fk| {
                    if fk.schema == parent.schema && fk.table == parent.name {
                        Some(fk.ref_table.as_str())
                    } else if fk.ref_schema == parent.schema && fk.ref_table == parent.name {
                        Some(fk.table.as_str())
                    } else {
                        None
                    }
                })
                .collect();
            match crate::schema::closest(name, related.into_iter()) {
                Some(r) if r != name => {
                    e.hint(format!("Perhaps you meant '{r}' instead of '{name}'."))
                }
                _ => e,
            }
        };
        let Some(ptable) = parent.table else {
            return Err(not_found());
        };
        // A function of the parent row returning rows: a computed relationship.
        if hint.is_none()
            && let Some(f) = self.cache.computed(ptable, name)
            && let Some((s, n)) = &f.return_rel
            && let Some(target) = self.cache.table(s, n)
        {
            let cardinality = if f.returns_set && !f.rows_one {
                Cardinality::OneToMany
            } else {
                Cardinality::ManyToOne
            };
            return Ok(Relationship {
                join: Join::Computed(f),
                cardinality,
                target,
            });
        }
        let cache = self.cache;
        let same = |s: &str, t: &str| s == ptable.schema && t == ptable.name;
        let mut found: Vec<Relationship<'a>> = Vec::new();
        let hint_fk = |fk: &ForeignKey, self_ref: bool| match hint {
            None => true,
            Some(h) => (!self_ref && fk.name == h) || fk.columns.iter().any(|c| c == h),
        };
        // Without a hint, a constraint name or the parent's single FK column also
        // names the embed, but only when the target is not a view (as in PostgREST).
        let is_view = |t: &Table| matches!(t.kind.as_str(), "v" | "m");
        for fk in &cache.foreign_keys {
            let self_ref = fk.schema == fk.ref_schema && fk.table == fk.ref_table;
            // Parent holds the key: to the referenced table, or by constraint or FK column name.
            if same(&fk.schema, &fk.table) {
                let by_table = !self_ref && fk.ref_table == name && hint_fk(fk, false);
                let by_key = hint.is_none()
                    && (fk.name == name || (fk.columns.len() == 1 && fk.columns[0] == name));
                if let Some(target) = cache.table(&fk.ref_schema, &fk.ref_table)
                    && (by_table || (by_key && !is_view(target)))
                {
                    let cardinality = if cache.is_unique(&fk.schema, &fk.table, &fk.columns) {
                        Cardinality::OneToOne
                    } else {
                        Cardinality::ManyToOne
                    };
                    found.push(Relationship {
                        join: Join::Forward(fk),
                        cardinality,
                        target,
                    });
                }
            }
            // Child holds the key.
            if same(&fk.ref_schema, &fk.ref_table)
                && let Some(target) = cache.table(&fk.schema, &fk.table)
                && ((fk.table == name && hint_fk(fk, self_ref))
                    || (hint.is_none() && fk.name == name && !is_view(target)))
            {
                let cardinality =
                    if !self_ref && cache.is_unique(&fk.schema, &fk.table, &fk.columns) {
                        Cardinality::OneToOne
                    } else {
                        Cardinality::OneToMany
                    };
                found.push(Relationship {
                    join: Join::Backward(fk),
                    cardinality,
                    target,
                });
            }
        }
        // Many-to-many through junctions whose keys to both sides are unique together.
        for to_parent in cache
            .foreign_keys
            .iter()
            .filter(|fk| same(&fk.ref_schema, &fk.ref_table))
        {
            for to_child in cache.foreign_keys.iter().filter(|fk| {
                fk.schema == to_parent.schema
                    && fk.table == to_parent.table
                    && fk.name != to_parent.name
                    && fk.ref_table == name
            }) {
                let mut cols = to_parent.columns.clone();
                cols.extend(to_child.columns.iter().cloned());
                if !cache.is_unique(&to_parent.schema, &to_parent.table, &cols) {
                    continue;
                }
                if let Some(h) = hint
                    && h != to_parent.table
                    && h != to_parent.name
                    && h != to_child.name
                {
                    continue;
                }
                if let Some(target) = cache.table(&to_child.ref_schema, &to_child.ref_table) {
                    found.push(Relationship {
                        join: Join::Junction(to_parent, to_child),
                        cardinality: Cardinality::ManyToMany,
                        target,
                    });
                }
            }
        }
        // Prefer the parent's own schema when the name exists in several.
        if found.iter().any(|r| r.target.schema == ptable.schema) {
            found.retain(|r| r.target.schema == ptable.schema);
        }
        match found.len() {
            0 => Err(not_found()),
            1 => Ok(found.remove(0)),
            _ => Err(ambiguous(&ptable.name, name, &found)),
        }
    }
}

fn aggregates_disabled() -> ApiError {
    ApiError::new(400, "PGRST123", "Use of aggregate functions is not allowed")
}

/// `<constraint> using <from>(<cols>) and <to>(<cols>)`, as ambiguity details name a foreign key.
fn using(name: &str, from: (&str, &[String]), to: (&str, &[String])) -> String {
    format!(
        "{name} using {}({}) and {}({})",
        from.0,
        from.1.join(", "),
        to.0,
        to.1.join(", ")
    )
}

fn ambiguous(parent: &str, name: &str, found: &[Relationship<'_>]) -> ApiError {
    let mut details = Vec::new();
    let mut hints = Vec::new();
    for r in found {
        let (relationship, hint) = match r.join {
            Join::Forward(fk) => (
                using(
                    &fk.name,
                    (&fk.table, &fk.columns),
                    (&fk.ref_table, &fk.ref_columns),
                ),
                fk.name.clone(),
            ),
            Join::Backward(fk) => (
                using(
                    &fk.name,
                    (&fk.ref_table, &fk.ref_columns),
                    (&fk.table, &fk.columns),
                ),
                fk.name.clone(),
            ),
            Join::Junction(a, b) => (
                format!(
                    "{} using {}({}) and {}({})",
                    a.table,
                    a.name,
                    a.columns.join(", "),
                    b.name,
                    b.columns.join(", ")
                ),
                a.table.clone(),
            ),
            Join::Computed(f) => (f.name.clone(), f.name.clone()),
        };
        details.push(json!({
            "cardinality": r.cardinality.label(),
            "embedding": format!("{parent} with {name}"),
            "relationship": relationship,
        }));
        hints.push(format!("'{name}!{hint}'"));
    }
    ApiError::new(
        300,
        "PGRST201",
        format!("Could not embed because more than one relationship was found for '{parent}' and '{name}'"),
    )
    .details_json(serde_json::Value::Array(details))
    .hint(format!(
        "Try changing '{name}' to one of the following: {}. Find the desired relationship in the 'details' key.",
        hints.join(", ")
    ))
}

/// Finds the node an embed path (`a.b`) names.
pub fn node_at<'n, 'a>(
    root: &'n mut Node<'a>,
    path: &[String],
) -> Result<&'n mut Node<'a>, ApiError> {
    let mut node = root;
    for seg in path {
        let Some(i) = node
            .embeds
            .iter()
            .position(|e| &e.key == seg || &e.name == seg)
        else {
            return Err(ApiError::new(
                400,
                "PGRST108",
                format!(
                    "'{}' is not an embedded resource in this request",
                    path.join(".")
                ),
            )
            .hint(format!(
                "Verify that '{}' is included in the 'select' query parameter.",
                path.join(".")
            )));
        };
        node = &mut node.embeds[i].node;
    }
    Ok(node)
}

/// Renders SQL for a node tree.
pub struct Renderer<'p> {
    pub params: &'p mut Params,
    pub cache: &'p SchemaCache,
}

impl Renderer<'_> {
    fn field(
        &mut self,
        node: &Node<'_>,
        field: &Field,
        for_compare: bool,
    ) -> Result<String, ApiError> {
        let base = if node.source.columns.iter().any(|c| c.name == field.name) {
            format!("{}.{}", ident(&node.alias), ident(&field.name))
        } else if let Some(f) = node
            .source
            .table
            .and_then(|t| self.cache.computed(t, &field.name))
            .filter(|f| !f.returns_set)
        {
            format!("{}({})", qualified(&f.schema, &f.name), ident(&node.alias))
        } else {
            return Err(undefined_column(&node.error_name(), &field.name));
        };
        let mut sql = base;
        for step in &field.path {
            let arrow = match step.arrow {
                Arrow::Json => "->",
                Arrow::Text => "->>",
            };
            let key = match &step.key {
                JsonKey::Key(k) => format!("{}::text", self.params.bind(k.clone())),
                JsonKey::Index(i) => format!("({i})"),
            };
            sql = format!("({sql}{arrow}{key})");
        }
        if for_compare && field.path.last().is_some_and(|s| s.arrow == Arrow::Json) {
            sql = format!("({sql})::jsonb");
        }
        Ok(sql)
    }

    fn column_type<'n>(&self, node: &'n Node<'_>, field: &Field) -> Option<&'n str> {
        if !field.path.is_empty() {
            return None;
        }
        node.source
            .columns
            .iter()
            .find(|c| c.name == field.name)
            .map(|c| c.type_name.as_str())
    }

    /// A `where` condition.
    pub fn condition(&mut self, node: &Node<'_>, cond: &Condition) -> Result<String, ApiError> {
        match cond {
            Condition::Tree {
                negated,
                or,
                children,
            } => {
                let mut parts = Vec::new();
                for c in children {
                    parts.push(self.condition(node, c)?);
                }
                let joined = parts.join(if *or { " or " } else { " and " });
                Ok(if *negated {
                    format!("not ({joined})")
                } else {
                    format!("({joined})")
                })
            }
            Condition::Filter(f) => self.filter(node, f),
        }
    }

    fn filter(&mut self, node: &Node<'_>, f: &Filter) -> Result<String, ApiError> {
        let is_column = node.source.columns.iter().any(|c| c.name == f.field.name);
        if !is_column
            && f.field.path.is_empty()
            && let Some(e) = node
                .embeds
                .iter()
                .find(|e| e.key == f.field.name || e.name == f.field.name)
        {
            let null = match (&f.operation, f.negated) {
                (Operation::Is(IsVal::Null), false) | (Operation::Is(IsVal::NotNull), true) => true,
                (Operation::Is(IsVal::Null), true) | (Operation::Is(IsVal::NotNull), false) => {
                    false
                }
                _ => {
                    return Err(ApiError::new(
                        400,
                        "PGRST120",
                        format!("Bad operator on the '{}' embedded resource", f.field.name),
                    )
                    .details(
                        "Only is null or not is null filters are allowed on embedded resources",
                    ));
                }
            };
            return Ok(embed_present(e, !null));
        }
        let lhs = self.field(node, &f.field, true)?;
        let expr = match &f.operation {
            Operation::Simple { op, value } => {
                let value = if matches!(op, Op::Like | Op::Ilike) {
                    value.replace('*', "%")
                } else {
                    value.clone()
                };
                let p = self.params.bind(value);
                format!("{lhs} {} {p}", op.sql())
            }
            Operation::Quantified { op, quant, values } => {
                let values: Vec<String> = if matches!(op, Op::Like | Op::Ilike) {
                    values.iter().map(|v| v.replace('*', "%")).collect()
                } else {
                    values.clone()
                };
                let p = self.params.bind(array_literal(&values));
                let q = match quant {
                    Quant::Any => "any",
                    Quant::All => "all",
                };
                format!("{lhs} {} {q}({p})", op.sql())
            }
            Operation::In(values) if values.is_empty() => "false".to_owned(),
            Operation::In(values) => {
                let p = self.params.bind(array_literal(values));
                format!("{lhs} = any({p})")
            }
            Operation::Is(v) => {
                let kw = match v {
                    IsVal::Null => "is null",
                    IsVal::NotNull => "is not null",
                    IsVal::True => "is true",
                    IsVal::False => "is false",
                    IsVal::Unknown => "is unknown",
                };
                format!("{lhs} {kw}")
            }
            Operation::Fts {
                kind,
                config,
                value,
            } => {
                let cfg = config
                    .as_ref()
                    .map(|c| format!("{}::regconfig, ", self.params.bind(c.clone())));
                let cfg = cfg.unwrap_or_default();
                let q = self.params.bind(value.clone());
                let doc = if self.column_type(node, &f.field) == Some("tsvector") {
                    lhs
                } else {
                    format!("to_tsvector({cfg}{lhs})")
                };
                format!("{doc} @@ {}({cfg}{q})", kind.function())
            }
        };
        Ok(if f.negated {
            format!("not ({expr})")
        } else {
            expr
        })
    }

    fn order(&mut self, node: &Node<'_>, terms: &[OrderTerm]) -> Result<String, ApiError> {
        let mut parts = Vec::new();
        for t in terms {
            let expr = match &t.target {
                OrderTarget::Field(f) => self.field(node, f, true)?,
                OrderTarget::Related { relation, field } => {
                    let e = node
                        .embeds
                        .iter()
                        .find(|e| &e.key == relation || &e.name == relation)
                        .ok_or_else(|| {
                            ApiError::new(
                                400,
                                "PGRST108",
                                format!("'{relation}' is not an embedded resource in this request"),
                            )
                            .hint(format!(
                                "Verify that '{relation}' is included in the 'select' query parameter."
                            ))
                        })?;
                    if !e.rel.to_one() {
                        return Err(ApiError::new(
                            400,
                            "PGRST118",
                            format!("A related order on '{relation}' is not possible"),
                        )
                        .details(format!(
                            "'{relation}' is a one-to-many or many-to-many relationship"
                        )));
                    }
                    if !field.path.is_empty() || !e.node.names.contains(&field.name) {
                        return Err(ApiError::new(
                            400,
                            "PGRST118",
                            format!("A related order on '{relation}' is not possible"),
                        )
                        .details(format!("'{}' must be selected in '{relation}'", field.name)));
                    }
                    format!("{}.{}", ident(&e.lateral), ident(&field.name))
                }
            };
            let dir = if t.desc { " desc" } else { " asc" };
            let nulls = match t.nulls_first {
                Some(true) => " nulls first",
                Some(false) => " nulls last",
                None => "",
            };
            parts.push(format!("{expr}{dir}{nulls}"));
        }
        Ok(parts.join(", "))
    }

    fn join_condition(&self, parent: &Node<'_>, e: &Embed<'_>) -> Option<String> {
        let p = ident(&parent.alias);
        let c = ident(&e.node.alias);
        let pairs = |a: &str, acols: &[String], b: &str, bcols: &[String]| {
            acols
                .iter()
                .zip(bcols)
                .map(|(x, y)| format!("{a}.{} = {b}.{}", ident(x), ident(y)))
                .collect::<Vec<_>>()
                .join(" and ")
        };
        match e.rel.join {
            Join::Forward(fk) => Some(pairs(&c, &fk.ref_columns, &p, &fk.columns)),
            Join::Backward(fk) => Some(pairs(&c, &fk.columns, &p, &fk.ref_columns)),
            Join::Junction(tp, tc) => {
                let j = "\"pgrst_j\"";
                Some(format!(
                    "exists (select 1 from {} {j} where {} and {})",
                    qualified(&tp.schema, &tp.table),
                    pairs(j, &tp.columns, &p, &tp.ref_columns),
                    pairs(j, &tc.columns, &c, &tc.ref_columns)
                ))
            }
            Join::Computed(_) => None,
        }
    }

    fn out_sql(&mut self, node: &Node<'_>, out: &Out) -> Result<Vec<String>, ApiError> {
        Ok(match out {
            Out::Column {
                field,
                cast,
                agg,
                agg_cast,
                name,
            } => {
                let mut e = self.field(node, field, false)?;
                if let Some(c) = cast {
                    e = format!("({e})::{c}");
                }
                if let Some(a) = agg {
                    e = format!("{}({e})", a.sql());
                    if let Some(c) = agg_cast {
                        e = format!("({e})::{c}");
                    }
                }
                vec![format!("{e} as {}", ident(name))]
            }
            Out::CountAll { cast, name } => {
                let e = match cast {
                    Some(c) => format!("(count(*))::{c}"),
                    None => "count(*)".to_owned(),
                };
                vec![format!("{e} as {}", ident(name))]
            }
            Out::Embed(i) => {
                let e = &node.embeds[*i];
                let l = ident(&e.lateral);
                if e.spread {
                    e.node
                        .names
                        .iter()
                        .map(|n| format!("{l}.{} as {}", ident(n), ident(n)))
                        .collect()
                } else {
                    vec![format!("{l}.\"pgrst_body\" as {}", ident(&e.key))]
                }
            }
        })
    }

    /// `select ... from ... where ...` for `node`, with `extra` conditions.
    pub fn select(
        &mut self,
        node: &Node<'_>,
        extra: &[String],
        paginate: bool,
    ) -> Result<String, ApiError> {
        let mut items = Vec::new();
        let mut group = Vec::new();
        let has_agg = node
            .outs
            .iter()
            .any(|o| matches!(o, Out::CountAll { .. } | Out::Column { agg: Some(_), .. }));
        for o in &node.outs {
            // Grouped embeds compare as jsonb (json has no equality).
            if has_agg && let Out::Embed(i) = o {
                let e = &node.embeds[*i];
                let l = ident(&e.lateral);
                let cast = if e.rel.to_one() { "" } else { "::jsonb" };
                let exprs: Vec<(String, String)> = if e.spread {
                    e.node
                        .names
                        .iter()
                        .map(|n| (format!("{l}.{}{cast}", ident(n)), n.clone()))
                        .collect()
                } else {
                    vec![(format!("{l}.\"pgrst_body\"::jsonb"), e.key.clone())]
                };
                for (x, n) in exprs {
                    items.push(format!("{x} as {}", ident(&n)));
                    group.push(x);
                }
                continue;
            }
            let rendered = self.out_sql(node, o)?;
            if has_agg
                && let Out::Column {
                    agg: None,
                    field,
                    cast,
                    ..
                } = o
            {
                let mut e = self.field(node, field, false)?;
                if let Some(c) = cast {
                    e = format!("({e})::{c}");
                }
                group.push(e);
            }
            items.extend(rendered);
        }
        let (from, laterals, mut conds) = self.from_where(node, false)?;
        conds.extend(extra.iter().cloned());
        let mut sql = format!("select {} from {from}{laterals}", items.join(", "));
        if !conds.is_empty() {
            sql.push_str(" where ");
            sql.push_str(&conds.join(" and "));
        }
        if !group.is_empty() {
            sql.push_str(" group by ");
            sql.push_str(&group.join(", "));
        }
        if !node.order.is_empty() {
            let order = self.order(node, &node.order)?;
            sql.push_str(" order by ");
            sql.push_str(&order);
        }
        if paginate {
            if let Some(l) = node.limit {
                sql.push_str(&Self::limit(l));
            }
            if let Some(o) = node.offset.filter(|o| *o > 0) {
                sql.push_str(&format!(" offset {}", self.params.bind(o.to_string())));
            }
        }
        Ok(sql)
    }

    /// `select alias.ctid ...` choosing the rows a limited write touches.
    pub fn ctid_select(&mut self, node: &Node<'_>, conds: &[String]) -> Result<String, ApiError> {
        let mut sql = format!(
            "select {}.ctid from {} as {}",
            ident(&node.alias),
            node.from,
            ident(&node.alias)
        );
        if !conds.is_empty() {
            sql.push_str(" where ");
            sql.push_str(&conds.join(" and "));
        }
        if !node.order.is_empty() {
            let order = self.order(node, &node.order)?;
            sql.push_str(" order by ");
            sql.push_str(&order);
        }
        if let Some(l) = node.limit {
            sql.push_str(&Self::limit(l));
        }
        if let Some(o) = node.offset.filter(|o| *o > 0) {
            sql.push_str(&format!(" offset {}", self.params.bind(o.to_string())));
        }
        Ok(sql)
    }

    /// ` limit n` with `n` written into the statement, not bound. With a bound
    /// limit the planner of a prepared statement's generic plan must guess
    /// how many rows are wanted (a tenth of the table), prices that plan far
    /// above a custom one and so plans the statement again on every
    /// execution; with the number in the text the generic plan is priced
    /// right and reused. Page sizes are few, so this adds few statements to a
    /// connection's cache. `n` is an integer the handler parsed: nothing a
    /// client wrote reaches the text.
    fn limit(n: i64) -> String {
        format!(" limit {n}")
    }

    /// The `from` item with laterals, and the `where` conditions of `node`.
    pub fn from_where(
        &mut self,
        node: &Node<'_>,
        filtering_only: bool,
    ) -> Result<(String, String, Vec<String>), ApiError> {
        let from = format!("{} as {}", node.from, ident(&node.alias));
        let mut laterals = String::new();
        let mut conds = Vec::new();
        for e in &node.embeds {
            // A count needs only the embeds that decide which rows exist.
            if filtering_only
                && !e.inner
                && !node
                    .conditions
                    .iter()
                    .any(|c| mentions(c, &e.key) || mentions(c, &e.name))
            {
                continue;
            }
            let join = self.join_condition(node, e);
            let child_extra: Vec<String> = join.into_iter().collect();
            let child = self.select(&e.node, &child_extra, true)?;
            let l = ident(&e.lateral);
            let to_one = e.rel.to_one();
            let inner_sql = if to_one {
                format!(
                    "select row_to_json(\"pgrst_x\") as \"pgrst_body\", \"pgrst_x\".* from ({child}) \"pgrst_x\""
                )
            } else if e.spread {
                let cols: Vec<String> = e
                    .node
                    .names
                    .iter()
                    .map(|n| {
                        format!(
                            "coalesce(json_agg(\"pgrst_x\".{}), '[]') as {}",
                            ident(n),
                            ident(n)
                        )
                    })
                    .collect();
                format!(
                    "select {}, count(*) as \"pgrst_n\" from ({child}) \"pgrst_x\"",
                    cols.join(", ")
                )
            } else {
                format!(
                    "select coalesce(json_agg(\"pgrst_x\"), '[]') as \"pgrst_body\", count(*) as \"pgrst_n\" from ({child}) \"pgrst_x\""
                )
            };
            let kind = if to_one && e.inner { "inner" } else { "left" };
            laterals.push_str(&format!(" {kind} join lateral ({inner_sql}) {l} on true"));
            if e.inner && !to_one {
                conds.push(embed_present(e, true));
            }
        }
        for c in &node.conditions {
            conds.push(self.condition(node, c)?);
        }
        Ok((from, laterals, conds))
    }

    /// The response body expression over rows aliased `pgrst_t`.
    pub fn body(&mut self, media: Media, scalar: Option<&str>, names: &[String]) -> String {
        let row = match scalar {
            Some(col) => format!("\"pgrst_t\".{}", ident(col)),
            None => "\"pgrst_t\"".to_owned(),
        };
        match media {
            Media::Object { strip_nulls } => {
                let e = format!("(json_agg({row})->0)");
                if strip_nulls {
                    format!("coalesce(json_strip_nulls{e}::text, '')")
                } else {
                    format!("coalesce({e}::text, '')")
                }
            }
            Media::Array { strip_nulls: true } => {
                format!("coalesce(json_strip_nulls(json_agg({row})), '[]')::text")
            }
            Media::GeoJson => {
                // The handler refuses geo+json without PostGIS; the fallback never runs.
                let as_feature = self.cache.geojson_fn.as_deref().unwrap_or("st_asgeojson");
                format!(
                    "json_build_object('type', 'FeatureCollection', 'features', \
                     coalesce(json_agg({as_feature}({row})::json), '[]'))::text"
                )
            }
            Media::Csv => {
                let header: Vec<String> = names.iter().map(|n| csv_field(n)).collect();
                let header = self.params.bind(header.join(","));
                // Each line is the row's composite text without its parentheses, as
                // PostgREST renders it: values with spaces, commas, quotes, parentheses
                // or backslashes are quoted, NULL is empty and '' is `""`.
                format!(
                    "{header}::text || coalesce(E'\\n' || string_agg(substr(\"pgrst_t\"::text, 2, length(\"pgrst_t\"::text) - 2), E'\\n'), '')"
                )
            }
            _ => format!("coalesce(json_agg({row}), '[]')::text"),
        }
    }
}

/// True when a condition filters on `name` (an embed) anywhere in its tree.
fn mentions(c: &Condition, name: &str) -> bool {
    match c {
        Condition::Filter(f) => f.field.name == name && f.field.path.is_empty(),
        Condition::Tree { children, .. } => children.iter().any(|c| mentions(c, name)),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// True (as SQL) when the embed matched at least one row, or none when `present` is false.
fn embed_present(e: &Embed<'_>, present: bool) -> String {
    let l = ident(&e.lateral);
    if e.rel.to_one() {
        format!(
            "{l}.\"pgrst_body\" is {}null",
            if present { "not " } else { "" }
        )
    } else {
        format!("{l}.\"pgrst_n\" {} 0", if present { ">" } else { "=" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser;
    use crate::schema::{Column, ForeignKey, Table};

    fn col(name: &str, ty: &str) -> Column {
        Column {
            name: name.into(),
            type_name: ty.into(),
            nullable: true,
            default: None,
            description: None,
        }
    }

    fn cache() -> SchemaCache {
        let mut c = SchemaCache::default();
        for (name, cols) in [
            ("clients", vec![col("id", "integer"), col("name", "text")]),
            (
                "projects",
                vec![
                    col("id", "integer"),
                    col("name", "text"),
                    col("client_id", "integer"),
                    col("data", "jsonb"),
                ],
            ),
        ] {
            c.tables.insert(
                ("public".into(), name.into()),
                Table {
                    schema: "public".into(),
                    name: name.into(),
                    kind: "r".into(),
                    description: None,
                    columns: cols,
                    pk: vec!["id".into()],
                },
            );
            c.unique_keys
                .insert(("public".into(), name.into()), vec![vec!["id".into()]]);
        }
        c.foreign_keys.push(ForeignKey {
            name: "projects_client_id_fkey".into(),
            schema: "public".into(),
            table: "projects".into(),
            columns: vec!["client_id".into()],
            ref_schema: "public".into(),
            ref_table: "clients".into(),
            ref_columns: vec!["id".into()],
        });
        c
    }

    /// Plans and renders a read of `table`, as the handler does.
    fn render(
        cache: &SchemaCache,
        table: &str,
        select: &str,
        filters: &[(&str, &str)],
    ) -> Result<(String, Params), ApiError> {
        render_page(cache, table, select, filters, None, None)
    }

    /// [`render`] of one page: `limit` and `offset` set on the root.
    fn render_page(
        cache: &SchemaCache,
        table: &str,
        select: &str,
        filters: &[(&str, &str)],
        limit: Option<i64>,
        offset: Option<i64>,
    ) -> Result<(String, Params), ApiError> {
        let t = cache
            .table("public", table)
            .ok_or_else(|| ApiError::new(404, "x", "x"))?;
        let items = parser::parse_select(select).map_err(|e| ApiError::parse(&e))?;
        let mut planner = Planner::new(cache, true);
        let source = Source {
            schema: t.schema.clone(),
            name: t.name.clone(),
            columns: &t.columns,
            table: Some(t),
        };
        let mut root = planner.node(
            t.name.clone(),
            source,
            qualified(&t.schema, &t.name),
            &items,
        )?;
        for (k, v) in filters {
            let (path, field) = parser::parse_key(k).map_err(|e| ApiError::parse(&e))?;
            let f = parser::parse_filter_value(field, v).map_err(|e| ApiError::parse(&e))?;
            node_at(&mut root, &path)?
                .conditions
                .push(Condition::Filter(f));
        }
        root.limit = limit;
        root.offset = offset;
        let mut params = Params::default();
        let mut r = Renderer {
            params: &mut params,
            cache,
        };
        let sql = r.select(&root, &[], true)?;
        Ok((sql, params))
    }

    /// The SQL with every double-quoted identifier removed.
    fn outside_identifiers(sql: &str) -> String {
        let mut out = String::new();
        let mut in_ident = false;
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if in_ident && chars.peek() == Some(&'"') {
                    chars.next();
                    continue;
                }
                in_ident = !in_ident;
                continue;
            }
            if !in_ident {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn renders_embeds_and_binds_values() {
        let c = cache();
        let (sql, params) = render(
            &c,
            "projects",
            "id,client:clients(name),data->>k",
            &[("client.name", "eq.x'; drop"), ("data->>k", "in.(a,b)")],
        )
        .unwrap();
        assert!(sql.contains("left join lateral"), "{sql}");
        assert!(!sql.contains("drop"), "{sql}");
        assert!(
            params
                .values
                .iter()
                .any(|v| v.as_deref() == Some("x'; drop"))
        );
        assert!(
            params
                .values
                .iter()
                .any(|v| v.as_deref() == Some("{\"a\",\"b\"}"))
        );
        let e = render(&c, "clients", "id,tasks(id)", &[]).unwrap_err();
        assert_eq!(e.code, "PGRST200");
        let e = render(&c, "clients", "nope", &[]).unwrap_err();
        assert_eq!(e.code, "42703");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Whatever the select and filters, rendering never panics, values
            /// only travel as parameters, and nothing outside quoted
            /// identifiers can end a statement or start a comment.
            #[test]
            fn values_never_reach_sql_text(
                select in prop_oneof![
                    Just("*".to_owned()),
                    Just("id,client:clients(*)".to_owned()),
                    Just("\"we;ird\":name,clients(n:name)".to_owned()),
                    "[a-z_:(),.*!>\\-\"; ']{0,40}",
                    "(id|name|client_id)::(union|select|text|int|double)( (union|select|text|precision)){0,3}",
                ],
                key in prop_oneof![
                    Just("id".to_owned()),
                    Just("name".to_owned()),
                    Just("data->>k".to_owned()),
                    Just("clients.name".to_owned()),
                    "[a-z_.>\\-]{1,20}",
                ],
                value in "\\PC{0,30}",
            ) {
                let c = cache();
                let marked = format!("eq.ZZMARK{value}");
                for table in ["clients", "projects"] {
                    if let Ok((sql, params)) = render(&c, table, &select, &[(key.as_str(), marked.as_str())]) {
                        prop_assert!(!sql.contains("ZZMARK"), "{}", sql);
                        let outside = outside_identifiers(&sql);
                        prop_assert!(!outside.contains(';'), "{}", sql);
                        prop_assert!(!outside.contains("--"), "{}", sql);
                        prop_assert!(!outside.to_lowercase().contains(" union "), "{}", sql);
                        let max = (1..=params.values.len()).rev().find(|n| sql.contains(&format!("${n}"))).unwrap_or(0);
                        prop_assert_eq!(max, params.values.len());
                    }
                }
            }
        }
    }

    #[test]
    fn page_sizes_are_written_into_the_statement_and_offsets_bound() {
        let c = cache();
        let (sql, params) =
            render_page(&c, "clients", "id", &[("id", "gte.5")], Some(10), Some(20)).unwrap();
        assert!(sql.ends_with(" limit 10 offset $2"), "{sql}");
        assert_eq!(params.values, [Some("5".to_owned()), Some("20".to_owned())]);
        let (sql, params) = render_page(&c, "clients", "id", &[], Some(0), None).unwrap();
        assert!(sql.ends_with(" limit 0"), "{sql}");
        assert!(params.values.is_empty());
    }

    #[test]
    fn identifiers_and_literals_are_escaped() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(qualified("public", "x y"), "\"public\".\"x y\"");
        assert_eq!(
            array_literal(&["a,b".into(), "q\"\\".into()]),
            "{\"a,b\",\"q\\\"\\\\\"}"
        );
    }
}
