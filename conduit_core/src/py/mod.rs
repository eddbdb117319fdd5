//! The Python binding, `conduit_sidecar._core`: thin wrappers over the pure-Rust types.
//!
//! Calls that do real work go through [`detached`], which copies nothing itself but runs
//! the closure with the GIL released and converts a [`CoreError`] into the Python
//! `CoreError`. Inputs are copied into owned memory before that (another Python thread may
//! mutate a NumPy array while the GIL is released). Each policy sits behind a `Mutex`, so
//! calls from many Python threads serialise on the policy, never on the interpreter; the
//! smallest policy calls run with the GIL held (see `policy`).

mod convert;
mod policy;

use numpy::PyArray1;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::CoreError as RustCoreError;
use crate::features::FeatureHasher as RustFeatureHasher;

create_exception!(
    conduit_sidecar._core,
    CoreError,
    PyValueError,
    "An input the Conduit core refused; the message names the field."
);

impl From<RustCoreError> for PyErr {
    fn from(err: RustCoreError) -> PyErr {
        CoreError::new_err(err.to_string())
    }
}

/// Runs `f` with the GIL released and converts its error.
fn detached<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> Result<T, RustCoreError> + Send,
    T: Send,
{
    py.detach(f).map_err(PyErr::from)
}

/// Deterministic text featuriser (see `conduit_sidecar.bandit.FeatureHasher`).
#[pyclass(name = "FeatureHasher", module = "conduit_sidecar._core", frozen)]
pub struct PyFeatureHasher {
    inner: RustFeatureHasher,
}

/// Texts longer than this are copied and featurised with the GIL released.
const DETACH_TEXT_BYTES: usize = 4096;

#[pymethods]
impl PyFeatureHasher {
    #[new]
    #[pyo3(signature = (dim=64))]
    fn new(dim: i64) -> PyResult<Self> {
        let dim = usize::try_from(dim)
            .map_err(|_| RustCoreError::invalid("dim", format!("must be >= 8, got {dim}")))?;
        Ok(PyFeatureHasher {
            inner: RustFeatureHasher::new(dim)?,
        })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn featurize<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let hasher = self.inner;
        let v = if text.len() > DETACH_TEXT_BYTES {
            let owned = crate::features::text_prefix(text).to_owned();
            detached(py, move || Ok(hasher.featurize(&owned)))?
        } else {
            hasher.featurize(text)
        };
        Ok(PyArray1::from_vec(py, v))
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CoreError", m.py().get_type::<CoreError>())?;
    m.add_class::<policy::PyPolicy>()?;
    m.add_class::<PyFeatureHasher>()?;
    Ok(())
}
