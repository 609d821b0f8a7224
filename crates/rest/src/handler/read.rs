//! Reads: `GET`/`HEAD` on a table or view.

use ferrobase_proto::HttpResponse;

use super::*;

pub(super) async fn read(ctx: &Ctx<'_>, table: &Table) -> Result<HttpResponse, ApiError> {
    let q = Query::from_pairs(ctx.req.query_pairs());
    let items = select_items(&q)?;
    let mut planner = ctx.planner();
    let mut root = planner.node(
        table.name.clone(),
        table_source(table),
        qualified(&table.schema, &table.name),
        &items,
    )?;
    attach(&mut root, &q)?;
    paginate(ctx, &mut root)?;
    let offset = root.offset.unwrap_or(0);
    let mut params = Params::default();
    let mut r = Renderer {
        params: &mut params,
        cache: &ctx.cache,
    };
    let source = r.select(&root, &[], true)?;
    let (total, explain) = count_sql(ctx, &mut r, &root)?;
    let body = r.body(ctx.media, None, &root.names);
    let sql = format!(
        "with pgrst_source as ({source}) select {total}, count(*)::int8, {body}, \
         current_setting('response.headers', true), current_setting('response.status', true), \
         null::text, null::int8 from pgrst_source \"pgrst_t\""
    );
    if let Media::Plan { json } = ctx.media {
        return explain_plan(ctx, &sql, &params, json).await;
    }
    let out = db::run(
        &ctx.state.requests,
        &ctx.settings(),
        Access::ReadOnly,
        &sql,
        &params,
        explain.as_ref().map(|(s, p)| (s.as_str(), p)),
        End::Known(true),
    )
    .await?;
    respond_read(ctx, &out, offset, &format!("/{}", table.name))
}

pub(super) fn respond_read(
    ctx: &Ctx<'_>,
    out: &Outcome,
    offset: i64,
    location: &str,
) -> Result<HttpResponse, ApiError> {
    let total = resolve_total(ctx, out);
    let (content_range, status) = range(offset, out.page_total, total)?;
    if ctx.singular() && out.page_total != 1 {
        return Err(singular_error(out.page_total));
    }
    let body = if ctx.req.method == "HEAD" {
        String::new()
    } else {
        out.body.clone()
    };
    let mut resp = Response::new(status)
        .body(ctx.content_type(), body.into())
        .header("content-range", content_range);
    let query = ctx.req.query.as_str();
    resp = resp.header(
        "content-location",
        if query.is_empty() {
            location.to_owned()
        } else {
            format!("{location}?{query}")
        },
    );
    if let Some(a) = ctx.applied(&[]) {
        resp = resp.header("preference-applied", a);
    }
    let resp = ctx.overrides(resp, out)?;
    Ok(ctx.finish(resp).build())
}
