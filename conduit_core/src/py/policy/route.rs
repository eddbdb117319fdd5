//! `Policy.route`: the router's hot path (featurise, select, runner-up) in one call.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyDict, PyList, PyString};

use super::super::{detached, PyFeatureHasher, DETACH_TEXT_BYTES};
use super::{owned_names, PyPolicy, INLINE_SELECT_WORK};
use crate::features::text_prefix;

/// `(arm, scores, propensity, uncertainty, runner_up, margin, features, version)`.
pub(super) type Routed<'py> = (
    Py<PyString>,
    Bound<'py, PyDict>,
    f64,
    f64,
    Option<Py<PyString>>,
    f64,
    Bound<'py, PyList>,
    u64,
);

pub(super) fn route<'py>(
    policy: &PyPolicy,
    py: Python<'py>,
    hasher: &PyFeatureHasher,
    text: &str,
    allowed: Option<Vec<PyBackedStr>>,
) -> PyResult<Routed<'py>> {
    let hasher = hasher.inner;
    let mut x = vec![0.0; hasher.dim()];
    if text.len() > DETACH_TEXT_BYTES {
        let owned = text_prefix(text).to_owned();
        x = detached(py, move || Ok(hasher.featurize(&owned)))?;
    } else {
        hasher.featurize_into(text, &mut x);
    }
    let names: Option<Vec<&str>> = allowed.as_ref().map(|a| a.iter().map(|s| &**s).collect());
    // Created before the policy is locked (see `select`).
    let dict = PyDict::new(py);
    let features = PyList::new(py, &x)?;
    let inline = policy.try_lock().filter(|guard| {
        let n_cand = names.as_ref().map_or(guard.bandit.arms.len(), Vec::len);
        x.len().saturating_mul(x.len()).saturating_mul(n_cand) <= INLINE_SELECT_WORK
    });
    if let Some(mut guard) = inline {
        let state = &mut *guard;
        let sel = state.bandit.select(&x, names.as_deref())?;
        let version = state.bandit.version();
        let py_names = state.names(py);
        for &(i, score) in &sel.scores {
            dict.set_item(py_names[i].bind(py), score)?;
        }
        let arm = py_names[sel.arm].clone_ref(py);
        let (runner_up, margin) = match sel.runner_up() {
            Some((i, margin)) => (Some(py_names[i].clone_ref(py)), margin),
            None => (None, f64::INFINITY),
        };
        return Ok((
            arm,
            dict,
            sel.propensity,
            sel.uncertainty,
            runner_up,
            margin,
            features,
            version,
        ));
    }
    let (arm, scores, propensity, uncertainty, runner_up, margin, version) = detached(py, || {
        let mut state = policy.lock();
        let bandit = &mut state.bandit;
        let sel = bandit.select(&x, names.as_deref())?;
        let (arm, scores) = owned_names(bandit, &sel);
        let (runner_up, margin) = match sel.runner_up() {
            Some((i, margin)) => (Some(bandit.arm_name(i).to_owned()), margin),
            None => (None, f64::INFINITY),
        };
        Ok((
            arm,
            scores,
            sel.propensity,
            sel.uncertainty,
            runner_up,
            margin,
            bandit.version(),
        ))
    })?;
    for (name, score) in scores {
        dict.set_item(name, score)?;
    }
    Ok((
        PyString::new(py, &arm).unbind(),
        dict,
        propensity,
        uncertainty,
        runner_up.map(|r| PyString::new(py, &r).unbind()),
        margin,
        features,
        version,
    ))
}
