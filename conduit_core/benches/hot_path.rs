//! Criterion benchmarks of the pure-Rust hot path: LinUCB select, update and select+update at
//! d ∈ {16, 64, 386} and K ∈ {5, 20}, plus feature hashing. The same operations timed
//! through Python live in `benches/bench_core.py`; the difference is the binding cost.
//!
//! The `quad_forms` group times selection's kernel alone at d = 64 for 1 to 11 arms, from
//! f64 and from f32 storage: per arm it shows where the packed matrices stop fitting in L1
//! (48 KiB here), i.e. the memory floor of a d = 64 selection.
//!
//! Run: `cargo bench -p conduit_core --bench hot_path`

use std::hint::black_box;

use conduit_core::kernels::{packed_len, quad_forms, quad_forms_mixed};
use conduit_core::{Bandit, FeatureHasher, PolicyConfig, PolicyKind};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn contexts(dim: usize, n: usize) -> Vec<Vec<f64>> {
    // A fixed xorshift stream: the benchmark needs varied unit vectors, not statistics.
    let mut s: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            let mut x: Vec<f64> = (0..dim)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                })
                .collect();
            let n = x.iter().map(|v| v * v).sum::<f64>().sqrt();
            x.iter_mut().for_each(|v| *v /= n);
            x
        })
        .collect()
}

fn warmed(kind: PolicyKind, dim: usize, k: usize, xs: &[Vec<f64>]) -> (Bandit, Vec<String>) {
    let names: Vec<String> = (0..k).map(|i| format!("model-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut b = Bandit::new(PolicyConfig::new(kind, dim), &refs).expect("config");
    for (t, x) in xs.iter().enumerate().take(200) {
        b.update(&names[t % k], x, (t % 3) as f64 / 2.0, 1.0)
            .expect("update");
    }
    (b, names)
}

fn bench_linucb(c: &mut Criterion) {
    let mut group = c.benchmark_group("linucb");
    for &dim in &[16usize, 64, 386] {
        for &k in &[5usize, 20] {
            let xs = contexts(dim, 256);
            let id = format!("d{dim}_k{k}");
            let (mut b, names) = warmed(PolicyKind::LinUcb, dim, k, &xs);
            let mut t = 0usize;
            group.bench_function(BenchmarkId::new("select", &id), |bench| {
                bench.iter(|| {
                    t += 1;
                    black_box(b.select(&xs[t % xs.len()], None).expect("select"))
                })
            });
            group.bench_function(BenchmarkId::new("update", &id), |bench| {
                bench.iter(|| {
                    t += 1;
                    b.update(&names[t % k], &xs[t % xs.len()], 0.5, 1.0)
                        .expect("update")
                })
            });
            group.bench_function(BenchmarkId::new("select_update", &id), |bench| {
                bench.iter(|| {
                    t += 1;
                    let x = &xs[t % xs.len()];
                    let sel = b.select(x, None).expect("select");
                    let arm = b.arm_name(sel.arm).to_owned();
                    b.update(&arm, x, 0.5, 1.0).expect("update")
                })
            });
        }
    }
    group.finish();
}

fn bench_lin_ts(c: &mut Criterion) {
    let mut group = c.benchmark_group("lin_ts");
    for &dim in &[64usize, 386] {
        let xs = contexts(dim, 256);
        let (mut b, _) = warmed(PolicyKind::LinTs, dim, 5, &xs);
        let mut t = 0usize;
        group.bench_function(BenchmarkId::new("select", format!("d{dim}_k5")), |bench| {
            bench.iter(|| {
                t += 1;
                black_box(b.select(&xs[t % xs.len()], None).expect("select"))
            })
        });
    }
    group.finish();
}

fn bench_quad_forms(c: &mut Criterion) {
    let mut group = c.benchmark_group("quad_forms");
    let dim = 64;
    let x = &contexts(dim, 1)[0];
    for &k in &[1usize, 2, 5, 11] {
        let ms: Vec<Vec<f64>> = (0..k)
            .map(|a| {
                (0..packed_len(dim))
                    .map(|i| ((i * 7 + a) % 13) as f64 / 64.0)
                    .collect()
            })
            .collect();
        let m32: Vec<Vec<f32>> = ms
            .iter()
            .map(|m| m.iter().map(|v| *v as f32).collect())
            .collect();
        let refs: Vec<&[f64]> = ms.iter().map(Vec::as_slice).collect();
        let refs32: Vec<&[f32]> = m32.iter().map(Vec::as_slice).collect();
        let mut out = vec![0.0; k];
        let id = format!("d{dim}_k{k}");
        group.bench_function(BenchmarkId::new("f64", &id), |bench| {
            bench.iter(|| quad_forms(black_box(&refs), x, &mut out))
        });
        group.bench_function(BenchmarkId::new("f32", &id), |bench| {
            bench.iter(|| quad_forms_mixed(black_box(&refs32), x, &mut out))
        });
    }
    group.finish();
}

fn bench_features(c: &mut Criterion) {
    let h = FeatureHasher::new(64).expect("dim");
    let text = "How do I write a function in Python that parses a CSV file and sums a column? \
                Please include error handling, e.g. for 3/0 or missing values.";
    c.bench_function("features/featurize_d64", |bench| {
        bench.iter(|| black_box(h.featurize(black_box(text))))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1))
        .sample_size(20);
    targets = bench_linucb, bench_lin_ts, bench_quad_forms, bench_features
}
criterion_main!(benches);
