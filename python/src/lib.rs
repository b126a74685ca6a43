//! `dsvault._native`: the PyO3 module under the `dsvault` Python package.
//!
//! Owns: turning Python calls into calls of the library's one read path
//! ([`dsvault::vfs::DatasetReader`], the single-dataset view the mount uses), with the GIL
//! released around every catalog query and read; pickling handles by value (a vault folder
//! and a dataset name, reopened where unpickled). Never writes to a dataset: there is no
//! call that could. Error mapping and the fork guard are in [`errors`]; the Python side
//! (`dsvault/*.py`) adds file objects, fsspec and PyTorch adapters.

mod dataset;
mod errors;
mod handle;

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use dsvault::vfs::{DatasetReader, VfsOptions};
use dsvault::DatasetRef;

use dataset::{Dataset, File};
use errors::{lib_err, ForkedHandleError, IntegrityError};
use handle::Owned;

/// Default bytes of verified chunks kept in memory per open dataset.
const DEFAULT_MEMORY_CACHE: u64 = 32 << 20;

/// How a vault was opened: what a pickle carries and what a dataset needs to open its own
/// view of the vault.
#[derive(Clone, Debug)]
struct Settings {
    dir: PathBuf,
    /// Where a remote store's block cache lives (`None`: `<vault>/cache`).
    cache_dir: Option<PathBuf>,
    cache_size: Option<u64>,
    memory_cache: u64,
    /// Bytes of whole files each open dataset keeps once read whole (0: none).
    file_cache: u64,
}

impl Settings {
    /// Open the library's vault (a remote store gets its own client and runtime).
    fn open(&self) -> dsvault::Result<dsvault::Vault> {
        let vault = dsvault::Vault::open_cached_in(&self.dir, self.cache_dir.as_deref())?;
        if let Some(bytes) = self.cache_size {
            vault.store().set_cache_capacity(bytes);
        }
        Ok(vault)
    }

    fn options(&self) -> VfsOptions {
        VfsOptions {
            cache_bytes: self.memory_cache,
            ..VfsOptions::default()
        }
    }

    /// The options as `open_vault` keywords (what the fsspec and PyTorch adapters reopen
    /// the vault with in another process).
    fn keywords<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let cache_dir = self.cache_dir.as_ref().map(|d| d.as_os_str().to_os_string());
        d.set_item("cache_dir", cache_dir)?;
        d.set_item("cache_size", self.cache_size)?;
        d.set_item("memory_cache", self.memory_cache)?;
        d.set_item("file_cache", self.file_cache)?;
        Ok(d)
    }
}

/// An open vault: lists its datasets and opens them.
#[pyclass(module = "dsvault", frozen)]
struct Vault {
    settings: Settings,
    vault: Owned<dsvault::Vault>,
}

#[pymethods]
impl Vault {
    /// The vault's folder.
    #[getter]
    fn path(&self) -> PathBuf {
        self.settings.dir.clone()
    }

    /// The options it was opened with: `{"cache_dir", "cache_size", "memory_cache", "file_cache"}`.
    #[getter]
    fn options<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.settings.keywords(py)
    }

    /// Sealed datasets, `KIND/NAME@VERSION`, by kind, name and version.
    fn datasets(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let vault = self.vault.get("this vault")?;
        let rows = py
            .detach(|| vault.catalog()?.list_datasets(None, None))
            .map_err(|e| lib_err(&e))?;
        Ok(rows.iter().map(|r| r.name.to_string()).collect())
    }

    /// Open dataset `name` (`gold/NAME@VERSION`, `derived/NAME@VERSION` or `NAME@VERSION`).
    fn dataset(&self, py: Python<'_>, name: &str) -> PyResult<Dataset> {
        self.vault.get("this vault")?;
        open_dataset(py, &self.settings, name, None)
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let f = py.import("dsvault._native")?.getattr("_reopen_vault")?;
        let args = (self.settings.dir.clone(), self.settings.keywords(py)?).into_pyobject(py)?;
        Ok((f, args))
    }

    fn __repr__(&self) -> String {
        format!("dsvault.Vault({:?})", self.settings.dir.display().to_string())
    }
}

/// Open the vault in folder `path` (default: `$DSVAULT_DIR`). `cache_dir`: the folder a
/// remote store's disk cache is kept in (default `<vault>/cache`; give one of your own when
/// you may only read the vault); `cache_size`: bytes that cache may hold; `memory_cache`:
/// bytes of verified chunks each open dataset keeps in memory; `file_cache`: bytes of whole
/// files each open dataset keeps in memory once read whole (0: off).
#[pyfunction]
#[pyo3(signature = (path=None, cache_dir=None, cache_size=None, memory_cache=DEFAULT_MEMORY_CACHE, file_cache=0))]
fn open_vault(
    py: Python<'_>,
    path: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    cache_size: Option<u64>,
    memory_cache: u64,
    file_cache: u64,
) -> PyResult<Vault> {
    let dir = match path.or_else(|| std::env::var_os("DSVAULT_DIR").map(PathBuf::from)) {
        Some(d) => d,
        None => {
            return Err(PyValueError::new_err(
                "open_vault: give the vault's folder (or set DSVAULT_DIR)",
            ))
        }
    };
    let settings = Settings {
        dir: std::path::absolute(&dir).unwrap_or(dir),
        cache_dir: cache_dir.map(|d| std::path::absolute(&d).unwrap_or(d)),
        cache_size,
        memory_cache,
        file_cache,
    };
    let vault = py.detach(|| settings.open()).map_err(|e| lib_err(&e))?;
    Ok(Vault {
        settings,
        vault: Owned::new(vault),
    })
}

/// Open a dataset; with `root`, fail unless the name still has that content (a pickled
/// dataset reopened elsewhere).
fn open_dataset(py: Python<'_>, settings: &Settings, name: &str, root: Option<&str>) -> PyResult<Dataset> {
    let r: DatasetRef = name.parse().map_err(|e: dsvault::Error| lib_err(&e))?;
    let reader = py
        .detach(|| DatasetReader::open(settings.open()?, &r, settings.options()))
        .map(|reader| reader.with_file_cache(settings.file_cache))
        .map_err(|e| lib_err(&e))?;
    if let Some(root) = root.filter(|want| *want != reader.root().to_hex()) {
        return Err(PyValueError::new_err(format!(
            "{} now has root {}, not {root} as when it was pickled",
            reader.name(),
            reader.root().to_hex()
        )));
    }
    Ok(Dataset::new(reader, settings.clone()))
}

/// Unpickle a vault: `open_vault(path, **options)` in this process.
#[pyfunction]
fn _reopen_vault<'py>(py: Python<'py>, path: PathBuf, options: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
    let open = py.import("dsvault._native")?.getattr("open_vault")?;
    open.call((path,), Some(options))
}

/// Unpickle a dataset: reopen it in this process (failing if its name has other content now).
#[pyfunction]
fn _reopen_dataset(
    py: Python<'_>,
    path: PathBuf,
    options: &Bound<'_, PyDict>,
    name: &str,
    root: &str,
) -> PyResult<Dataset> {
    let vault = _reopen_vault(py, path, options)?;
    let vault: PyRef<'_, Vault> = vault.extract()?;
    open_dataset(py, &vault.settings, name, Some(root))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(open_vault, m)?)?;
    m.add_function(wrap_pyfunction!(_reopen_vault, m)?)?;
    m.add_function(wrap_pyfunction!(_reopen_dataset, m)?)?;
    m.add_class::<Vault>()?;
    m.add_class::<Dataset>()?;
    m.add_class::<File>()?;
    m.add("IntegrityError", m.py().get_type::<IntegrityError>())?;
    m.add("ForkedHandleError", m.py().get_type::<ForkedHandleError>())?;
    Ok(())
}
