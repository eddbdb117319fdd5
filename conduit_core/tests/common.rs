//! Helpers shared by the integration tests (each test file includes this module).
#![allow(dead_code)]

use conduit_core::kernels::packed_get;
use conduit_core::{Bandit, PolicyConfig, PolicyKind};

/// Full `dim x dim` matrix from a packed symmetric one.
pub fn unpack(m: &[f64], dim: usize) -> Vec<Vec<f64>> {
    (0..dim)
        .map(|i| (0..dim).map(|j| packed_get(m, dim, i, j)).collect())
        .collect()
}

pub fn matmul(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| (0..n).map(|k| a[i][k] * b[k][j]).sum())
                .collect()
        })
        .collect()
}

/// `(A, A⁻¹, b, θ)` of a linear arm.
pub fn linear_state(p: &mut Bandit, arm: &str) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let lin = p.linear_stats_mut(arm).unwrap().expect("linear arm");
    (
        lin.a_matrix(),
        lin.a_inv_matrix(),
        lin.b().to_vec(),
        lin.theta().to_vec(),
    )
}

pub fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let scale = a.iter().chain(b).fold(1e-300f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

pub fn policy(kind: PolicyKind, dim: usize, arms: &[&str]) -> Bandit {
    Bandit::new(PolicyConfig::new(kind, dim), arms).unwrap()
}

/// Tiny deterministic generator so test streams do not depend on proptest internals.
pub struct Stream(pub u64);

impl Stream {
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn vector(&mut self, dim: usize) -> Vec<f64> {
        (0..dim).map(|_| self.next_f64() * 2.0 - 1.0).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_f64() * n as f64) as usize).min(n - 1)
    }
}
