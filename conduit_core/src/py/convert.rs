//! Conversions between Python objects and the core's inputs and outputs, for `policy`.

use std::mem::MaybeUninit;
use std::ops::Deref;

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyString, PyType};

/// Feature vectors up to this length are copied to the stack, not the heap.
const STACK_FEATURES: usize = 256;

/// A copy of the features taken while the GIL is held: another thread may change the NumPy
/// array as soon as the GIL is released (or, with NumPy releasing the GIL in its own loops,
/// even before), and the core validates then uses its input. Deliberately large: it lives
/// on the stack for the length of one call, in place of a heap allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Features {
    /// The first `usize` entries are initialised.
    Stack([MaybeUninit<f64>; STACK_FEATURES], usize),
    Heap(Vec<f64>),
}

impl Features {
    pub(super) fn copy(features: &Bound<'_, PyArray1<f64>>) -> Self {
        // SAFETY: the GIL is held and no Rust code holds a mutable view of this array; the
        // slice is only read, immediately.
        match unsafe { features.as_slice() } {
            Ok(s) if s.len() <= STACK_FEATURES => {
                // Not zeroed first: only the copied prefix is ever read.
                let mut buf = [MaybeUninit::<f64>::uninit(); STACK_FEATURES];
                for (b, v) in buf.iter_mut().zip(s) {
                    b.write(*v);
                }
                Features::Stack(buf, s.len())
            }
            Ok(s) => Features::Heap(s.to_vec()),
            // Not contiguous (a strided view): copy element by element.
            Err(_) => Features::Heap(features.to_owned_array().to_vec()),
        }
    }
}

impl Deref for Features {
    type Target = [f64];
    fn deref(&self) -> &[f64] {
        match self {
            // SAFETY: the first `n` entries were written in `copy`, and `MaybeUninit<f64>`
            // has the layout of `f64`.
            Features::Stack(buf, n) => unsafe {
                &*(std::ptr::from_ref(&buf[..*n]) as *const [f64])
            },
            Features::Heap(v) => v,
        }
    }
}

/// A reward or weight: exactly a Python float. Anything else (an int, a NumPy scalar, a
/// bool) is a `TypeError`, on which `conduit_sidecar.bandit` validates and converts the
/// argument and calls again.
pub(super) fn exact_float(value: &Bound<'_, PyAny>, field: &str) -> PyResult<f64> {
    match value.cast_exact::<PyFloat>() {
        Ok(f) => Ok(f.value()),
        Err(_) => Err(PyTypeError::new_err(format!("{field}: must be a float"))),
    }
}

/// Builds an instance of `cls` (a plain Python class such as the `Selection` dataclass) and
/// sets its four fields directly, as `object.__new__` plus the slot setters would, without
/// running `__init__` (a frozen dataclass's `__init__` costs as much as the selection).
pub(super) fn new_selection<'py>(
    cls: &Bound<'py, PyType>,
    arm: Bound<'py, PyString>,
    scores: Bound<'py, PyDict>,
    propensity: f64,
    uncertainty: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let tp = cls.as_type_ptr();
    // SAFETY: `tp` is a live type object; only plain heap classes deriving directly from
    // `object` are accepted, for which `tp_alloc` returns a zeroed, initialised instance that
    // owns no state beyond its dict and slots.
    unsafe {
        let plain = (*tp).tp_base == std::ptr::addr_of_mut!(ffi::PyBaseObject_Type)
            && ffi::PyType_HasFeature(tp, ffi::Py_TPFLAGS_HEAPTYPE) != 0;
        let alloc = (*tp).tp_alloc;
        let Some(alloc) = alloc.filter(|_| plain) else {
            return Err(PyTypeError::new_err(
                "cls: must be a plain Python class (derived from object only)",
            ));
        };
        let raw = alloc(tp, 0);
        let obj = Bound::from_owned_ptr_or_err(py, raw)?;
        let fields: [(&Bound<'py, PyString>, Bound<'py, PyAny>); 4] = [
            (intern!(py, "arm"), arm.into_any()),
            (intern!(py, "scores"), scores.into_any()),
            (
                intern!(py, "propensity"),
                PyFloat::new(py, propensity).into_any(),
            ),
            (
                intern!(py, "uncertainty"),
                PyFloat::new(py, uncertainty).into_any(),
            ),
        ];
        for (name, value) in fields {
            // The generic setter goes straight to the slot descriptor, past a frozen
            // dataclass's `__setattr__`.
            if ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value.as_ptr()) != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        Ok(obj)
    }
}
