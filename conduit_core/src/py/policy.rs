//! `conduit_sidecar._core.Policy`: the binding of [`Bandit`].
//!
//! Small calls (`select` at a few arms of a small dimension, `update` at a small dimension)
//! run with the GIL held: the math takes a few microseconds, less than letting another
//! thread take the interpreter and getting it back, and holding it means the NumPy input and
//! the cached Python arm names can be used directly. They only ever `try_lock` the policy
//! while holding the GIL; if another thread holds the policy, they fall back to the detached
//! path (never block on the policy with the GIL held, and never take the GIL with the policy
//! held, so the two locks cannot deadlock). Every larger call releases the GIL around the
//! math, and a thread waiting for the policy waits with the GIL released.

use std::sync::{Mutex, MutexGuard, TryLockError};

use numpy::{PyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyDict, PyString, PyType};

use super::convert::{exact_float, new_selection, Features};
use super::{detached, PyFeatureHasher};
use crate::bandit::Bandit;
use crate::error::CoreError as RustCoreError;
use crate::merge::{merge_delta_shared, Shared};
use crate::policy::{PolicyConfig, PolicyKind, Selection};

mod route;
/// Largest `dim² × candidates` a `select` runs with the GIL held: a few microseconds of
/// math (d = 64 with up to 16 arms, d = 16 with up to 256).
const INLINE_SELECT_WORK: usize = 1 << 16;

/// Largest dimension an `update`/`reapply` runs with the GIL held: two passes over a packed
/// 128x128 inverse are about a microsecond (the exact re-factorisation every
/// `refactor_every` updates is the longest hold, well under a millisecond).
const INLINE_UPDATE_MAX_DIM: usize = 128;

/// The policy and its arm names as Python strings (same order as the bandit's arms).
struct State {
    bandit: Bandit,
    names: Vec<Py<PyString>>,
    /// Set when the arms changed without the GIL (a merged delta may add arms); the names
    /// are rebuilt by the next call that holds the GIL.
    names_stale: bool,
}

impl State {
    fn names(&mut self, py: Python<'_>) -> &[Py<PyString>] {
        if self.names_stale || self.names.len() != self.bandit.arms.len() {
            self.names = self
                .bandit
                .arm_names()
                .map(|n| PyString::new(py, n).unbind())
                .collect();
            self.names_stale = false;
        }
        &self.names
    }
}

/// From this size a `bytes` result is filled with the GIL released.
const DETACH_COPY_BYTES: usize = 1 << 20;

/// A Python `bytes` holding `data`. A snapshot at d = 386 is about 20 MB, and copying it
/// into fresh memory (mostly first-touch page faults) with the GIL held stops every other
/// Python thread, an event loop included, for milliseconds, and for as long as the OS
/// leaves this thread off the CPU meanwhile: so large ones are copied with the GIL released.
fn bytes_detached<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    if data.len() < DETACH_COPY_BYTES {
        return Ok(PyBytes::new(py, data));
    }
    // SAFETY: `PyBytes_FromStringAndSize(NULL, n)` returns a new bytes object (or NULL with
    // an exception set) whose n-byte buffer is uninitialised and referenced by nothing
    // else: no other thread can see it until it is returned, after it is filled. The
    // buffer pointer is passed as an address so the closure is `Send`.
    unsafe {
        let len = data.len() as pyo3::ffi::Py_ssize_t;
        let ptr = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len);
        let bytes = Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked::<PyBytes>();
        let buffer = pyo3::ffi::PyBytes_AsString(ptr) as usize;
        py.detach(|| {
            std::ptr::copy_nonoverlapping(data.as_ptr(), buffer as *mut u8, data.len());
        });
        Ok(bytes)
    }
}

/// The chosen arm's name and every candidate's `(name, score)` as Rust strings, for the
/// paths that select with the GIL released (the cached Python names may change meanwhile).
fn owned_names(bandit: &Bandit, sel: &Selection) -> (String, Vec<(String, f64)>) {
    let scores = sel
        .scores
        .iter()
        .map(|&(i, s)| (bandit.arm_name(i).to_owned(), s))
        .collect();
    (bandit.arm_name(sel.arm).to_owned(), scores)
}

/// A contextual-bandit policy (see `conduit_sidecar.bandit.BanditPolicy`).
#[pyclass(name = "Policy", module = "conduit_sidecar._core", frozen)]
pub struct PyPolicy {
    inner: Mutex<State>,
    /// Held for a whole merge (never with `inner` waiting on it): one merge at a time, so
    /// concurrent merges do not keep invalidating each other's work (see `merge`).
    merging: Mutex<()>,
}

/// The policy as [`Shared`] for a merge: each short hold marks the cached arm names stale,
/// since the merge may add arms.
struct Merging<'a>(&'a PyPolicy);

impl Shared for Merging<'_> {
    fn with<R>(&self, f: impl FnOnce(&mut Bandit) -> R) -> R {
        let mut state = self.0.lock();
        state.names_stale = true;
        f(&mut state.bandit)
    }
}

impl PyPolicy {
    fn wrap(bandit: Bandit) -> Self {
        PyPolicy {
            inner: Mutex::new(State {
                bandit,
                names: Vec::new(),
                names_stale: true,
            }),
            merging: Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside the core is a bug, but the statistics are validated before every
        // mutation, so the state behind a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The policy, if no other thread holds it; never blocks (the caller holds the GIL).
    fn try_lock(&self) -> Option<MutexGuard<'_, State>> {
        match self.inner.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Runs a state change with the GIL held if the dimension is small and the policy free,
    /// else detached.
    fn mutate<F>(&self, py: Python<'_>, f: F) -> PyResult<()>
    where
        F: Fn(&mut Bandit) -> Result<(), RustCoreError> + Send + Sync,
    {
        if let Some(mut state) = self.try_lock() {
            if state.bandit.config().dim <= INLINE_UPDATE_MAX_DIM {
                return f(&mut state.bandit).map_err(PyErr::from);
            }
        }
        detached(py, || f(&mut self.lock().bandit))
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
        Ok(PyPolicy::wrap(Bandit::new(config, &names)?))
    }

    /// An instance of `cls` with fields `arm`, `scores`, `propensity`, `uncertainty`.
    #[pyo3(signature = (cls, features, allowed=None))]
    fn select<'py>(
        &self,
        py: Python<'py>,
        cls: &Bound<'py, PyType>,
        features: &Bound<'py, PyArray1<f64>>,
        allowed: Option<Vec<PyBackedStr>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let x = Features::copy(features);
        let names: Option<Vec<&str>> = allowed.as_ref().map(|a| a.iter().map(|s| &**s).collect());
        let dim_sq = features.len().saturating_mul(features.len());
        // Created before the policy is locked: allocating a container may run the garbage
        // collector, and with it arbitrary finalisers, which might call this policy again.
        // Filling it (str keys with cached hashes, float values) runs no Python code.
        let dict = PyDict::new(py);
        if let Some(mut guard) = self.try_lock() {
            let n_cand = names.as_ref().map_or(guard.bandit.arms.len(), Vec::len);
            if dim_sq.saturating_mul(n_cand) <= INLINE_SELECT_WORK {
                let state = &mut *guard;
                let sel = state.bandit.select(&x, names.as_deref())?;
                let py_names = state.names(py);
                for &(i, score) in &sel.scores {
                    dict.set_item(py_names[i].bind(py), score)?;
                }
                let arm = py_names[sel.arm].clone_ref(py);
                drop(guard);
                return new_selection(
                    cls,
                    arm.into_bound(py),
                    dict,
                    sel.propensity,
                    sel.uncertainty,
                );
            }
        }
        // Arms may change between this closure and the GIL coming back, so the names leave
        // it as Rust strings.
        let (arm, scores, propensity, uncertainty) = detached(py, || {
            let mut state = self.lock();
            let bandit = &mut state.bandit;
            let sel = bandit.select(&x, names.as_deref())?;
            let (arm, scores) = owned_names(bandit, &sel);
            Ok((arm, scores, sel.propensity, sel.uncertainty))
        })?;
        for (name, score) in scores {
            dict.set_item(name, score)?;
        }
        new_selection(cls, PyString::new(py, &arm), dict, propensity, uncertainty)
    }

    /// The router's whole decision in one call: featurise `text` with `hasher`, then select
    /// among `allowed` (None: every arm). Returns `(arm, scores, propensity, uncertainty,
    /// runner_up, margin, features, version)`: `runner_up` is the best-scored other candidate
    /// (None if there is none), `margin` the chosen score minus its score (+inf without
    /// one), `features` the vector as a list of floats, `version` the policy version.
    #[pyo3(signature = (hasher, text, allowed=None))]
    fn route<'py>(
        &self,
        py: Python<'py>,
        hasher: &PyFeatureHasher,
        text: &str,
        allowed: Option<Vec<PyBackedStr>>,
    ) -> PyResult<route::Routed<'py>> {
        route::route(self, py, hasher, text, allowed)
    }

    /// `reward` and `weight` must be exact floats (else `TypeError`).
    fn update(
        &self,
        py: Python<'_>,
        arm: &str,
        features: &Bound<'_, PyArray1<f64>>,
        reward: &Bound<'_, PyAny>,
        weight: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let reward = exact_float(reward, "reward")?;
        let weight = exact_float(weight, "weight")?;
        let x = Features::copy(features);
        self.mutate(py, |b| b.update(arm, &x, reward, weight))
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
        let x = Features::copy(features);
        self.mutate(py, |b| {
            b.reapply(arm, &x, old_reward, old_weight, new_reward, new_weight)
        })
    }

    fn add_arm(&self, py: Python<'_>, arm: &str) -> PyResult<()> {
        detached(py, || {
            let mut state = self.lock();
            state.names_stale = true;
            state.bandit.add_arm(arm)
        })
    }

    fn remove_arm(&self, py: Python<'_>, arm: &str) -> PyResult<()> {
        detached(py, || {
            let mut state = self.lock();
            state.names_stale = true;
            state.bandit.remove_arm(arm)
        })
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = detached(py, || Ok(self.lock().bandit.to_bytes()))?;
        bytes_detached(py, &data)
    }

    /// `data` is read in place with the GIL released: a `bytes` object is immutable, and
    /// the caller's reference keeps it alive for the whole call.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let bandit = detached(py, || Bandit::from_bytes(data))?;
        Ok(PyPolicy::wrap(bandit))
    }

    fn take_delta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = detached(py, || Ok(self.lock().bandit.take_delta()))?;
        bytes_detached(py, &data)
    }

    /// The exact re-factorisations run without holding the policy: `select`, `route` and
    /// `update` from other threads go on meanwhile (see `crate::merge`).
    /// With `skip_unknown` the delta's arms this policy does not have are left out instead
    /// of added; returns their names.
    #[pyo3(signature = (delta, *, skip_unknown=false))]
    fn merge_delta(
        &self,
        py: Python<'_>,
        delta: &[u8],
        skip_unknown: bool,
    ) -> PyResult<Vec<String>> {
        // Read in place with the GIL released (immutable, kept alive by the caller).
        detached(py, || {
            let _one_at_a_time = self.merging.lock().unwrap_or_else(|p| p.into_inner());
            merge_delta_shared(&Merging(self), delta, skip_unknown)
        })
    }

    /// `{arm: (weight_sum, reward_sum, updates)}`.
    fn arm_stats(&self, py: Python<'_>) -> Vec<(String, (f64, f64, u64))> {
        detached(py, || {
            Ok(self
                .lock()
                .bandit
                .arm_stats()
                .into_iter()
                .map(|(n, s)| (n.to_owned(), (s.weight_sum, s.reward_sum, s.updates)))
                .collect())
        })
        .unwrap_or_default()
    }

    /// `θ` of a linear arm, `None` for the other policies.
    fn theta<'py>(
        &self,
        py: Python<'py>,
        arm: &str,
    ) -> PyResult<Option<Bound<'py, PyArray1<f64>>>> {
        let theta = detached(py, || {
            Ok(self.lock().bandit.theta(arm)?.map(<[f64]>::to_vec))
        })?;
        Ok(theta.map(|t| PyArray1::from_vec(py, t)))
    }

    #[getter]
    fn arms(&self, py: Python<'_>) -> Vec<String> {
        detached(py, || {
            Ok(self.lock().bandit.arm_names().map(str::to_owned).collect())
        })
        .unwrap_or_default()
    }

    #[getter]
    fn version(&self, py: Python<'_>) -> u64 {
        match self.try_lock() {
            Some(state) => state.bandit.version(),
            None => detached(py, || Ok(self.lock().bandit.version())).unwrap_or_default(),
        }
    }

    /// The version without the steps of merged deltas (changes only with local learning).
    #[getter]
    fn local_version(&self, py: Python<'_>) -> u64 {
        match self.try_lock() {
            Some(state) => state.bandit.local_version(),
            None => detached(py, || Ok(self.lock().bandit.local_version())).unwrap_or_default(),
        }
    }

    /// The configuration as keyword arguments of the constructor (plus `kind` and `dim`).
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = detached(py, || Ok(self.lock().bandit.config().clone()))?;
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
