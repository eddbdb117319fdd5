//! Numerical accuracy of the linear statistics: Sherman–Morrison with periodic exact
//! re-factorisation keeps `A⁻¹` the inverse of `A`, and the net-delta re-application equals
//! recomputing from scratch.

mod common;

use common::*;
use conduit_core::{Bandit, PolicyConfig, PolicyKind};
use proptest::prelude::*;

#[allow(clippy::needless_range_loop)] // (i, j) index two matrices symmetrically
fn check_inverse(p: &mut Bandit, arm: &str, dim: usize) {
    let (a, a_inv, _, _) = linear_state(p, arm);
    let prod = matmul(&unpack(&a_inv, dim), &unpack(&a, dim));
    for i in 0..dim {
        for j in 0..dim {
            let want = if i == j { 1.0 } else { 0.0 };
            assert!(
                (prod[i][j] - want).abs() < 1e-8,
                "A^-1 A differs from I at ({i},{j}): {}",
                prod[i][j]
            );
            // The product of two symmetric matrices that are inverses is symmetric too.
            assert!((prod[i][j] - prod[j][i]).abs() < 1e-8);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]

    #[test]
    fn inverse_stays_exact_after_100k_weighted_updates(seed in 1u64..u64::MAX, refactor in 200u64..3000) {
        let dim = 8;
        let mut cfg = PolicyConfig::new(PolicyKind::LinUcb, dim);
        cfg.refactor_every = refactor;
        let mut p = Bandit::new(cfg, &["a", "b"]).unwrap();
        let mut s = Stream(seed);
        let mut history: Vec<(usize, Vec<f64>, f64, f64)> = Vec::new();
        for t in 0..100_000 {
            let arm = s.below(2);
            let name = ["a", "b"][arm];
            let x = s.vector(dim);
            let (r, w) = (s.next_f64(), s.next_f64());
            p.update(name, &x, r, w).unwrap();
            if t % 97 == 0 {
                history.push((arm, x, r, w));
            }
            // Now and then replace an earlier observation, half of the time by a smaller
            // weight: a downdate.
            if t % 389 == 0 && !history.is_empty() {
                let k = s.below(history.len());
                let (arm, x, r, w) = history[k].clone();
                let (r2, w2) = (s.next_f64(), s.next_f64());
                p.reapply(["a", "b"][arm], &x, r, w, r2, w2).unwrap();
                history[k] = (arm, x, r2, w2);
            }
        }
        check_inverse(&mut p, "a", dim);
        check_inverse(&mut p, "b", dim);
    }

    #[test]
    fn reapply_equals_recomputing_from_scratch(seed in 1u64..u64::MAX, offset in 0.0f64..=1.0) {
        let dim = 6;
        let mut s = Stream(seed);
        let n = 200;
        let obs: Vec<(Vec<f64>, f64, f64)> =
            (0..n).map(|_| (s.vector(dim), s.next_f64(), s.next_f64())).collect();
        let policy = |kind, dim, arms: &[&str]| {
            let mut cfg = PolicyConfig::new(kind, dim);
            cfg.reward_offset = offset;
            Bandit::new(cfg, arms).unwrap()
        };
        let mut incremental = policy(PolicyKind::LinUcb, dim, &["m"]);
        let mut finals = obs.clone();
        for (x, r, w) in &obs {
            incremental.update("m", x, *r, *w).unwrap();
        }
        // Several rounds of replacements, including weight decreases and removals to 0.
        for round in 0..3 {
            for (k, item) in finals.iter_mut().enumerate() {
                if (k + round) % 3 != 0 {
                    continue;
                }
                let (r2, w2) = if k % 7 == 0 { (0.0, 0.0) } else { (s.next_f64(), s.next_f64()) };
                incremental.reapply("m", &item.0, item.1, item.2, r2, w2).unwrap();
                item.1 = r2;
                item.2 = w2;
            }
        }
        let mut scratch = policy(PolicyKind::LinUcb, dim, &["m"]);
        for (x, r, w) in &finals {
            if *w > 0.0 {
                scratch.update("m", x, *r, *w).unwrap();
            }
        }
        let (a1, ai1, b1, t1) = linear_state(&mut incremental, "m");
        let (a2, ai2, b2, t2) = linear_state(&mut scratch, "m");
        prop_assert!(max_rel_diff(&a1, &a2) < 1e-12);
        prop_assert!(max_rel_diff(&b1, &b2) < 1e-12);
        prop_assert!(max_rel_diff(&ai1, &ai2) < 1e-9);
        prop_assert!(max_rel_diff(&t1, &t2) < 1e-9);
        let s1 = incremental.arm_stats()[0].1;
        let s2 = scratch.arm_stats()[0].1;
        prop_assert!((s1.weight_sum - s2.weight_sum).abs() < 1e-9);
        prop_assert!((s1.reward_sum - s2.reward_sum).abs() < 1e-9);
    }
}

#[test]
fn theta_matches_the_normal_equations() {
    for offset in [0.0, 0.6] {
        let dim = 5;
        let mut cfg = PolicyConfig::new(PolicyKind::LinUcb, dim);
        cfg.reward_offset = offset;
        cfg.alpha = 0.8;
        let mut p = Bandit::new(cfg, &["m", "untried"]).unwrap();
        let mut s = Stream(7);
        // b is built here independently: Σ w·(r − offset)·x.
        let mut b_want = vec![0.0; dim];
        for _ in 0..500 {
            let x = s.vector(dim);
            let (r, w) = (s.next_f64(), s.next_f64());
            p.update("m", &x, r, w).unwrap();
            for (bi, xi) in b_want.iter_mut().zip(&x) {
                *bi += w * (r - offset) * xi;
            }
        }
        let (a, a_inv, b, theta) = linear_state(&mut p, "m");
        assert!(max_rel_diff(&b, &b_want) < 1e-12, "offset {offset}");
        let full = unpack(&a, dim);
        for i in 0..dim {
            let at: f64 = (0..dim).map(|j| full[i][j] * theta[j]).sum();
            assert!((at - b[i]).abs() < 1e-9 * b[i].abs().max(1.0));
        }
        // score = offset + θᵀx + α·sqrt(xᵀA⁻¹x); an untried arm scores offset + α·|x|.
        let x = s.vector(dim);
        let sel = p.select(&x, None).unwrap();
        let inv = unpack(&a_inv, dim);
        let width: f64 = (0..dim)
            .map(|i| x[i] * (0..dim).map(|j| inv[i][j] * x[j]).sum::<f64>())
            .sum::<f64>()
            .sqrt();
        let mean: f64 = theta.iter().zip(&x).map(|(t, v)| t * v).sum();
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((sel.scores[0].1 - (offset + mean + 0.8 * width)).abs() < 1e-9);
        assert!((sel.scores[1].1 - (offset + 0.8 * norm)).abs() < 1e-12);
        // The scalar sums keep the raw rewards.
        let stats = p.arm_stats()[0].1;
        assert!(stats.reward_sum > 0.0 && stats.reward_sum <= stats.weight_sum);
    }
}

#[test]
fn impossible_downdate_is_refused_and_changes_nothing() {
    let mut p = policy(PolicyKind::LinUcb, 3, &["m"]);
    p.update("m", &[1.0, 0.0, 0.0], 1.0, 0.2).unwrap();
    let before = p.to_bytes();
    // Removing weight 1 along x when only 0.2 (+ ridge 1) was added would make A singular.
    let err = p
        .reapply("m", &[3.0, 0.0, 0.0], 1.0, 1.0, 1.0, 0.0)
        .unwrap_err();
    assert!(err.to_string().starts_with("old_weight"), "{err}");
    assert_eq!(p.to_bytes(), before);
}

#[test]
fn discount_forgets_old_observations() {
    let dim = 2;
    let mut cfg = PolicyConfig::new(PolicyKind::LinUcb, dim);
    cfg.discount = 0.9;
    let mut p = Bandit::new(cfg, &["m"]).unwrap();
    for _ in 0..200 {
        p.update("m", &[1.0, 0.0], 0.0, 1.0).unwrap();
    }
    for _ in 0..200 {
        p.update("m", &[1.0, 0.0], 1.0, 1.0).unwrap();
    }
    let theta = p.theta("m").unwrap().unwrap().to_vec();
    assert!(theta[0] > 0.85, "recent rewards dominate: {theta:?}");
    let stats = p.arm_stats()[0].1;
    assert!(
        stats.weight_sum < 10.5 && stats.weight_sum > 9.0,
        "{stats:?}"
    );
    // The inverse stays consistent with the (lazily scaled) matrix.
    let (a, a_inv, _, _) = linear_state(&mut p, "m");
    let prod = matmul(&unpack(&a_inv, dim), &unpack(&a, dim));
    assert!((prod[0][0] - 1.0).abs() < 1e-9 && (prod[1][1] - 1.0).abs() < 1e-9);
}

#[test]
fn large_dimensions_select_from_the_f32_mirror_to_about_1e_7() {
    // d > 192 reads an f32 copy of A⁻¹ for the exploration width; it must track the f64
    // master through updates, downdates, re-factorisations and snapshots.
    let dim = 200;
    let mut cfg = PolicyConfig::new(PolicyKind::LinUcb, dim);
    cfg.refactor_every = 25;
    let mut p = Bandit::new(cfg, &["a", "b"]).unwrap();
    let mut s = Stream(21);
    for t in 0..120 {
        let x = s.vector(dim);
        p.update(["a", "b"][t % 2], &x, s.next_f64(), s.next_f64())
            .unwrap();
        if t % 10 == 0 {
            p.reapply("a", &x, 0.0, 0.0, 0.5, 0.5).unwrap();
            p.reapply("a", &x, 0.5, 0.5, 0.2, 0.1).unwrap();
        }
    }
    let mut restored = Bandit::from_bytes(&p.to_bytes()).unwrap();
    for _ in 0..5 {
        let x = s.vector(dim);
        let sel = p.select(&x, None).unwrap();
        assert_eq!(sel, restored.select(&x, None).unwrap());
        let name = p.arm_name(sel.arm).to_owned();
        let (_, a_inv, _, _) = linear_state(&mut p, &name);
        let full = unpack(&a_inv, dim);
        let exact: f64 = (0..dim)
            .map(|i| x[i] * (0..dim).map(|j| full[i][j] * x[j]).sum::<f64>())
            .sum::<f64>()
            .sqrt();
        assert!(
            (sel.uncertainty - exact).abs() < 1e-6 * exact,
            "{} vs {exact}",
            sel.uncertainty
        );
    }
}

#[test]
fn buffered_inverse_corrections_stay_exact_at_large_dimensions() {
    // From d = 193 the Sherman–Morrison corrections of A⁻¹ are buffered and folded in
    // batches; every reader (updates, downdate checks, widths, A⁻¹ itself) must see them.
    let dim = 200;
    let mut cfg = PolicyConfig::new(PolicyKind::LinUcb, dim);
    cfg.refactor_every = 5000; // long Sherman–Morrison stretches
    let mut p = Bandit::new(cfg.clone(), &["a", "b"]).unwrap();
    let mut s = Stream(99);
    let mut kept: Vec<(usize, Vec<f64>, f64, f64)> = Vec::new();
    for t in 0..3000 {
        let arm = s.below(2);
        let x = s.vector(dim);
        let (r, w) = (s.next_f64(), s.next_f64());
        p.update(["a", "b"][arm], &x, r, w).unwrap();
        kept.push((arm, x, r, w));
        if t % 7 == 0 {
            // Replace an earlier observation, often by a smaller weight (a downdate).
            let k = s.below(kept.len());
            let (arm, x, r, w) = kept[k].clone();
            let (r2, w2) = (s.next_f64(), s.next_f64());
            p.reapply(["a", "b"][arm], &x, r, w, r2, w2).unwrap();
            kept[k] = (arm, x, r2, w2);
        }
    }
    // Compare with a policy fed only the final observations (no downdates at all).
    let mut scratch = Bandit::new(cfg, &["a", "b"]).unwrap();
    for (arm, x, r, w) in &kept {
        if *w > 0.0 {
            scratch.update(["a", "b"][*arm], x, *r, *w).unwrap();
        }
    }
    for arm in ["a", "b"] {
        // Widths first: reading the matrices below folds the buffered corrections.
        let x = s.vector(dim);
        let w1 = p.select(&x, Some(&[arm])).unwrap().uncertainty;
        let w2 = scratch.select(&x, Some(&[arm])).unwrap().uncertainty;
        assert!((w1 - w2).abs() < 1e-6 * w2, "{w1} vs {w2}");
        let ai_lazy = p.linear_stats_mut(arm).unwrap().unwrap().a_inv_matrix();
        let (_, ai1, _, t1) = linear_state(&mut p, arm);
        assert!(
            max_rel_diff(&ai_lazy, &ai1) < 1e-12,
            "A⁻¹ with corrections = folded"
        );
        let (_, ai2, _, t2) = linear_state(&mut scratch, arm);
        assert!(
            max_rel_diff(&ai1, &ai2) < 1e-9,
            "{}",
            max_rel_diff(&ai1, &ai2)
        );
        assert!(max_rel_diff(&t1, &t2) < 1e-9, "{}", max_rel_diff(&t1, &t2));
        check_inverse(&mut p, arm, dim);
    }
}
