//! The Python binding, `conduit_sidecar._core`: thin wrappers over the pure-Rust types.
//!
//! Every call that does real work goes through [`detached`], which copies nothing itself but
//! runs the closure with the GIL released and converts a [`CoreError`] into the Python
//! `CoreError`. Inputs are copied into owned memory before that (another Python thread may
//! mutate a NumPy array while the GIL is released). Each policy sits behind a `Mutex`, so
//! calls from many Python threads serialise on the policy, never on the interpreter.

use std::sync::{Mutex, MutexGuard};

use numpy::{PyArray1, PyArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::bandit::Bandit;
use crate::error::CoreError as RustCoreError;
use crate::features::FeatureHasher as RustFeatureHasher;
use crate::policy::{PolicyConfig, PolicyKind};

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

/// Copies a 1-D float64 array into owned memory while the GIL is held (so no Python code
/// can change it mid-copy). This skips NumPy-borrow registration, which would cost more than
/// the copy of a few hundred floats.
fn owned_features(features: &Bound<'_, PyArray1<f64>>) -> Vec<f64> {
    features
        .to_vec()
        .unwrap_or_else(|_| features.to_owned_array().to_vec())
}

/// A contextual-bandit policy (see `conduit_sidecar.bandit.BanditPolicy`).
#[pyclass(name = "Policy", module = "conduit_sidecar._core", frozen)]
pub struct PyPolicy {
    inner: Mutex<Bandit>,
}

impl PyPolicy {
    fn lock(&self) -> MutexGuard<'_, Bandit> {
        // A panic inside the core is a bug, but the statistics are validated before every
        // mutation, so the state behind a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl PyPolicy {
    #[new]
    #[pyo3(signature = (kind, dim, arms, *, alpha=1.0, ridge=1.0, epsilon=0.1, ts_scale=0.5,
        prior_alpha=1.0, prior_beta=1.0, discount=1.0, refactor_every=1000, mc_samples=200,
        seed=0, fixed_arm=None, reward_offset=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: &str,
        dim: i64,
        arms: Vec<String>,
        alpha: f64,
        ridge: f64,
        epsilon: f64,
        ts_scale: f64,
        prior_alpha: f64,
        prior_beta: f64,
        discount: f64,
        refactor_every: i64,
        mc_samples: i64,
        seed: u64,
        fixed_arm: Option<String>,
        reward_offset: f64,
    ) -> PyResult<Self> {
        let kind = PolicyKind::parse(kind)?;
        let dim = usize::try_from(dim)
            .map_err(|_| RustCoreError::invalid("dim", format!("must be >= 1, got {dim}")))?;
        let mut config = PolicyConfig::new(kind, dim);
        config.alpha = alpha;
        config.ridge = ridge;
        config.epsilon = epsilon;
        config.ts_scale = ts_scale;
        config.prior_alpha = prior_alpha;
        config.prior_beta = prior_beta;
        config.discount = discount;
        config.refactor_every = u64::try_from(refactor_every).map_err(|_| {
            RustCoreError::invalid(
                "refactor_every",
                format!("must be >= 1, got {refactor_every}"),
            )
        })?;
        config.mc_samples = u32::try_from(mc_samples).map_err(|_| {
            RustCoreError::invalid(
                "mc_samples",
                format!("must be in [1, 1000000], got {mc_samples}"),
            )
        })?;
        config.seed = seed;
        config.fixed_arm = fixed_arm;
        config.reward_offset = reward_offset;
        let names: Vec<&str> = arms.iter().map(String::as_str).collect();
        Ok(PyPolicy {
            inner: Mutex::new(Bandit::new(config, &names)?),
        })
    }

    /// `(arm, scores, propensity, uncertainty)`.
    #[pyo3(signature = (features, allowed=None))]
    fn select<'py>(
        &self,
        py: Python<'py>,
        features: &Bound<'py, PyArray1<f64>>,
        allowed: Option<Vec<String>>,
    ) -> PyResult<(String, Bound<'py, PyDict>, f64, f64)> {
        let x = owned_features(features);
        let (arm, scores, propensity, uncertainty) = detached(py, || {
            let mut bandit = self.lock();
            let names: Option<Vec<&str>> = allowed
                .as_ref()
                .map(|a| a.iter().map(String::as_str).collect());
            let sel = bandit.select(&x, names.as_deref())?;
            let scores: Vec<(String, f64)> = sel
                .scores
                .iter()
                .map(|&(i, s)| (bandit.arm_name(i).to_owned(), s))
                .collect();
            Ok((
                bandit.arm_name(sel.arm).to_owned(),
                scores,
                sel.propensity,
                sel.uncertainty,
            ))
        })?;
        let dict = PyDict::new(py);
        for (name, score) in scores {
            dict.set_item(name, score)?;
        }
        Ok((arm, dict, propensity, uncertainty))
    }

    #[pyo3(signature = (arm, features, reward, weight=1.0))]
    fn update(
        &self,
        py: Python<'_>,
        arm: &str,
        features: &Bound<'_, PyArray1<f64>>,
        reward: f64,
        weight: f64,
    ) -> PyResult<()> {
        let x = owned_features(features);
        let arm = arm.to_owned();
        detached(py, || self.lock().update(&arm, &x, reward, weight))
    }

    #[allow(clippy::too_many_arguments)]
    fn reapply(
        &self,
        py: Python<'_>,
        arm: &str,
        features: &Bound<'_, PyArray1<f64>>,
        old_reward: f64,
        old_weight: f64,
        new_reward: f64,
        new_weight: f64,
    ) -> PyResult<()> {
        let x = owned_features(features);
        let arm = arm.to_owned();
        detached(py, || {
            self.lock()
                .reapply(&arm, &x, old_reward, old_weight, new_reward, new_weight)
        })
    }

    fn add_arm(&self, py: Python<'_>, arm: &str) -> PyResult<()> {
        let arm = arm.to_owned();
        detached(py, || self.lock().add_arm(&arm))
    }

    fn remove_arm(&self, py: Python<'_>, arm: &str) -> PyResult<()> {
        let arm = arm.to_owned();
        detached(py, || self.lock().remove_arm(&arm))
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = detached(py, || Ok(self.lock().to_bytes()))?;
        Ok(PyBytes::new(py, &data))
    }

    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let data = data.to_vec();
        let bandit = detached(py, || Bandit::from_bytes(&data))?;
        Ok(PyPolicy {
            inner: Mutex::new(bandit),
        })
    }

    fn take_delta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = detached(py, || Ok(self.lock().take_delta()))?;
        Ok(PyBytes::new(py, &data))
    }

    fn merge_delta(&self, py: Python<'_>, delta: &[u8]) -> PyResult<()> {
        let delta = delta.to_vec();
        detached(py, || self.lock().merge_delta(&delta))
    }

    /// `{arm: (weight_sum, reward_sum, updates)}`.
    fn arm_stats(&self) -> Vec<(String, (f64, f64, u64))> {
        self.lock()
            .arm_stats()
            .into_iter()
            .map(|(n, s)| (n.to_owned(), (s.weight_sum, s.reward_sum, s.updates)))
            .collect()
    }

    /// `θ` of a linear arm, `None` for the other policies.
    fn theta<'py>(
        &self,
        py: Python<'py>,
        arm: &str,
    ) -> PyResult<Option<Bound<'py, PyArray1<f64>>>> {
        let theta = self.lock().theta(arm)?.map(<[f64]>::to_vec);
        Ok(theta.map(|t| PyArray1::from_vec(py, t)))
    }

    #[getter]
    fn arms(&self) -> Vec<String> {
        self.lock().arm_names().map(str::to_owned).collect()
    }

    #[getter]
    fn version(&self) -> u64 {
        self.lock().version()
    }

    /// The configuration as keyword arguments of the constructor (plus `kind` and `dim`).
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.lock().config().clone();
        let d = PyDict::new(py);
        d.set_item("kind", c.kind.name())?;
        d.set_item("dim", c.dim)?;
        d.set_item("alpha", c.alpha)?;
        d.set_item("ridge", c.ridge)?;
        d.set_item("epsilon", c.epsilon)?;
        d.set_item("ts_scale", c.ts_scale)?;
        d.set_item("prior_alpha", c.prior_alpha)?;
        d.set_item("prior_beta", c.prior_beta)?;
        d.set_item("discount", c.discount)?;
        d.set_item("refactor_every", c.refactor_every)?;
        d.set_item("mc_samples", c.mc_samples)?;
        d.set_item("seed", c.seed)?;
        d.set_item("fixed_arm", c.fixed_arm)?;
        d.set_item("reward_offset", c.reward_offset)?;
        Ok(d)
    }
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
    m.add_class::<PyPolicy>()?;
    m.add_class::<PyFeatureHasher>()?;
    Ok(())
}
