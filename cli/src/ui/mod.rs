//! `dsvault ui`: a read-only web catalog of the vault, served by this binary (axum on tokio).
//!
//! Owns: the listening socket, the routes, and the rule that only GET (and HEAD) exist:
//! nothing in the vault can be changed from a page. Every asset is compiled in; pages carry
//! no script. Listens on 127.0.0.1 by default; any other address needs a token (given, or
//! generated and printed), checked on every request ([`guard`]).
//! Never: reads a file but through the library's verified read path (`ops::read`), or a
//! path but one checked by `ops::read::is_dataset_path`.

mod files;
mod guard;
mod lineage;
mod pages;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use clap::Args;

use dsvault::Vault;

use super::Globals;

#[derive(Args, Debug)]
pub struct UiArgs {
    /// Address and port to listen on; any address but loopback requires a token.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8765")]
    listen: SocketAddr,
    /// The token clients must present (default: a random one when not on loopback).
    #[arg(long, env = "DSVAULT_UI_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    price: super::price::PriceArgs,
}

/// What every request handler sees.
pub struct App {
    pub vault: Vault,
    pub price: Option<f64>,
    pub token: Option<String>,
    pub port: u16,
}

const STYLE: &str = include_str!("style.css");

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::datasets))
        .route("/d/{kind}/{name}/{version}", get(pages::dataset))
        .route("/d/{kind}/{name}/{version}/file", get(pages::file))
        .route("/d/{kind}/{name}/{version}/raw", get(files::raw))
        .route("/d/{kind}/{name}/{version}/download", get(files::download))
        .route("/diff", get(pages::diff))
        .route("/lineage/{kind}/{name}/{version}", get(lineage::lineage))
        .route("/storage", get(pages::storage))
        .route(
            "/static/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
        .fallback(|| async { web::UiError::NotFound("no such page".into()).into_response() })
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard::guard))
        .with_state(app)
}

/// The token to require, or none on loopback without `--token`.
fn token_for(listen: &SocketAddr, given: Option<String>) -> Result<Option<String>> {
    match given {
        Some(t) if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic() && b != b';') => {
            bail!("--token must be at least 16 visible ASCII characters, without ';'")
        }
        Some(t) => Ok(Some(t)),
        None if listen.ip().is_loopback() => Ok(None),
        None => Ok(Some(guard::new_token().context("making a token")?)),
    }
}

pub fn ui(g: &Globals, a: UiArgs) -> Result<i32> {
    let vault = g.open_vault()?;
    // Fail now, not on the first page, when the catalog cannot be read.
    vault.catalog().context("opening the catalog")?;
    let token = token_for(&a.listen, a.token)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the web server's runtime")?;
    runtime.block_on(serve(vault, a.listen, token, a.price.price_per_gib_month))?;
    Ok(0)
}

async fn serve(vault: Vault, listen: SocketAddr, token: Option<String>, price: Option<f64>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let url = match &token {
        Some(t) => format!("http://{addr}/?token={t}"),
        None => format!("http://{addr}/"),
    };
    // The one line scripts (and the tests) read: where to point a browser.
    outln!("dsvault ui: serving {url}");
    std::io::Write::flush(&mut std::io::stdout())?;
    let app = Arc::new(App {
        vault,
        price,
        token,
        port: addr.port(),
    });
    axum::serve(listener, router(app))
        .with_graceful_shutdown(stopped())
        .await
        .context("serving the web catalog")?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
