//! The pages of the web catalog: datasets, one dataset's folders, one file, a diff, storage.
//!
//! Owns: turning library reports into HTML (maud escapes every value). Never: reads a whole
//! file (a preview reads at most [`files::PREVIEW`] bytes), writes anything.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use maud::{html, Markup};

use dsvault::catalog::{DatasetRow, Entry, EntryKind};
use dsvault::ops::{diff as vdiff, read, stats};
use dsvault::DatasetRef;

use super::files::{image_type, lookup, IMAGE_LIMIT, PREVIEW};
use super::web::{
    blocking, dataset_name, dataset_url, enc, enc_str, file_url, folder_url, page, sealed, shown, Page, Query, UiError,
};
use super::App;
use crate::output::{bytes, timestamp};
use crate::price::{money, monthly_cost};

type Segments = Result<Path<(String, String, String)>, axum::extract::rejection::PathRejection>;

fn segments(s: Segments) -> Result<(String, String, String), UiError> {
    s.map(|Path(p)| p).map_err(|e| UiError::NotFound(e.to_string()))
}

/// Children listed per page of a folder.
const PAGE_SIZE: usize = 500;
/// Changes a diff page lists at most.
const DIFF_ROWS: usize = 5000;

fn short_root(d: &DatasetRow) -> String {
    d.root.map(|r| r.to_hex()[..16].to_string()).unwrap_or_default()
}

/// `GET /?q=TEXT`: every sealed dataset, or those whose name holds TEXT.
pub async fn datasets(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Page {
    let query = Query::parse(q.as_deref());
    let filter = query.text("q").unwrap_or_default().trim().to_string();
    let rows = blocking(move || Ok(app.vault.catalog()?.list_datasets(None, None)?)).await?;
    let shown_rows: Vec<&DatasetRow> = rows.iter().filter(|d| d.name.to_string().contains(&filter)).collect();
    Ok(page(
        "Datasets",
        html! {
            form.filter method="get" action="/" {
                input type="search" name="q" value=(filter) placeholder="filter by name" autofocus;
                button type="submit" { "filter" }
            }
            p.count { (shown_rows.len()) " of " (rows.len()) " datasets" }
            table #datasets {
                thead { tr { th { "dataset" } th { "kind" } th { "version" } th { "root" } th.num { "files" }
                    th.num { "logical" } th.num { "added" } th { "sealed" } th { "lineage" } } }
                tbody {
                    @for d in &shown_rows {
                        tr.dataset data-dataset=(d.name.to_string()) {
                            td.name { a href=(dataset_url(&d.name)) { (d.name.name) } }
                            td.kind { (d.name.kind.as_str()) }
                            td.version { (d.name.version) }
                            td.root { code { (short_root(d)) } }
                            td.num.files { (d.files) }
                            td.num title=(format!("{} bytes", d.bytes)) { (bytes(d.bytes)) }
                            td.num { (bytes(d.stored_bytes)) }
                            td { (d.sealed_at.map(timestamp).unwrap_or_default()) }
                            td { a href=(format!("/lineage/{}/{}/{}", d.name.kind.as_str(), d.name.name, d.name.version)) { "graph" } }
                        }
                    }
                }
            }
        },
    ))
}

fn breadcrumbs(d: &DatasetRow, path: &[u8]) -> Markup {
    let parts: Vec<&[u8]> = if path.is_empty() {
        Vec::new()
    } else {
        path.split(|&b| b == b'/').collect()
    };
    html! {
        p.crumbs {
            a href=(dataset_url(&d.name)) { (d.name.to_string()) }
            @for (i, part) in parts.iter().enumerate() {
                " / "
                @let upto = parts[..=i].join(&b'/');
                @if i + 1 == parts.len() { span { (shown(part)) } } @else { a href=(folder_url(&d.name, &upto)) { (shown(part)) } }
            }
        }
    }
}

fn dataset_header(d: &DatasetRow) -> Markup {
    html! {
        dl.facts {
            dt { "root" } dd { code { (d.root.map(|r| r.to_hex()).unwrap_or_default()) } }
            dt { "files" } dd { (d.files) " files, " (d.dirs) " folders, " (d.symlinks) " symlinks" }
            dt { "logical" } dd { (bytes(d.bytes)) }
            dt { "added to the store" } dd { (bytes(d.stored_bytes)) }
            dt { "sealed" } dd { (d.sealed_at.map(timestamp).unwrap_or_default()) }
            dt { "source" } dd { (d.source.clone().unwrap_or_default()) }
        }
        p.links {
            a href=(format!("/lineage/{}/{}/{}", d.name.kind.as_str(), d.name.name, d.name.version)) { "lineage graph" }
            " · "
            a href=(format!("/diff?b={}", enc_str(&d.name.to_string()))) { "compare with another dataset" }
        }
    }
}

/// One row of a folder listing: (entry, files below and their bytes for a folder).
fn child_row(d: &DatasetRow, e: &Entry, totals: Option<(u64, u64)>) -> Markup {
    let path = e.path();
    html! {
        tr.entry data-kind=(e.kind.as_str()) {
            td.name {
                @match e.kind {
                    EntryKind::Dir => { a href=(folder_url(&d.name, &path)) { (shown(&e.name)) "/" } }
                    EntryKind::File => { a href=(file_url(&d.name, &path)) { (shown(&e.name)) } }
                    EntryKind::Symlink => { (shown(&e.name)) " → " code { (shown(e.target.as_deref().unwrap_or_default())) } }
                }
            }
            td.kind { (e.kind.as_str()) }
            td.num {
                @match (e.kind, totals) {
                    (EntryKind::File, _) => { (bytes(e.size)) }
                    (EntryKind::Dir, Some((files, size))) => { (bytes(size)) " in " (files) " files" }
                    _ => {}
                }
            }
            td.mode { code { (format!("{:04o}", e.mode)) } }
        }
    }
}

/// `GET /d/K/N/V?p=FOLDER&after=NAME`: a folder of a dataset, with sizes.
pub async fn dataset(State(app): State<Arc<App>>, seg: Segments, RawQuery(q): RawQuery) -> Page {
    let (kind, name, version) = segments(seg)?;
    blocking(move || {
        let query = Query::parse(q.as_deref());
        let name = dataset_name(&kind, &name, &version)?;
        let catalog = app.vault.catalog()?;
        let d = sealed(&catalog, &name)?;
        let folder = query.bytes("p").unwrap_or_default().to_vec();
        if !folder.is_empty() && read::entry(&catalog, &d, &folder)?.kind != EntryKind::Dir {
            return Err(UiError::NotFound(format!(
                "{}:{} is not a folder",
                d.name,
                shown(&folder)
            )));
        }
        let after = query.bytes("after");
        let children = catalog.children(d.id, &folder, after, PAGE_SIZE)?;
        let mut rows = Vec::with_capacity(children.len());
        for e in &children {
            let totals = match e.kind {
                EntryKind::Dir => Some(catalog.subtree_totals(d.id, &e.path())?),
                _ => None,
            };
            rows.push(child_row(&d, e, totals));
        }
        let next = (children.len() == PAGE_SIZE).then(|| {
            let last = &children[children.len() - 1].name;
            format!("{}?p={}&after={}", dataset_url(&d.name), enc(&folder), enc(last))
        });
        Ok(page(
            &d.name.to_string(),
            html! {
                (dataset_header(&d))
                (breadcrumbs(&d, &folder))
                table #tree {
                    thead { tr { th { "name" } th { "kind" } th.num { "size" } th { "mode" } } }
                    tbody { @for r in rows { (r) } }
                }
                @if let Some(next) = next { p { a href=(next) { "next " (PAGE_SIZE) " →" } } }
            },
        ))
    })
    .await
}

/// The preview of a file's first bytes: an image, text, or a hex dump.
fn preview(d: &DatasetRow, e: &Entry, head: &[u8]) -> Markup {
    let path = e.path();
    if let Some(kind) = image_type(head) {
        if e.size <= IMAGE_LIMIT {
            let src = format!("{}/raw?p={}", dataset_url(&d.name), enc(&path));
            return html! { figure.preview { img src=(src) alt=(shown(&e.name)); figcaption { (kind) } } };
        }
        return html! { p.note { "an image too large to preview (" (bytes(e.size)) "); download it" } };
    }
    let note =
        (e.size as usize > head.len()).then(|| format!("the first {} of {}", bytes(head.len() as u64), bytes(e.size)));
    let text = match std::str::from_utf8(head) {
        _ if head.contains(&0) => None,
        Ok(t) => Some(t.to_string()),
        // Cut inside a character at the end of the preview: still text.
        Err(err) if err.error_len().is_none() => Some(String::from_utf8_lossy(&head[..err.valid_up_to()]).into_owned()),
        Err(_) => None,
    };
    html! {
        @if let Some(n) = note { p.note { (n) } }
        @match text {
            Some(t) => { pre #preview.text { (t) } }
            None => {
                p.note { "binary; the first bytes in hex:" }
                pre #preview.hex { (hex_dump(&head[..head.len().min(1024)])) }
            }
        }
    }
}

fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, row) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = row
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!("{:08x}  {:<48} {text}\n", i * 16, hex.join(" ")));
    }
    out
}

/// `GET /d/K/N/V/file?p=PATH`: a file's facts, its first 64 KiB, a download link.
pub async fn file(State(app): State<Arc<App>>, seg: Segments, RawQuery(q): RawQuery) -> Page {
    let (kind, name, version) = segments(seg)?;
    blocking(move || {
        let query = Query::parse(q.as_deref());
        let (d, e) = lookup(&app, &kind, &name, &version, &query)?;
        let catalog = app.vault.catalog()?;
        let head = read::prefix(app.vault.store(), &catalog, &d, &e, PREVIEW)?;
        let path = e.path();
        let download = format!("{}/download?p={}", dataset_url(&d.name), enc(&path));
        Ok(page(
            &shown(&e.name),
            html! {
                (breadcrumbs(&d, &path))
                dl.facts {
                    dt { "size" } dd #size { (bytes(e.size)) " (" (e.size) " bytes)" }
                    dt { "mode" } dd { code { (format!("{:04o}", e.mode)) } }
                    dt { "content" } dd { code { (e.content.map(|c| c.to_hex()).unwrap_or_default()) } }
                    dt { "modified" } dd { (timestamp(e.mtime_ns.div_euclid(1_000_000_000))) }
                }
                p { a #download href=(download) { "download" } " (every chunk re-hashed on the way, as " code { "dsvault cat" } ")" }
                (preview(&d, &e, &head))
            },
        ))
    })
    .await
}

fn dataset_select(name: &str, all: &[DatasetRow], chosen: Option<&str>) -> Markup {
    html! {
        select name=(name) id=(name) {
            @for d in all {
                @let n = d.name.to_string();
                option value=(n) selected[chosen == Some(n.as_str())] { (n) }
            }
        }
    }
}

fn side_text(s: &Option<vdiff::Side>) -> String {
    match s {
        None => String::new(),
        Some(s) => match (&s.target, s.kind) {
            (Some(t), _) => format!("symlink → {t} {}", s.mode),
            (None, "file") => format!("{} {}", bytes(s.size), s.mode),
            (None, k) => format!("{k} {}", s.mode),
        },
    }
}

fn diff_table(r: &vdiff::DiffReport, b: &DatasetRef) -> Markup {
    let t = &r.totals;
    let b_name = b.kind.map(|k| dsvault::DatasetName {
        kind: k,
        name: b.name.clone(),
        version: b.version.clone(),
    });
    html! {
        table #totals {
            tr { th { "added" } td data-total="added" { (t.added) } td { (bytes(t.added_bytes)) } }
            tr { th { "removed" } td data-total="removed" { (t.removed) } td { (bytes(t.removed_bytes)) } }
            tr { th { "modified" } td data-total="modified" { (t.modified) } td { (bytes(t.modified_bytes)) } }
            tr { th { "mode changed" } td data-total="mode" { (t.mode) } td {} }
            tr { th { "symlink target changed" } td data-total="target" { (t.target) } td {} }
            tr { th { "kind changed" } td data-total="type" { (t.type_changed) } td {} }
            tr { th { "unchanged" } td data-total="unchanged" { (t.unchanged) } td {} }
            tr { th { "new bytes" } td data-total="new_bytes" { (t.new_bytes) } td { (bytes(t.new_bytes)) } }
            tr { th { "B already stored by A" } td data-total="b_bytes_in_a" { (t.b_bytes_in_a) }
                 td { (format!("{:.1}% of {}", t.share_in_a * 100.0, bytes(t.b_bytes))) } }
        }
        @if r.changes.len() > DIFF_ROWS { p.note { "the first " (DIFF_ROWS) " of " (r.changes.len()) " changes; " code { "dsvault diff" } " lists all" } }
        table #changes {
            thead { tr { th { "change" } th { "path" } th { "A" } th { "B" } th.num { "new bytes" } } }
            tbody {
                @for c in r.changes.iter().take(DIFF_ROWS) {
                    tr.change data-change=(c.change.as_str()) {
                        td.what { (c.change.as_str()) }
                        td.path {
                            @match (&b_name, c.b.as_ref().map(|s| s.kind)) {
                                (Some(n), Some("file")) => { a href=(file_url(n, &c.path_bytes)) { (shown(&c.path_bytes)) } }
                                _ => { (shown(&c.path_bytes)) }
                            }
                        }
                        td { (side_text(&c.a)) }
                        td { (side_text(&c.b)) }
                        td.num { (c.new_bytes.map(bytes).unwrap_or_default()) }
                    }
                }
            }
        }
    }
}

/// `GET /diff?a=A&b=B&p=PATH`: what `dsvault diff A B PATH` reports.
pub async fn diff(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Page {
    blocking(move || {
        let query = Query::parse(q.as_deref());
        let catalog = app.vault.catalog()?;
        let all = catalog.list_datasets(None, None)?;
        let (a, b) = (query.text("a"), query.text("b"));
        let path = query.bytes("p").filter(|p| !p.is_empty());
        let result = match (a, b) {
            (Some(a), Some(b)) => {
                let parse = |s: &str| s.parse::<DatasetRef>().map_err(|e| UiError::NotFound(e.to_string()));
                let (ra, rb) = (parse(a)?, parse(b)?);
                let (da, db) = (catalog.resolve(&ra)?, catalog.resolve(&rb)?);
                let report = vdiff::diff_rows(&catalog, &da, &db, path)?;
                let rb = DatasetRef { kind: Some(db.name.kind), ..rb };
                Some(diff_table(&report, &rb))
            }
            _ => None,
        };
        Ok(page(
            "Diff",
            html! {
                form.diff method="get" action="/diff" {
                    label for="a" { "A" } (dataset_select("a", &all, a))
                    label for="b" { "B" } (dataset_select("b", &all, b))
                    label for="p" { "under" } input #p type="text" name="p" value=(path.map(shown).unwrap_or_default()) placeholder="folder (optional)";
                    button type="submit" { "compare" }
                }
                @if let Some(r) = result { (r) }
            },
        ))
    })
    .await
}

/// Horizontal bars: logical and referenced stored bytes per dataset, one scale.
fn storage_chart(s: &stats::VaultStats) -> Markup {
    const LABEL: f64 = 260.0;
    const BAR: f64 = 460.0;
    const ROW: f64 = 44.0;
    let max = s
        .datasets
        .iter()
        .map(|d| d.bytes.max(d.referenced_stored_bytes))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let width = LABEL + BAR + 120.0;
    let height = ROW * s.datasets.len() as f64 + 40.0;
    html! {
        svg #chart xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img" {
            title { "logical and stored bytes per dataset" }
            @for (i, d) in s.datasets.iter().enumerate() {
                @let y = 10.0 + ROW * i as f64;
                g.bar data-dataset=(d.dataset) {
                    text x="0" y=(y + 14.0) class="label" { (d.dataset) }
                    rect class="logical" x=(LABEL) y=(y) height="14" width=(BAR * d.bytes as f64 / max) {}
                    text x=(LABEL + BAR * d.bytes as f64 / max + 6.0) y=(y + 12.0) class="value" { (bytes(d.bytes)) " logical" }
                    rect class="stored" x=(LABEL) y=(y + 17.0) height="14" width=(BAR * d.referenced_stored_bytes as f64 / max) {}
                    text x=(LABEL + BAR * d.referenced_stored_bytes as f64 / max + 6.0) y=(y + 29.0) class="value" { (bytes(d.referenced_stored_bytes)) " stored" }
                }
            }
            g.legend {
                rect class="logical" x=(LABEL) y=(height - 18.0) width="12" height="12" {}
                text x=(LABEL + 16.0) y=(height - 8.0) { "logical" }
                rect class="stored" x=(LABEL + 90.0) y=(height - 18.0) width="12" height="12" {}
                text x=(LABEL + 106.0) y=(height - 8.0) { "stored (its chunks, shared or not)" }
            }
        }
    }
}

/// `GET /storage?price=P`: logical against stored bytes, dedup ratio, monthly cost.
pub async fn storage(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Page {
    let default_price = app.price;
    blocking(move || {
        let query = Query::parse(q.as_deref());
        let price = match query.text("price").filter(|p| !p.is_empty()) {
            Some(p) => Some(crate::price::parse_price(p).map_err(UiError::NotFound)?),
            None => default_price,
        };
        let s = stats::stats(&app.vault)?;
        Ok(page(
            "Storage",
            html! {
                dl.facts #vault {
                    dt { "logical" } dd #logical { (bytes(s.logical_bytes)) " in " (s.datasets.len()) " datasets" }
                    dt { "stored" } dd #stored { (bytes(s.stored_bytes)) " in " (s.packs) " packs" }
                    dt { "dedup ratio" } dd #ratio { (format!("{:.2}x", s.dedup_ratio)) }
                    @if let Some(p) = price {
                        dt { "monthly cost" } dd #cost { (money(monthly_cost(s.stored_bytes, p))) " at " (p) " per GiB-month" }
                    }
                }
                form.price method="get" action="/storage" {
                    label for="price" { "price per GiB-month" }
                    input #price type="text" name="price" value=(price.map(|p| p.to_string()).unwrap_or_default()) placeholder="e.g. 0.023";
                    button type="submit" { "show costs" }
                }
                (storage_chart(&s))
                table #storage {
                    thead { tr { th { "dataset" } th.num { "logical" } th.num { "added" } th.num { "stored (alone)" }
                        @if price.is_some() { th.num { "monthly cost of what it added" } } } }
                    tbody {
                        @for d in &s.datasets {
                            tr { td { (d.dataset) } td.num { (bytes(d.bytes)) } td.num { (bytes(d.stored_bytes)) }
                                 td.num { (bytes(d.referenced_stored_bytes)) }
                                 @if let Some(p) = price { td.num { (money(monthly_cost(d.stored_bytes, p))) } } }
                        }
                    }
                }
            },
        ))
    })
    .await
}
