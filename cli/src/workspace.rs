//! `workspace new|ls|rm`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use dsvault::ops::shared_gc::StorePins;
use dsvault::workspace::Workspace;
use dsvault::DatasetRef;

use super::output::{json_line, json_path, timestamp};
use super::Globals;

#[derive(Args, Debug)]
pub struct WorkspaceArgs {
    #[command(subcommand)]
    command: WorkspaceCommand,
}

#[derive(Subcommand, Debug)]
enum WorkspaceCommand {
    /// Create a workspace: an empty upper layer over zero or more base datasets.
    New {
        /// Workspace name: letters, digits and . _ + -.
        #[arg(value_parser = workspace_name)]
        name: String,
        /// A base dataset; repeat for several, lowest first (a later base overrides an earlier one).
        #[arg(long = "base", value_name = "DATASET")]
        bases: Vec<DatasetRef>,
        /// Make it belong to USER (root only): how root gives a user a workspace in a vault
        /// the user may not write, served by one mount for everyone (docs/sharing.md).
        #[arg(long, value_name = "USER")]
        owner: Option<String>,
    },
    /// List workspaces, one a line.
    Ls,
    /// Remove a workspace and its upper layer (its bases stay).
    Rm {
        #[arg(value_parser = workspace_name)]
        name: String,
    },
}

/// Checked at parse time, so a bad name is a usage error (exit 2).
pub(super) fn workspace_name(s: &str) -> Result<String, dsvault::Error> {
    dsvault::dataset::validate_component("workspace name", s).map(|_| s.to_string())
}

fn owner_name(w: &Workspace) -> String {
    dsvault::sharing::user_name(w.owner).unwrap_or_else(|| w.owner.to_string())
}

fn workspace_json(w: &Workspace) -> serde_json::Value {
    json!({
        "workspace": w.name,
        "owner": owner_name(w),
        "owner_uid": w.owner,
        "upper": json_path(&w.upper),
        "bases": w.bases.iter().map(|b| b.name.to_string()).collect::<Vec<_>>(),
        "created_at": timestamp(w.created_at),
    })
}

pub fn workspace(g: &Globals, a: WorkspaceArgs) -> Result<i32> {
    let vault = g.open_vault()?;
    match a.command {
        WorkspaceCommand::New { name, bases, owner } => {
            let uid = owner
                .map(|o| dsvault::sharing::user_by_name(&o).map(|(uid, _)| uid))
                .transpose()?;
            let w = Workspace::create_for(&vault, &name, &bases, uid, &StorePins)
                .with_context(|| format!("creating workspace {name}"))?;
            if g.json {
                json_line(&workspace_json(&w))?;
            } else if !g.quiet {
                outln!("workspace {}: write into {}", w.name, w.upper.display());
            }
        }
        WorkspaceCommand::Ls => {
            for w in Workspace::list(&vault)? {
                if g.json {
                    json_line(&workspace_json(&w))?;
                } else {
                    let bases: Vec<String> = w.bases.iter().map(|b| b.name.to_string()).collect();
                    outln!(
                        "{:<24} {:<12} {}  over {}",
                        w.name,
                        owner_name(&w),
                        w.upper.display(),
                        none_if_empty(&bases)
                    );
                }
            }
        }
        WorkspaceCommand::Rm { name } => {
            Workspace::remove(&vault, &name, &StorePins).with_context(|| format!("removing workspace {name}"))?;
            if g.json {
                json_line(&json!({ "removed": name }))?;
            } else if !g.quiet {
                outln!("removed workspace {name}; `dsvault gc` reclaims what only it used");
            }
        }
    }
    Ok(0)
}

fn none_if_empty(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}
