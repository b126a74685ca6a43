//! The lineage page: a dataset's inputs back to gold, drawn as an SVG graph.
//!
//! Owns: laying the graph out (one column per step, gold on the left, the dataset asked for
//! on the right; a dataset reached twice is one node) and drawing it. Each node links to its
//! dataset; each edge carries the command that made the derived set and its exit status.
//! Never: reads anything but `ops::lineage`'s tree.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use maud::{html, Markup};

use dsvault::ops::lineage::{lineage as tree_of, LineageNode};
use dsvault::{DatasetName, DatasetRef};

use super::web::{blocking, dataset_name, dataset_url, page, Page, UiError};
use super::App;

const NODE_W: f64 = 250.0;
const NODE_H: f64 = 46.0;
const COL: f64 = 420.0;
const ROW: f64 = 90.0;
/// Characters of a command shown on an edge (the whole command is its tooltip).
const LABEL_CHARS: usize = 40;

/// A node of the drawn graph.
struct Node<'t> {
    tree: &'t LineageNode,
    /// Longest distance from the dataset asked for.
    depth: usize,
    row: usize,
}

/// An edge: input node → derived node.
struct Edge {
    from: usize,
    to: usize,
}

/// Nodes keyed by dataset and root, with their longest depth, and edges.
fn flatten(root: &LineageNode) -> (Vec<Node<'_>>, Vec<Edge>) {
    let mut nodes: Vec<Node> = Vec::new();
    let mut index: HashMap<(String, Option<String>), usize> = HashMap::new();
    let mut edges = Vec::new();
    let mut stack = vec![(root, 0usize, None::<usize>)];
    while let Some((n, depth, child)) = stack.pop() {
        let key = (n.dataset.clone(), n.root.map(|r| r.to_hex()));
        let id = match index.get(&key) {
            Some(&id) => {
                nodes[id].depth = nodes[id].depth.max(depth);
                id
            }
            None => {
                nodes.push(Node { tree: n, depth, row: 0 });
                index.insert(key, nodes.len() - 1);
                nodes.len() - 1
            }
        };
        if let Some(to) = child {
            if !edges.iter().any(|e: &Edge| e.from == id && e.to == to) {
                edges.push(Edge { from: id, to });
            }
        }
        for input in n.inputs.iter().rev() {
            stack.push((input, depth + 1, Some(id)));
        }
    }
    let mut per_depth: HashMap<usize, usize> = HashMap::new();
    for n in nodes.iter_mut() {
        let r = per_depth.entry(n.depth).or_default();
        n.row = *r;
        *r += 1;
    }
    (nodes, edges)
}

fn edge_label(derived: &LineageNode) -> (String, String) {
    let command = derived
        .command
        .clone()
        .unwrap_or_else(|| "(no command recorded)".into());
    let exit = match derived.exit_status {
        Some(s) => format!("exit {s}"),
        None => "exit status unknown".into(),
    };
    let short: String = if command.chars().count() > LABEL_CHARS {
        command
            .chars()
            .take(LABEL_CHARS - 1)
            .chain(std::iter::once('…'))
            .collect()
    } else {
        command.clone()
    };
    (format!("{short} · {exit}"), format!("{command} ({exit})"))
}

fn href(dataset: &str) -> Option<String> {
    let r: DatasetRef = dataset.parse().ok()?;
    let name = DatasetName::new(r.kind?, &r.name, &r.version).ok()?;
    Some(dataset_url(&name))
}

fn draw(nodes: &[Node], edges: &[Edge]) -> Markup {
    let max_depth = nodes.iter().map(|n| n.depth).max().unwrap_or(0);
    let rows = nodes.iter().map(|n| n.row + 1).max().unwrap_or(1);
    let pos = |n: &Node| (20.0 + COL * (max_depth - n.depth) as f64, 30.0 + ROW * n.row as f64);
    let width = 40.0 + COL * max_depth as f64 + NODE_W;
    let height = 60.0 + ROW * rows as f64;
    html! {
        svg #graph xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img" {
            title { "lineage graph" }
            @for e in edges {
                @let (x1, y1) = pos(&nodes[e.from]);
                @let (x2, y2) = pos(&nodes[e.to]);
                @let (sx, sy, ex, ey) = (x1 + NODE_W, y1 + NODE_H / 2.0, x2, y2 + NODE_H / 2.0);
                @let (label, full) = edge_label(nodes[e.to].tree);
                g.edge data-from=(nodes[e.from].tree.dataset) data-to=(nodes[e.to].tree.dataset) {
                    title { (full) }
                    path d=(format!("M{sx},{sy} C{},{sy} {},{ey} {ex},{ey}", (sx + ex) / 2.0, (sx + ex) / 2.0)) {}
                    text.edge-label x=((sx + ex) / 2.0) y=((sy + ey) / 2.0 - 8.0) text-anchor="middle" { (label) }
                }
            }
            @for n in nodes {
                @let (x, y) = pos(n);
                @let kind = if n.tree.dataset.starts_with("gold/") { "gold" } else { "derived" };
                g.node.(kind) data-dataset=(n.tree.dataset) {
                    @match href(&n.tree.dataset).filter(|_| n.tree.present) {
                        Some(url) => {
                            a href=(url) {
                                rect x=(x) y=(y) width=(NODE_W) height=(NODE_H) rx="6" {}
                                text x=(x + 12.0) y=(y + 20.0) { (n.tree.dataset) }
                                text.root x=(x + 12.0) y=(y + 37.0) { (n.tree.root.map(|r| r.to_hex()[..16].to_string()).unwrap_or_default()) }
                            }
                        }
                        None => {
                            rect.missing x=(x) y=(y) width=(NODE_W) height=(NODE_H) rx="6" {}
                            text x=(x + 12.0) y=(y + 20.0) { (n.tree.dataset) }
                            text.root x=(x + 12.0) y=(y + 37.0) { "removed from the vault" }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /lineage/K/N/V`: the graph from this dataset back to gold.
pub async fn lineage(
    State(app): State<Arc<App>>,
    seg: Result<Path<(String, String, String)>, axum::extract::rejection::PathRejection>,
) -> Page {
    let Path((kind, name, version)) = seg.map_err(|e| UiError::NotFound(e.to_string()))?;
    blocking(move || {
        let name = dataset_name(&kind, &name, &version)?;
        let r = DatasetRef {
            kind: Some(name.kind),
            name: name.name.clone(),
            version: name.version.clone(),
        };
        let tree = tree_of(&app.vault, &r)?;
        let (nodes, edges) = flatten(&tree);
        Ok(page(
            &format!("Lineage of {name}"),
            html! {
                p { (nodes.len()) " datasets, " (edges.len()) " steps. Click a dataset to open it." }
                div.graph { (draw(&nodes, &edges)) }
            },
        ))
    })
    .await
}
