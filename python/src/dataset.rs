//! `Dataset` (one sealed dataset, read by path) and `File` (an open file of it, read at
//! offsets into the caller's buffers). Every catalog query and read runs with the GIL
//! released.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use dsvault::vfs::{DatasetPath, DatasetReader, NodeKind, PathInfo, VfsError};

use crate::errors::{path_err, read_only, vfs_err};
use crate::handle::Owned;
use crate::Settings;

/// One sealed dataset of a vault.
#[pyclass(module = "dsvault", frozen)]
pub struct Dataset {
    reader: Owned<DatasetReader>,
    name: String,
    root: String,
    settings: Settings,
}

impl Dataset {
    pub(crate) fn new(reader: DatasetReader, settings: Settings) -> Dataset {
        Dataset {
            name: reader.name(),
            root: reader.root().to_hex(),
            reader: Owned::new(reader),
            settings,
        }
    }

    fn reader(&self) -> PyResult<&DatasetReader> {
        Ok(self.reader.get(&self.name)?)
    }

    /// `gold/NAME@VERSION:path`, for messages.
    fn what(&self, path: &[u8]) -> String {
        format!("{}:{}", self.name, String::from_utf8_lossy(path))
    }

    fn parse(&self, path: &OsString) -> PyResult<DatasetPath> {
        DatasetPath::parse(path.as_bytes()).map_err(path_err)
    }

    fn open_file(&self, py: Python<'_>, path: &OsString) -> PyResult<File> {
        let reader = self.reader()?;
        let p = self.parse(path)?;
        let what = self.what(p.as_bytes());
        let (fh, info) = py.detach(|| reader.open_file(&p)).map_err(|e| vfs_err(e, &what))?;
        Ok(File {
            reader: self.reader.clone(),
            fh,
            size: info.size,
            blake3: info.content.map(|c| c.to_hex()).unwrap_or_default(),
            name: what,
            closed: AtomicBool::new(false),
        })
    }
}

#[pymethods]
impl Dataset {
    /// `KIND/NAME@VERSION`.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The dataset's root hash (hex): equal content, equal root.
    #[getter]
    fn root(&self) -> &str {
        &self.root
    }

    /// The folder of the vault this dataset is in.
    #[getter]
    fn vault_path(&self) -> std::path::PathBuf {
        self.settings.dir.clone()
    }

    /// The entries of folder `path` (paths relative to the dataset's root, by name), or
    /// with `detail` their `info` dicts. Symlinks are listed, not followed.
    #[pyo3(signature = (path=OsString::new(), detail=false))]
    fn ls<'py>(&self, py: Python<'py>, path: OsString, detail: bool) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let reader = self.reader()?;
        let p = self.parse(&path)?;
        let what = self.what(p.as_bytes());
        let mut entries = py.detach(|| reader.list(&p)).map_err(|e| vfs_err(e, &what))?;
        entries
            .iter_mut()
            .map(|e| -> PyResult<Bound<'py, PyAny>> {
                // Named under the folder asked for, also when that is a symlink.
                let mut path = p.as_bytes().to_vec();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(&e.name);
                Ok(match detail {
                    true => {
                        e.path = DatasetPath::parse(&path).map_err(path_err)?;
                        info_dict(py, e)?.into_any()
                    }
                    false => os(&path).into_pyobject(py)?.into_any(),
                })
            })
            .collect()
    }

    /// What `path` is: a dict with `name` (the path as given, normalised), `type` ("file",
    /// "directory" or "link"), `size`, `mode`, `mtime` (seconds), and for files `blake3`
    /// (the content hash, hex). Symlinks inside the dataset are followed.
    #[pyo3(signature = (path=OsString::new()))]
    fn info<'py>(&self, py: Python<'py>, path: OsString) -> PyResult<Bound<'py, PyDict>> {
        let reader = self.reader()?;
        let p = self.parse(&path)?;
        let what = self.what(p.as_bytes());
        let mut info = py.detach(|| reader.stat(&p)).map_err(|e| vfs_err(e, &what))?;
        info.path = p;
        info_dict(py, &info)
    }

    /// Every regular file at or under `prefix` (a folder or a file), sorted by path.
    /// Symlinks are not followed.
    #[pyo3(signature = (prefix=OsString::new()))]
    fn files(&self, py: Python<'_>, prefix: OsString) -> PyResult<Vec<OsString>> {
        let reader = self.reader()?;
        let p = self.parse(&prefix)?;
        let what = self.what(p.as_bytes());
        let found = py.detach(|| walk_files(reader, &p)).map_err(|e| vfs_err(e, &what))?;
        Ok(found.into_iter().map(OsString::from_vec).collect())
    }

    /// Open file `path` for reading: an `io.BufferedReader` (seekable), or a text wrapper
    /// for mode "r"/"rt". Any write mode raises `PermissionError`.
    #[pyo3(signature = (path, mode="rb", buffering=-1, encoding=None))]
    fn open<'py>(
        &self,
        py: Python<'py>,
        path: OsString,
        mode: &str,
        buffering: i64,
        encoding: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if mode.contains(['w', 'a', 'x', '+']) {
            return Err(read_only(&self.what(path.as_bytes())));
        }
        let file = Bound::new(py, self.open_file(py, &path)?)?;
        py.import("dsvault._io")?
            .getattr("wrap")?
            .call1((file, mode, buffering, encoding))
    }

    /// The raw handle under `open`: `File.readinto_at` and `File.read_at`.
    fn open_raw(&self, py: Python<'_>, path: OsString) -> PyResult<File> {
        self.open_file(py, &path)
    }

    /// Bytes `start..end` of file `path` (`end` None: to the end of the file; a range past
    /// the end is cut short there).
    #[pyo3(signature = (path, start=0, end=None))]
    fn read_range<'py>(
        &self,
        py: Python<'py>,
        path: OsString,
        start: i64,
        end: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (start, end) = (offset(start, "start")?, end.map(|e| offset(e, "end")).transpose()?);
        let file = self.open_file(py, &path)?;
        let end = end.unwrap_or(u64::MAX).min(file.size);
        file.read_bytes(py, start, end.saturating_sub(start))
    }

    /// Fill `buffer` (any writable, C-contiguous buffer: bytearray, memoryview, numpy
    /// array) with the bytes of file `path` from `offset`; returns how many were written
    /// (fewer than the buffer's size only at the end of the file).
    fn readinto_at(&self, py: Python<'_>, path: OsString, offset: i64, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        let offset = self::offset(offset, "offset")?;
        let buf = writable(buffer)?;
        let file = self.open_file(py, &path)?;
        file.fill(py, offset, &buf)
    }

    /// Bytes held in memory now: `{"memory_cache": verified chunks, "file_cache": whole files}`.
    fn cache_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let reader = self.reader()?;
        let d = PyDict::new(py);
        d.set_item("memory_cache", reader.cached_bytes())?;
        d.set_item("file_cache", reader.file_cache_bytes())?;
        Ok(d)
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let f = py.import("dsvault._native")?.getattr("_reopen_dataset")?;
        let s = &self.settings;
        let args = (s.dir.clone(), s.keywords(py)?, &self.name, &self.root).into_pyobject(py)?;
        Ok((f, args))
    }

    fn __repr__(&self) -> String {
        format!("dsvault.Dataset({:?}, root={})", self.name, &self.root[..16])
    }
}

/// An open file of a dataset. Reads take an offset (no position is kept here: the file
/// object `Dataset.open` returns keeps it).
#[pyclass(module = "dsvault", frozen)]
pub struct File {
    reader: Owned<DatasetReader>,
    fh: u64,
    size: u64,
    blake3: String,
    name: String,
    closed: AtomicBool,
}

impl File {
    fn live(&self) -> PyResult<&DatasetReader> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PyValueError::new_err(format!(
                "I/O operation on closed file {}",
                self.name
            )));
        }
        Ok(self.reader.get(&self.name)?)
    }

    /// Fill `buf` from `offset`, without the GIL.
    fn fill(&self, py: Python<'_>, offset: u64, buf: &PyUntypedBuffer) -> PyResult<usize> {
        let reader = self.live()?;
        let (ptr, len) = (SendPtr(buf.buf_ptr().cast()), buf.len_bytes());
        let fh = self.fh;
        py.detach(move || {
            let ptr = ptr;
            // SAFETY: `buf` is a writable, C-contiguous export of `len` bytes, held (so
            // neither freed nor resized) until after this returns.
            let dest = unsafe { std::slice::from_raw_parts_mut(ptr.0, len) };
            reader.read_at(fh, offset, dest)
        })
        .map_err(|e| vfs_err(e, &self.name))
    }

    /// `len` bytes from `offset` (fewer at the end of the file) as a new `bytes`.
    fn read_bytes<'py>(&self, py: Python<'py>, offset: u64, len: u64) -> PyResult<Bound<'py, PyBytes>> {
        let reader = self.live()?;
        let len = len.min(self.size.saturating_sub(offset)) as usize;
        let fh = self.fh;
        PyBytes::new_with(py, len, |dest| {
            let got = py
                .detach(|| reader.read_at(fh, offset, dest))
                .map_err(|e| vfs_err(e, &self.name))?;
            if got != len {
                return Err(vfs_err(VfsError::Damaged(short_read(&self.name)), &self.name));
            }
            Ok(())
        })
    }
}

#[pymethods]
impl File {
    /// The file's size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.size
    }

    /// `gold/NAME@VERSION:path`.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The file's content hash (blake3, hex).
    #[getter]
    fn blake3(&self) -> &str {
        &self.blake3
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Fill `buffer` from `offset`; returns the bytes written (0 at or past the end).
    fn readinto_at(&self, py: Python<'_>, offset: i64, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        let offset = self::offset(offset, "offset")?;
        let buf = writable(buffer)?;
        self.fill(py, offset, &buf)
    }

    /// Up to `size` bytes from `offset` (`size` None: to the end).
    #[pyo3(signature = (offset, size=None))]
    fn read_at<'py>(&self, py: Python<'py>, offset: i64, size: Option<i64>) -> PyResult<Bound<'py, PyBytes>> {
        let offset = self::offset(offset, "offset")?;
        let size = size.map(|s| self::offset(s, "size")).transpose()?.unwrap_or(u64::MAX);
        self.read_bytes(py, offset, size)
    }

    /// Release the handle (later reads raise `ValueError`). Closing twice is harmless.
    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) && self.reader.is_here() {
            if let Ok(reader) = self.reader.get(&self.name) {
                reader.close(self.fh);
            }
        }
    }

    fn __repr__(&self) -> String {
        format!("dsvault.File({:?}, size={})", self.name, self.size)
    }
}

impl Drop for File {
    fn drop(&mut self) {
        self.close();
    }
}

/// A raw pointer moved into a closure that runs without the GIL.
struct SendPtr(*mut u8);
// SAFETY: the pointed-to buffer outlives the closure (see `File::fill`).
unsafe impl Send for SendPtr {}

/// `buffer` as a writable, C-contiguous buffer, or a clear `TypeError`/`BufferError`.
fn writable(buffer: &Bound<'_, PyAny>) -> PyResult<PyUntypedBuffer> {
    let type_name = || buffer.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    let buf = PyUntypedBuffer::get(buffer).map_err(|_| {
        PyTypeError::new_err(format!(
            "readinto needs a writable bytes-like object (bytearray, memoryview, numpy array), not {}",
            type_name()
        ))
    })?;
    if buf.readonly() {
        return Err(PyTypeError::new_err(format!(
            "readinto needs a writable buffer; this {} is read-only (use a bytearray)",
            type_name()
        )));
    }
    if !buf.is_c_contiguous() {
        return Err(PyBufferError::new_err(
            "readinto needs a C-contiguous buffer; this one has gaps (a strided slice): pass a contiguous copy",
        ));
    }
    Ok(buf)
}

/// A non-negative offset or size.
fn offset(v: i64, what: &str) -> PyResult<u64> {
    u64::try_from(v).map_err(|_| PyValueError::new_err(format!("{what} must be >= 0, not {v}")))
}

fn short_read(name: &str) -> std::sync::Arc<dsvault::Error> {
    std::sync::Arc::new(dsvault::Error::Damaged(format!(
        "{name}: fewer bytes than its recorded size"
    )))
}

fn os(bytes: &[u8]) -> OsString {
    std::ffi::OsStr::from_bytes(bytes).to_os_string()
}

fn info_dict<'py>(py: Python<'py>, info: &PathInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let kind = match info.kind {
        NodeKind::File => "file",
        NodeKind::Dir => "directory",
        NodeKind::Symlink => "link",
        // Datasets hold none (only workspaces have FIFOs, sockets and devices).
        NodeKind::Fifo | NodeKind::Socket | NodeKind::BlockDevice | NodeKind::CharDevice => "other",
    };
    d.set_item("name", os(info.path.as_bytes()))?;
    d.set_item("type", kind)?;
    d.set_item("size", info.size)?;
    d.set_item("mode", info.mode)?;
    let mtime = info.mtime.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    d.set_item("mtime", mtime)?;
    if let Some(c) = info.content {
        d.set_item("blake3", c.to_hex())?;
    }
    if let Some(t) = &info.target {
        d.set_item("target", os(t))?;
    }
    Ok(d)
}

/// Regular files at or under `prefix`, sorted.
fn walk_files(reader: &DatasetReader, prefix: &DatasetPath) -> Result<Vec<Vec<u8>>, VfsError> {
    let top = reader.stat(prefix)?;
    if top.kind == NodeKind::File {
        return Ok(vec![prefix.as_bytes().to_vec()]);
    }
    let mut out = Vec::new();
    let mut todo = vec![top.path];
    while let Some(dir) = todo.pop() {
        for e in reader.list(&dir)? {
            match e.kind {
                NodeKind::File => out.push(e.path.as_bytes().to_vec()),
                NodeKind::Dir => todo.push(e.path),
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}
