//! `run`'s library half: everything about a run except mounting and starting the command.
//!
//! Owns: choosing the workspace (creating it over its bases, or checking that an existing
//! one has the bases asked for), where the workspace and its bases appear in a whole-vault
//! mount, expanding the command's placeholders (`{workspace}`, `{input}`, `{inputs}`, `{{`,
//! `}}`; DataLad's `run` convention, without a shell), recording the finished run, and the
//! derive that follows a successful one.
//!
//! Order of catalog writes: the run row is committed on its own first, so a run is recorded
//! whatever happens to the derive (crash point `run-before-derive` sits right after it).
//! The derived dataset, its lineage and the run's link to it are then committed together,
//! in the derive's seal transaction: no crash leaves a run naming a dataset that does not
//! exist, or a dataset its run does not name.
//!
//! Never: mounts, starts processes or prints (the CLI does; FUSE is not a library
//! dependency).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::catalog::RunRow;
use crate::dataset::DatasetRef;
use crate::error::{Error, Result};
use crate::ops::derive::{self, DeriveOptions, DeriveReport, RunRecord};
use crate::progress::Progress;
use crate::vault::Vault;
use crate::workspace::Workspace;

/// The crash point between the committed run row and the derive.
pub const CRASH_BEFORE_DERIVE: &str = "run-before-derive";

/// The workspace `name`, created over `bases` when it does not exist. An existing workspace
/// must have exactly the bases given, if any are.
pub fn workspace_for_run(vault: &Vault, name: &str, bases: &[DatasetRef]) -> Result<Workspace> {
    let ws = match Workspace::open(vault, name) {
        Err(Error::WorkspaceNotFound(_)) => return Workspace::create(vault, name, bases, &super::shared_gc::StorePins),
        other => other?,
    };
    if bases.is_empty() {
        return Ok(ws);
    }
    let catalog = vault.catalog()?;
    let wanted = bases
        .iter()
        .map(|b| catalog.resolve(b).map(|d| d.id))
        .collect::<Result<Vec<_>>>()?;
    if wanted != ws.bases.iter().map(|b| b.id).collect::<Vec<_>>() {
        return Err(Error::WorkspaceBasesDiffer {
            workspace: name.to_string(),
            bases: ws.bases.iter().map(|b| b.name.to_string()).collect(),
        });
    }
    Ok(ws)
}

/// Where a workspace and its bases appear in a whole-vault mount at some mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedPaths {
    /// The writable folder: `MOUNTPOINT/work/NAME`.
    pub workspace: PathBuf,
    /// Each base's folder (`MOUNTPOINT/KIND/NAME/VERSION`), lowest first.
    pub inputs: Vec<PathBuf>,
}

impl MountedPaths {
    pub fn new(mountpoint: &Path, ws: &Workspace) -> MountedPaths {
        MountedPaths {
            workspace: mountpoint.join("work").join(&ws.name),
            inputs: ws
                .bases
                .iter()
                .map(|b| {
                    mountpoint
                        .join(b.name.kind.as_str())
                        .join(&b.name.name)
                        .join(&b.name.version)
                })
                .collect(),
        }
    }
}

/// The command with its placeholders expanded, one argument at a time, without a shell:
/// `{workspace}` the writable folder, `{input}` the only base's folder (an error when there
/// are none or several), `{inputs}` every base's folder each as its own argument (so it must
/// be a whole argument), `{{` and `}}` literal braces. Any other `{…}` or a lone brace is an
/// error naming the argument, so a typo never runs.
pub fn expand_command(command: &[OsString], paths: &MountedPaths) -> Result<Vec<OsString>> {
    let mut out = Vec::with_capacity(command.len());
    for arg in command {
        if arg == "{inputs}" {
            out.extend(paths.inputs.iter().map(|p| p.clone().into_os_string()));
        } else {
            out.push(expand_arg(arg, paths)?);
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidPlaceholder {
            arg: "{inputs}".into(),
            reason: "the command is empty once it is expanded: the workspace has no base".into(),
        });
    }
    Ok(out)
}

fn expand_arg(arg: &OsStr, paths: &MountedPaths) -> Result<OsString> {
    let bytes = arg.as_bytes();
    let bad = |reason: String| Error::InvalidPlaceholder {
        arg: arg.to_string_lossy().into_owned(),
        reason,
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'{', Some(b'{')) | (b'}', Some(b'}')) => {
                out.push(bytes[i]);
                i += 2;
            }
            (b'{', _) => {
                let len = bytes[i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or_else(|| bad("a `{` without its `}` (write `{{` for a literal brace)".into()))?;
                let name = &bytes[i + 1..i + len];
                out.extend_from_slice(placeholder(name, paths).map_err(bad)?.as_os_str().as_bytes());
                i += len + 1;
            }
            (b'}', _) => return Err(bad("a `}` without its `{` (write `}}` for a literal brace)".into())),
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(OsString::from_vec(out))
}

/// The path a placeholder (without its braces) stands for inside a larger argument.
fn placeholder<'a>(name: &[u8], paths: &'a MountedPaths) -> std::result::Result<&'a Path, String> {
    match name {
        b"workspace" => Ok(&paths.workspace),
        b"input" => match paths.inputs.as_slice() {
            [one] => Ok(one),
            [] => Err("{input} needs a workspace with one base, and this one has none".into()),
            many => Err(format!(
                "{{input}} needs a workspace with one base, and this one has {}: use {{inputs}}",
                many.len()
            )),
        },
        b"inputs" => Err("{inputs} stands for several arguments, so it must be a whole argument".into()),
        other => Err(format!(
            "unknown placeholder {{{}}}: the known ones are {{workspace}}, {{input}}, {{inputs}} (and {{{{ }}}} for literal braces)",
            String::from_utf8_lossy(other)
        )),
    }
}

/// A command that has finished in a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRun {
    pub workspace: String,
    /// The arguments as given (placeholders not expanded: that is what can be run again).
    pub command: Vec<String>,
    pub started_at: i64,
    pub ended_at: i64,
    pub duration_ms: i64,
    /// Exit code, or 128 + the signal that ended the command.
    pub exit_status: i32,
}

/// Record a finished run (committed at once); returns its id.
pub fn record(vault: &Vault, run: &FinishedRun) -> Result<i64> {
    // A list of strings always serialises.
    let command = serde_json::to_string(&run.command).unwrap_or_default();
    vault.catalog()?.insert_run(&RunRow {
        id: 0,
        workspace: run.workspace.clone(),
        command,
        started_at: run.started_at,
        ended_at: run.ended_at,
        duration_ms: run.duration_ms,
        exit_status: run.exit_status,
        derived: None,
    })
}

/// Derive the workspace of recorded run `run_id` as `opts.name`, with the run's command,
/// times and exit status in the lineage and the run linked to the dataset in the seal
/// transaction. `opts.command` and `opts.run` are filled in from `run`.
pub fn derive_after(
    vault: &Vault,
    run_id: i64,
    run: &FinishedRun,
    mut opts: DeriveOptions,
    progress: &dyn Progress,
) -> Result<DeriveReport> {
    crate::crashpoint::hit(CRASH_BEFORE_DERIVE);
    opts.command = Some(shell_words(&run.command));
    opts.run = Some(RunRecord {
        id: Some(run_id),
        started_at: run.started_at,
        ended_at: run.ended_at,
        exit_status: run.exit_status,
    });
    let report = derive::derive(vault, &opts, progress)?;
    if report.already_present {
        // Nothing was sealed, so no seal transaction linked it: the dataset exists already.
        vault.catalog()?.set_run_derived(run_id, &report.dataset)?;
    }
    Ok(report)
}

/// The command as one line a shell would run (arguments quoted when needed).
pub fn shell_words(command: &[String]) -> String {
    let quote = |a: &String| {
        let plain = !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%{}".contains(&b));
        if plain {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    command.iter().map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(inputs: &[&str]) -> MountedPaths {
        MountedPaths {
            workspace: "/m/work/w".into(),
            inputs: inputs.iter().map(PathBuf::from).collect(),
        }
    }

    fn expand(args: &[&str], p: &MountedPaths) -> Result<Vec<String>> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        Ok(expand_command(&args, p)?
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect())
    }

    #[test]
    fn placeholders_expand_in_place_and_inputs_to_several_arguments() {
        let two = paths(&["/m/gold/a/v1", "/m/gold/b/v1"]);
        assert_eq!(
            expand(&["cp", "-r", "{inputs}", "--out={workspace}/x", "{{}}"], &two).unwrap(),
            ["cp", "-r", "/m/gold/a/v1", "/m/gold/b/v1", "--out=/m/work/w/x", "{}"]
        );
        let one = paths(&["/m/gold/a/v1"]);
        assert_eq!(
            expand(&["tar", "-C", "{input}", "-cf", "{workspace}/a.tar", "."], &one).unwrap(),
            ["tar", "-C", "/m/gold/a/v1", "-cf", "/m/work/w/a.tar", "."]
        );
        assert_eq!(expand(&["awk", "{{print $1}}"], &one).unwrap(), ["awk", "{print $1}"]);
        assert_eq!(expand(&["ls", "{inputs}"], &paths(&[])).unwrap(), ["ls"]);
    }

    #[test]
    fn bad_placeholders_are_refused_naming_the_argument() {
        let two = paths(&["/m/a", "/m/b"]);
        let err = |args: &[&str], p: &MountedPaths| expand(args, p).unwrap_err().to_string();
        assert!(err(&["{input}"], &two).contains("has 2: use {inputs}"));
        assert!(err(&["{input}"], &paths(&[])).contains("has none"));
        assert!(err(&["x={inputs}"], &two).contains("whole argument"));
        let typo = err(&["{workspce}/out"], &two);
        assert!(
            typo.contains("\"{workspce}/out\"") && typo.contains("unknown placeholder {workspce}"),
            "{typo}"
        );
        assert!(err(&["awk", "{print}"], &two).contains("unknown placeholder {print}"));
        assert!(err(&["a{b"], &two).contains("without its `}`"));
        assert!(err(&["a}b"], &two).contains("without its `{`"));
        assert!(err(&["{inputs}"], &paths(&[])).contains("command is empty"));
    }

    #[test]
    fn non_utf8_arguments_pass_through() {
        let arg = OsString::from_vec(b"\xff{workspace}".to_vec());
        let out = expand_command(&[arg], &paths(&[])).unwrap();
        assert_eq!(out[0].as_bytes(), b"\xff/m/work/w");
    }

    #[test]
    fn shell_words_quotes_what_a_shell_would_split() {
        let c = |a: &[&str]| shell_words(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(c(&["cp", "{input}/a", "{workspace}"]), "cp {input}/a {workspace}");
        assert_eq!(c(&["sh", "-c", "echo 'hi' > x"]), r"sh -c 'echo '\''hi'\'' > x'");
    }
}
