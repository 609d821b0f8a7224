//! The query-string grammar: `select`, filters, logic trees (`or`/`and`) and
//! `order`. Parsing only builds a syntax tree; names are checked against the
//! schema cache later, and values never reach SQL text (they are bound).

use std::fmt;

/// A parse failure, reported as `PGRST100`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What was being parsed: `select`, `filter`, `order`, ...
    pub what: &'static str,
    pub input: String,
    /// 1-based column of the failure.
    pub column: usize,
    pub details: String,
}

impl ParseError {
    pub fn message(&self) -> String {
        format!(
            "\"failed to parse {} parameter ({})\" (line 1, column {})",
            self.what, self.input, self.column
        )
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.message(), self.details)
    }
}

/// `->` (keeps JSON) or `->>` (text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrow {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonKey {
    Key(String),
    Index(i64),
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonStep {
    pub arrow: Arrow,
    pub key: JsonKey,
}

/// A column with an optional JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub path: Vec<JsonStep>,
}

impl Field {
    /// The output key: the last path element, else the column name.
    pub fn output_name(&self) -> String {
        match self.path.last() {
            Some(JsonStep {
                key: JsonKey::Key(k),
                ..
            }) => k.clone(),
            Some(JsonStep {
                key: JsonKey::Index(i),
                ..
            }) => i.to_string(),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

impl AggFn {
    pub fn sql(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Avg => "avg",
            Self::Min => "min",
            Self::Max => "max",
            Self::Count => "count",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
}

/// One item of `select`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectItem {
    Star,
    Column {
        field: Field,
        alias: Option<String>,
        cast: Option<String>,
        agg: Option<AggFn>,
        agg_cast: Option<String>,
    },
    /// `count()` over the whole group.
    CountAll {
        alias: Option<String>,
        cast: Option<String>,
    },
    Embed {
        name: String,
        alias: Option<String>,
        hint: Option<String>,
        join: Option<JoinKind>,
        spread: bool,
        items: Vec<SelectItem>,
    },
}

/// Filter operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Ilike,
    Match,
    Imatch,
    IsDistinct,
    Cs,
    Cd,
    Ov,
    Sl,
    Sr,
    Nxl,
    Nxr,
    Adj,
}

impl Op {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "eq" => Self::Eq,
            "neq" => Self::Neq,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            "like" => Self::Like,
            "ilike" => Self::Ilike,
            "match" => Self::Match,
            "imatch" => Self::Imatch,
            "isdistinct" => Self::IsDistinct,
            "cs" => Self::Cs,
            "cd" => Self::Cd,
            "ov" => Self::Ov,
            "sl" => Self::Sl,
            "sr" => Self::Sr,
            "nxl" => Self::Nxl,
            "nxr" => Self::Nxr,
            "adj" => Self::Adj,
            _ => return None,
        })
    }

    /// The SQL operator.
    pub fn sql(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Neq => "<>",
            Self::Gt => ">",
            Self::Gte => ">=",
            Self::Lt => "<",
            Self::Lte => "<=",
            Self::Like => "like",
            Self::Ilike => "ilike",
            Self::Match => "~",
            Self::Imatch => "~*",
            Self::IsDistinct => "is distinct from",
            Self::Cs => "@>",
            Self::Cd => "<@",
            Self::Ov => "&&",
            Self::Sl => "<<",
            Self::Sr => ">>",
            Self::Nxl => "&>",
            Self::Nxr => "&<",
            Self::Adj => "-|-",
        }
    }

    fn quantifiable(self) -> bool {
        matches!(
            self,
            Self::Eq
                | Self::Like
                | Self::Ilike
                | Self::Gt
                | Self::Gte
                | Self::Lt
                | Self::Lte
                | Self::Match
                | Self::Imatch
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    Any,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsVal {
    Null,
    NotNull,
    True,
    False,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FtsKind {
    Fts,
    Plain,
    Phrase,
    Web,
}

impl FtsKind {
    pub fn function(self) -> &'static str {
        match self {
            Self::Fts => "to_tsquery",
            Self::Plain => "plainto_tsquery",
            Self::Phrase => "phraseto_tsquery",
            Self::Web => "websearch_to_tsquery",
        }
    }
}

/// The right side of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Simple {
        op: Op,
        value: String,
    },
    Quantified {
        op: Op,
        quant: Quant,
        values: Vec<String>,
    },
    In(Vec<String>),
    Is(IsVal),
    Fts {
        kind: FtsKind,
        config: Option<String>,
        value: String,
    },
}

/// `field=[not.]operation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub negated: bool,
    pub field: Field,
    pub operation: Operation,
}

/// A condition of a `where` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Filter(Filter),
    Tree {
        negated: bool,
        or: bool,
        children: Vec<Condition>,
    },
}

/// What an `order` term sorts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderTarget {
    Field(Field),
    /// `rel(col)`: a column of a to-one embed.
    Related {
        relation: String,
        field: Field,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTerm {
    pub target: OrderTarget,
    pub desc: bool,
    /// `Some(true)` for nullsfirst.
    pub nulls_first: Option<bool>,
}

/// The largest nesting depth of `select` embeds and logic trees.
pub const MAX_DEPTH: usize = 16;

struct Cursor<'a> {
    what: &'static str,
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl<'a> Cursor<'a> {
    fn new(what: &'static str, input: &'a str) -> Self {
        Self {
            what,
            input,
            chars: input.chars().collect(),
            pos: 0,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(i, c)| self.peek_at(i) == Some(c))
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.starts_with(s) {
            self.pos += s.chars().count();
            true
        } else {
            false
        }
    }

    fn error(&self, expecting: &str) -> ParseError {
        let found = match self.peek() {
            Some(c) => format!("unexpected {c:?}"),
            None => "unexpected end of input".to_owned(),
        };
        ParseError {
            what: self.what,
            input: self.input.to_owned(),
            column: self.pos + 1,
            details: format!("{found} expecting {expecting}"),
        }
    }

    fn expect(&mut self, s: &str) -> Result<(), ParseError> {
        if self.eat(s) {
            Ok(())
        } else {
            Err(self.error(&format!("{s:?}")))
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError {
                what: self.what,
                input: self.input.to_owned(),
                column: self.pos + 1,
                details: format!("nesting deeper than {MAX_DEPTH} levels"),
            });
        }
        Ok(())
    }

    /// A double-quoted string with `\"` and `\\` escapes.
    fn quoted(&mut self) -> Result<String, ParseError> {
        self.expect("\"")?;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("closing quote")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') if matches!(self.peek_at(1), Some('"' | '\\')) => {
                    out.push(self.peek_at(1).unwrap_or('\\'));
                    self.pos += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// An identifier: quoted, or letters, digits, `_`, `$`, spaces and `-` not starting `->`.
    fn name(&mut self) -> Result<String, ParseError> {
        if self.peek() == Some('"') {
            return self.quoted();
        }
        let start = self.pos;
        while let Some(c) = self.peek() {
            let ok = c.is_alphanumeric()
                || c == '_'
                || c == '$'
                || c == ' '
                || (c == '-' && self.peek_at(1) != Some('>'));
            if !ok {
                break;
            }
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        let trimmed = name.trim();
        if trimmed.is_empty() {
            self.pos = start;
            return Err(self.error("field name"));
        }
        Ok(trimmed.to_owned())
    }

    fn json_path(&mut self) -> Result<Vec<JsonStep>, ParseError> {
        let mut path = Vec::new();
        loop {
            let arrow = if self.eat("->>") {
                Arrow::Text
            } else if self.eat("->") {
                Arrow::Json
            } else {
                return Ok(path);
            };
            let key = if self.peek() == Some('"') {
                JsonKey::Key(self.quoted()?)
            } else {
                let start = self.pos;
                if self.peek() == Some('-') {
                    self.pos += 1;
                }
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                let digits: String = self.chars[start..self.pos].iter().collect();
                let boundary = !self
                    .peek()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
                match digits.parse::<i64>() {
                    Ok(i) if boundary => JsonKey::Index(i),
                    _ => {
                        self.pos = start;
                        JsonKey::Key(self.name()?)
                    }
                }
            };
            path.push(JsonStep { arrow, key });
        }
    }

    fn field(&mut self) -> Result<Field, ParseError> {
        let name = self.name()?;
        let path = self.json_path()?;
        Ok(Field { name, path })
    }

    /// A cast type: one identifier (letters, digits, `_`) or one of
    /// PostgreSQL's multi-word type names, with optional trailing `[]`s.
    /// Nothing else passes, so a cast can never carry more SQL.
    fn cast(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ')
        {
            self.pos += 1;
        }
        let words: Vec<String> = self.chars[start..self.pos]
            .iter()
            .collect::<String>()
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        let name = words.join(" ");
        let valid = match words.len() {
            1 => name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'),
            _ => MULTI_WORD_TYPES.contains(&name.as_str()),
        };
        if !valid {
            self.pos = start;
            return Err(self.error("a type name"));
        }
        let mut ty = name;
        while self.eat("[]") {
            ty.push_str("[]");
        }
        Ok(ty)
    }
}

/// Type names of more than one word that casts may use.
const MULTI_WORD_TYPES: [&str; 7] = [
    "double precision",
    "character varying",
    "bit varying",
    "timestamp with time zone",
    "timestamp without time zone",
    "time with time zone",
    "time without time zone",
];

/// Parses a `select` value.
pub fn parse_select(input: &str) -> Result<Vec<SelectItem>, ParseError> {
    let mut c = Cursor::new("select", input);
    if input.trim().is_empty() {
        return Ok(vec![SelectItem::Star]);
    }
    let items = select_list(&mut c)?;
    if !c.at_end() {
        return Err(c.error("\",\" or end of input"));
    }
    Ok(items)
}

fn select_list(c: &mut Cursor<'_>) -> Result<Vec<SelectItem>, ParseError> {
    let mut items = vec![select_item(c)?];
    while c.eat(",") {
        items.push(select_item(c)?);
    }
    Ok(items)
}

fn agg_fn(c: &mut Cursor<'_>) -> Option<AggFn> {
    for (name, f) in [
        ("sum()", AggFn::Sum),
        ("avg()", AggFn::Avg),
        ("min()", AggFn::Min),
        ("max()", AggFn::Max),
        ("count()", AggFn::Count),
    ] {
        if c.eat(name) {
            return Some(f);
        }
    }
    None
}

fn select_item(c: &mut Cursor<'_>) -> Result<SelectItem, ParseError> {
    if c.eat("*") {
        return Ok(SelectItem::Star);
    }
    let spread = c.eat("...");
    let start = c.pos;
    let mut alias = None;
    let mut name = c.name()?;
    // `alias:` (but not `::` which starts a cast)
    if c.peek() == Some(':') && c.peek_at(1) != Some(':') {
        c.pos += 1;
        alias = Some(name);
        if c.starts_with("count()") {
            name = String::new();
        } else {
            name = c.name()?;
        }
    }
    if name.is_empty() || (name == "count" && c.starts_with("()")) {
        if name == "count" {
            c.expect("()")?;
        } else {
            c.expect("count()")?;
        }
        let cast = if c.eat("::") { Some(c.cast()?) } else { None };
        return Ok(SelectItem::CountAll { alias, cast });
    }
    if c.peek() == Some('!') || c.peek() == Some('(') {
        let mut hint = None;
        let mut join = None;
        while c.eat("!") {
            let h = c.name()?;
            match h.as_str() {
                "inner" => join = Some(JoinKind::Inner),
                "left" => join = Some(JoinKind::Left),
                _ if hint.is_none() => hint = Some(h),
                _ => return Err(c.error("\"(\"")),
            }
        }
        c.expect("(")?;
        c.enter()?;
        let items = if c.peek() == Some(')') {
            Vec::new()
        } else {
            select_list(c)?
        };
        c.expect(")")?;
        c.depth -= 1;
        return Ok(SelectItem::Embed {
            name,
            alias,
            hint,
            join,
            spread,
            items,
        });
    }
    if spread {
        c.pos = start;
        return Err(c.error("a relation to spread"));
    }
    let path = c.json_path()?;
    let field = Field { name, path };
    let cast = if c.eat("::") { Some(c.cast()?) } else { None };
    let mut agg = None;
    let mut agg_cast = None;
    if c.peek() == Some('.') {
        c.pos += 1;
        agg = Some(
            agg_fn(c)
                .ok_or_else(|| c.error("an aggregate: sum(), avg(), min(), max() or count()"))?,
        );
        if c.eat("::") {
            agg_cast = Some(c.cast()?);
        }
    }
    Ok(SelectItem::Column {
        field,
        alias,
        cast,
        agg,
        agg_cast,
    })
}

/// Splits a filter key into its embed path and field: `a.b.col->x` → (`[a, b]`, `col->x`).
pub fn parse_key(key: &str) -> Result<(Vec<String>, Field), ParseError> {
    let mut c = Cursor::new("filter", key);
    let mut segments = Vec::new();
    loop {
        let field = c.field()?;
        if field.path.is_empty() && c.eat(".") {
            segments.push(field.name);
            continue;
        }
        if !c.at_end() {
            return Err(c.error("\".\", \"->\" or end of input"));
        }
        return Ok((segments, field));
    }
}

/// Parses a filter value `[not.]op[(modifier)].value` given as a query parameter.
pub fn parse_filter_value(field: Field, input: &str) -> Result<Filter, ParseError> {
    let mut c = Cursor::new("filter", input);
    let filter = filter_body(&mut c, field, false)?;
    Ok(filter)
}

/// Values inside a list: `(a,"b,c")` or `{a,b}`.
fn list(c: &mut Cursor<'_>, open: char, close: char) -> Result<Vec<String>, ParseError> {
    c.expect(&open.to_string())?;
    let mut out = Vec::new();
    if c.eat(&close.to_string()) {
        return Ok(out);
    }
    loop {
        let item = if c.peek() == Some('"') {
            c.quoted()?
        } else {
            let start = c.pos;
            while c.peek().is_some_and(|ch| ch != ',' && ch != close) {
                c.pos += 1;
            }
            c.chars[start..c.pos].iter().collect()
        };
        out.push(item);
        if c.eat(",") {
            continue;
        }
        c.expect(&close.to_string())?;
        return Ok(out);
    }
}

/// A value inside a logic tree: quoted, or up to `,` / `)` outside braces.
fn tree_value(c: &mut Cursor<'_>) -> Result<String, ParseError> {
    if c.peek() == Some('"') {
        return c.quoted();
    }
    let start = c.pos;
    let mut braces = 0usize;
    while let Some(ch) = c.peek() {
        match ch {
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            ',' | ')' if braces == 0 => break,
            _ => {}
        }
        c.pos += 1;
    }
    Ok(c.chars[start..c.pos].iter().collect())
}

fn filter_body(c: &mut Cursor<'_>, field: Field, in_tree: bool) -> Result<Filter, ParseError> {
    let negated = c.eat("not.");
    let op_start = c.pos;
    while c.peek().is_some_and(|ch| ch.is_ascii_alphabetic()) {
        c.pos += 1;
    }
    let op_name: String = c.chars[op_start..c.pos].iter().collect();
    let expecting = "\"not\" or operator (eq, neq, gt, gte, lt, lte, like, ilike, match, imatch, in, is, isdistinct, fts, plfts, phfts, wfts, cs, cd, ov, sl, sr, nxr, nxl, adj)";
    let mut modifier = None;
    if c.peek() == Some('(') {
        c.pos += 1;
        let start = c.pos;
        while c.peek().is_some_and(|ch| ch != ')') {
            c.pos += 1;
        }
        modifier = Some(c.chars[start..c.pos].iter().collect::<String>());
        c.expect(")")?;
    }
    let fts = match op_name.as_str() {
        "fts" => Some(FtsKind::Fts),
        "plfts" => Some(FtsKind::Plain),
        "phfts" => Some(FtsKind::Phrase),
        "wfts" => Some(FtsKind::Web),
        _ => None,
    };
    let operation = if let Some(kind) = fts {
        c.expect(".")?;
        let value = if in_tree { tree_value(c)? } else { rest(c) };
        Operation::Fts {
            kind,
            config: modifier,
            value,
        }
    } else if op_name == "in" && modifier.is_none() {
        c.expect(".")?;
        Operation::In(list(c, '(', ')')?)
    } else if op_name == "is" && modifier.is_none() {
        c.expect(".")?;
        let v = if in_tree { tree_value(c)? } else { rest(c) };
        let is = match v.to_ascii_lowercase().as_str() {
            "null" => IsVal::Null,
            "not_null" => IsVal::NotNull,
            "true" => IsVal::True,
            "false" => IsVal::False,
            "unknown" => IsVal::Unknown,
            _ => return Err(c.error("null, not_null, true, false or unknown")),
        };
        Operation::Is(is)
    } else {
        let Some(op) = Op::parse(&op_name) else {
            c.pos = op_start;
            return Err(c.error(expecting));
        };
        match modifier.as_deref() {
            None => {
                c.expect(".")?;
                let value = if in_tree { tree_value(c)? } else { rest(c) };
                Operation::Simple { op, value }
            }
            Some(m @ ("any" | "all")) if op.quantifiable() => {
                c.expect(".")?;
                let quant = if m == "any" { Quant::Any } else { Quant::All };
                Operation::Quantified {
                    op,
                    quant,
                    values: list(c, '{', '}')?,
                }
            }
            Some(_) => {
                c.pos = op_start;
                return Err(c.error(
                    "a modifier (any) or (all) on eq, like, ilike, gt, gte, lt, lte, match, imatch",
                ));
            }
        }
    };
    if !in_tree && !c.at_end() {
        return Err(c.error("end of input"));
    }
    Ok(Filter {
        negated,
        field,
        operation,
    })
}

fn rest(c: &mut Cursor<'_>) -> String {
    let s: String = c.chars[c.pos..].iter().collect();
    c.pos = c.chars.len();
    s
}

/// Parses the value of an `or`/`and` parameter: `(cond,cond,...)`.
pub fn parse_logic(or: bool, negated: bool, input: &str) -> Result<Condition, ParseError> {
    let mut c = Cursor::new("logic tree", input);
    let children = logic_children(&mut c)?;
    if !c.at_end() {
        return Err(c.error("end of input"));
    }
    Ok(Condition::Tree {
        negated,
        or,
        children,
    })
}

fn logic_children(c: &mut Cursor<'_>) -> Result<Vec<Condition>, ParseError> {
    c.expect("(")?;
    c.enter()?;
    let mut children = vec![logic_item(c)?];
    while c.eat(",") {
        children.push(logic_item(c)?);
    }
    c.expect(")")?;
    c.depth -= 1;
    Ok(children)
}

fn logic_item(c: &mut Cursor<'_>) -> Result<Condition, ParseError> {
    let save = c.pos;
    let negated = c.eat("not.");
    for (kw, or) in [("or(", true), ("and(", false)] {
        if c.starts_with(kw) {
            c.pos += kw.len() - 1;
            let children = logic_children(c)?;
            return Ok(Condition::Tree {
                negated,
                or,
                children,
            });
        }
    }
    c.pos = save;
    let field = c.field()?;
    c.expect(".")?;
    Ok(Condition::Filter(filter_body(c, field, true)?))
}

/// Parses an `order` value.
pub fn parse_order(input: &str) -> Result<Vec<OrderTerm>, ParseError> {
    let mut c = Cursor::new("order", input);
    let mut terms = Vec::new();
    loop {
        let field = c.field()?;
        let target = if field.path.is_empty() && c.eat("(") {
            let inner = c.field()?;
            c.expect(")")?;
            OrderTarget::Related {
                relation: field.name,
                field: inner,
            }
        } else {
            OrderTarget::Field(field)
        };
        let mut term = OrderTerm {
            target,
            desc: false,
            nulls_first: None,
        };
        if c.eat(".asc") {
        } else if c.eat(".desc") {
            term.desc = true;
        }
        if c.eat(".nullsfirst") {
            term.nulls_first = Some(true);
        } else if c.eat(".nullslast") {
            term.nulls_first = Some(false);
        }
        terms.push(term);
        if c.eat(",") {
            continue;
        }
        if !c.at_end() {
            return Err(c.error("\",\", \".asc\", \".desc\", \".nullsfirst\" or \".nullslast\""));
        }
        return Ok(terms);
    }
}

/// Parses a `columns` value: `"a","b"` or `a,b`.
pub fn parse_columns(input: &str) -> Result<Vec<String>, ParseError> {
    let mut c = Cursor::new("columns", input);
    let mut out = vec![c.name()?];
    while c.eat(",") {
        out.push(c.name()?);
    }
    if !c.at_end() {
        return Err(c.error("\",\" or end of input"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str) -> SelectItem {
        SelectItem::Column {
            field: Field {
                name: name.into(),
                path: vec![],
            },
            alias: None,
            cast: None,
            agg: None,
            agg_cast: None,
        }
    }

    #[test]
    fn select_forms() {
        assert_eq!(parse_select("*").unwrap(), vec![SelectItem::Star]);
        assert_eq!(
            parse_select("id,name").unwrap(),
            vec![col("id"), col("name")]
        );
        let items = parse_select("n:name,id::text,data->a->>b,\"my col\",x-y").unwrap();
        assert_eq!(items.len(), 5);
        match &items[0] {
            SelectItem::Column { alias, field, .. } => {
                assert_eq!(alias.as_deref(), Some("n"));
                assert_eq!(field.name, "name");
            }
            other => panic!("{other:?}"),
        }
        match &items[1] {
            SelectItem::Column { cast, .. } => assert_eq!(cast.as_deref(), Some("text")),
            other => panic!("{other:?}"),
        }
        match &items[2] {
            SelectItem::Column { field, .. } => {
                assert_eq!(field.output_name(), "b");
                assert_eq!(field.path[1].arrow, Arrow::Text);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(items[3], col("my col"));
        assert_eq!(items[4], col("x-y"));
        match &parse_select("arr->0").unwrap()[0] {
            SelectItem::Column { field, .. } => assert_eq!(field.path[0].key, JsonKey::Index(0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn embeds_hints_and_spreads() {
        let items = parse_select("*,a:rel!fk!inner(id,sub(*)),...other(x),empty()").unwrap();
        match &items[1] {
            SelectItem::Embed {
                name,
                alias,
                hint,
                join,
                items,
                spread,
            } => {
                assert_eq!(name, "rel");
                assert_eq!(alias.as_deref(), Some("a"));
                assert_eq!(hint.as_deref(), Some("fk"));
                assert_eq!(*join, Some(JoinKind::Inner));
                assert!(!spread);
                assert_eq!(items.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&items[2], SelectItem::Embed { spread: true, .. }));
        assert!(matches!(&items[3], SelectItem::Embed { items, .. } if items.is_empty()));
    }

    #[test]
    fn aggregates() {
        let items = parse_select("total:amount.sum(),count(),c:count(),amount::numeric.avg()::int")
            .unwrap();
        assert!(matches!(
            &items[0],
            SelectItem::Column {
                agg: Some(AggFn::Sum),
                ..
            }
        ));
        assert!(matches!(
            &items[1],
            SelectItem::CountAll { alias: None, .. }
        ));
        assert!(matches!(
            &items[2],
            SelectItem::CountAll { alias: Some(_), .. }
        ));
        assert!(matches!(
            &items[3],
            SelectItem::Column {
                agg: Some(AggFn::Avg),
                agg_cast: Some(_),
                cast: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn select_errors_point_at_the_column() {
        let e = parse_select("id,,name").unwrap_err();
        assert_eq!(e.column, 4);
        assert_eq!(
            e.message(),
            "\"failed to parse select parameter (id,,name)\" (line 1, column 4)"
        );
        assert!(parse_select("rel(id").is_err());
        assert!(parse_select("id::").is_err());
        assert!(parse_select("id;drop table x").is_err());
        assert!(parse_select("id::text;drop").is_err());
        assert!(parse_select("id::text union select 1").is_err());
        assert!(parse_select("id::text from x").is_err());
        assert!(parse_select("x:id::double precision,y:id::timestamp with time zone[]").is_ok());
        assert!(parse_select("a.b").is_err());
        let deep = format!("{}id{}", "r(".repeat(40), ")".repeat(40));
        assert!(parse_select(&deep).unwrap_err().details.contains("nesting"));
    }

    fn f(name: &str) -> Field {
        Field {
            name: name.into(),
            path: vec![],
        }
    }

    #[test]
    fn filters() {
        let x = parse_filter_value(f("a"), "eq.1").unwrap();
        assert_eq!(
            x.operation,
            Operation::Simple {
                op: Op::Eq,
                value: "1".into()
            }
        );
        let x = parse_filter_value(f("a"), "not.in.(1,\"a,b\",\"q\\\"x\")").unwrap();
        assert!(x.negated);
        assert_eq!(
            x.operation,
            Operation::In(vec!["1".into(), "a,b".into(), "q\"x".into()])
        );
        let x = parse_filter_value(f("a"), "like(any).{a*,b*}").unwrap();
        assert_eq!(
            x.operation,
            Operation::Quantified {
                op: Op::Like,
                quant: Quant::Any,
                values: vec!["a*".into(), "b*".into()]
            }
        );
        let x = parse_filter_value(f("a"), "fts(english).fat & rat").unwrap();
        assert!(matches!(
            x.operation,
            Operation::Fts {
                kind: FtsKind::Fts,
                config: Some(_),
                ..
            }
        ));
        assert_eq!(
            parse_filter_value(f("a"), "is.not_null").unwrap().operation,
            Operation::Is(IsVal::NotNull)
        );
        assert_eq!(
            parse_filter_value(f("a"), "eq.a.b.c").unwrap().operation,
            Operation::Simple {
                op: Op::Eq,
                value: "a.b.c".into()
            }
        );
        let e = parse_filter_value(f("a"), "bogus.1").unwrap_err();
        assert!(
            e.details
                .starts_with("unexpected 'b' expecting \"not\" or operator"),
            "{}",
            e.details
        );
        assert!(parse_filter_value(f("a"), "is.maybe").is_err());
        assert!(parse_filter_value(f("a"), "eq").is_err());
        assert!(parse_filter_value(f("a"), "in.(1,2").is_err());
        assert!(parse_filter_value(f("a"), "cs(any).{1}").is_err());
    }

    #[test]
    fn keys() {
        let (path, field) = parse_key("a.b.data->x->>y").unwrap();
        assert_eq!(path, vec!["a", "b"]);
        assert_eq!(field.name, "data");
        assert_eq!(field.path.len(), 2);
        assert!(parse_key("a..b").is_err());
    }

    #[test]
    fn logic_trees() {
        let t = parse_logic(
            true,
            false,
            "(a.eq.1,and(b.gt.0,b.not.lt.9),not.or(c.is.null,d.in.(1,2)),e.eq.\"x,y\")",
        )
        .unwrap();
        let Condition::Tree { or, children, .. } = t else {
            panic!()
        };
        assert!(or);
        assert_eq!(children.len(), 4);
        assert!(
            matches!(&children[1], Condition::Tree { or: false, negated: false, children } if children.len() == 2)
        );
        assert!(matches!(
            &children[2],
            Condition::Tree {
                or: true,
                negated: true,
                ..
            }
        ));
        match &children[3] {
            Condition::Filter(f) => assert_eq!(
                f.operation,
                Operation::Simple {
                    op: Op::Eq,
                    value: "x,y".into()
                }
            ),
            other => panic!("{other:?}"),
        }
        assert!(parse_logic(true, false, "(a.eq.1").is_err());
        assert!(parse_logic(true, false, "a.eq.1").is_err());
        assert!(parse_logic(true, false, "(a.zz.1)").is_err());
        let deep = format!(
            "{}a.eq.1{}",
            "(or".repeat(30).replacen("(or", "(", 1),
            ")".repeat(30)
        );
        assert!(parse_logic(true, false, &deep).is_err());
    }

    #[test]
    fn order() {
        let o = parse_order("a.desc,b.asc.nullsfirst,data->>k.desc.nullslast,rel(x).desc").unwrap();
        assert_eq!(o.len(), 4);
        assert!(o[0].desc);
        assert_eq!(o[1].nulls_first, Some(true));
        assert!(matches!(&o[3].target, OrderTarget::Related { relation, .. } if relation == "rel"));
        assert!(parse_order("a.sideways").is_err());
        assert!(parse_order("").is_err());
    }

    #[test]
    fn columns() {
        assert_eq!(parse_columns("\"a\",\"b c\"").unwrap(), vec!["a", "b c"]);
        assert!(parse_columns("a,").is_err());
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn never_panics(s in "\\PC{0,60}") {
                let _ = parse_select(&s);
                let _ = parse_order(&s);
                let _ = parse_columns(&s);
                let _ = parse_logic(true, false, &s);
                if let Ok((_, field)) = parse_key(&s) {
                    let _ = parse_filter_value(field, &s);
                }
                let _ = parse_filter_value(Field { name: "a".into(), path: vec![] }, &s);
            }

            #[test]
            fn grammar_soup_never_panics(s in "[a-z\"(),.:!*>\\-{}\\\\]{0,80}") {
                let _ = parse_select(&s);
                let _ = parse_order(&s);
                let _ = parse_logic(false, true, &s);
                let _ = parse_filter_value(Field { name: "a".into(), path: vec![] }, &s);
            }

            #[test]
            fn plain_column_lists_parse(cols in proptest::collection::vec("[a-z_][a-z0-9_]{0,10}", 1..8)) {
                let items = parse_select(&cols.join(",")).unwrap();
                prop_assert_eq!(items.len(), cols.len());
            }
        }
    }
}
