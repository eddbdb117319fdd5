//! Behaviour of each selection rule: exact ties broken uniformly by the seeded stream, exact or well-estimated
//! propensities, seeded reproducibility, and arm changes that leave other arms untouched.

mod common;

use common::*;
use conduit_core::{Bandit, PolicyConfig, PolicyKind};

fn with(kind: PolicyKind, dim: usize, arms: &[&str], f: impl Fn(&mut PolicyConfig)) -> Bandit {
    let mut c = PolicyConfig::new(kind, dim);
    f(&mut c);
    Bandit::new(c, arms).unwrap()
}

/// Empirical choice frequency of every arm over `n` selections at the same context.
fn frequencies(p: &mut Bandit, x: &[f64], n: usize) -> Vec<f64> {
    let k = p.arm_stats().len();
    let mut counts = vec![0usize; k];
    for _ in 0..n {
        counts[p.select(x, None).unwrap().arm] += 1;
    }
    counts.iter().map(|c| *c as f64 / n as f64).collect()
}

#[test]
fn exact_ties_are_broken_uniformly_with_propensity_one_over_ties() {
    // Cold start: every arm has the same statistics, so every deterministic rule sees an
    // exact tie; each tied arm must be chosen about equally often and logged with 1/ties.
    for kind in [
        PolicyKind::LinUcb,
        PolicyKind::Ucb1,
        PolicyKind::EpsilonGreedy,
    ] {
        let mut p = with(kind, 3, &["a", "b", "c"], |c| c.epsilon = 0.2);
        let x = [1.0, 0.0, 0.0];
        let freq = frequencies(&mut p, &x, 30_000);
        assert!(
            freq.iter().all(|f| (f - 1.0 / 3.0).abs() < 0.015),
            "{kind:?}: {freq:?}"
        );
        for _ in 0..20 {
            let sel = p.select(&x, None).unwrap();
            assert!(
                (sel.propensity - 1.0 / 3.0).abs() < 1e-12,
                "{kind:?}: {sel:?}"
            );
            let sel = p.select(&x, Some(&["c", "b"])).unwrap();
            assert!(["c", "b"].contains(&p.arm_name(sel.arm)));
            assert_eq!(sel.scores.len(), 2);
            assert!((sel.propensity - 0.5).abs() < 1e-12, "{kind:?}: {sel:?}");
        }
    }
    let mut p = policy(PolicyKind::LinUcb, 3, &["a", "b", "c"]);
    let sel = p.select(&[1.0, 0.0, 0.0], None).unwrap();
    assert!(
        (sel.uncertainty - 1.0).abs() < 1e-12,
        "sqrt(x^T (I)^-1 x) = 1"
    );
    // Two arms still tied at the top after the third was shown to be worse.
    p.update("c", &[1.0, 0.0, 0.0], 0.0, 1.0).unwrap();
    let freq = frequencies(&mut p, &[1.0, 0.0, 0.0], 20_000);
    assert!(freq[2] == 0.0 && (freq[0] - 0.5).abs() < 0.02, "{freq:?}");
    assert_eq!(p.select(&[1.0, 0.0, 0.0], None).unwrap().propensity, 0.5);
    // No tie: the argmax with propensity exactly 1.
    p.update("a", &[1.0, 0.0, 0.0], 1.0, 1.0).unwrap();
    let sel = p.select(&[1.0, 0.0, 0.0], None).unwrap();
    assert_eq!((p.arm_name(sel.arm), sel.propensity), ("a", 1.0));
}

#[test]
fn tie_breaking_is_reproducible_for_a_seed() {
    let run = |seed: u64| {
        let mut p = with(PolicyKind::LinUcb, 2, &["a", "b", "c", "d", "e"], |c| {
            c.seed = seed
        });
        (0..40)
            .map(|_| p.select(&[1.0, 0.0], None).unwrap().arm)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[test]
fn linucb_learns_the_better_arm() {
    let mut p = policy(PolicyKind::LinUcb, 2, &["bad", "good"]);
    let mut s = Stream(3);
    for _ in 0..300 {
        let x = [1.0, s.next_f64()];
        p.update("bad", &x, 0.2, 1.0).unwrap();
        p.update("good", &x, 0.8, 1.0).unwrap();
    }
    let arm = p.select(&[1.0, 0.5], None).unwrap().arm;
    assert_eq!(p.arm_name(arm), "good");
}

#[test]
fn epsilon_greedy_propensity_is_exact() {
    let mut p = with(PolicyKind::EpsilonGreedy, 2, &["a", "b", "c", "d"], |c| {
        c.epsilon = 0.2
    });
    p.update("b", &[1.0, 0.0], 1.0, 1.0).unwrap();
    let x = [1.0, 0.0];
    let n = 40_000;
    let freq = frequencies(&mut p, &x, n);
    for _ in 0..50 {
        let sel = p.select(&x, None).unwrap();
        let want = if sel.arm == 1 { 0.8 + 0.05 } else { 0.05 };
        assert!((sel.propensity - want).abs() < 1e-12);
    }
    assert!((freq[1] - 0.85).abs() < 0.01, "{freq:?}");
    assert!((freq[0] - 0.05).abs() < 0.01, "{freq:?}");
}

#[test]
fn thompson_propensities_estimate_the_choice_frequencies() {
    for kind in [PolicyKind::LinTs, PolicyKind::BetaTs] {
        let mut p = with(kind, 2, &["a", "b", "c"], |c| {
            c.mc_samples = 1000;
            c.ts_scale = 1.0;
        });
        let mut s = Stream(11);
        for _ in 0..6 {
            let x = [1.0, s.next_f64()];
            p.update("a", &x, 0.6, 1.0).unwrap();
            p.update("b", &x, 0.5, 1.0).unwrap();
            p.update("c", &x, 0.2, 1.0).unwrap();
        }
        let x = [1.0, 0.5];
        let freq = frequencies(&mut p, &x, 4_000);
        for _ in 0..20 {
            let sel = p.select(&x, None).unwrap();
            assert!(
                (sel.propensity - freq[sel.arm]).abs() < 0.06,
                "{kind:?}: propensity {} vs frequency {}",
                sel.propensity,
                freq[sel.arm]
            );
        }
    }
}

#[test]
fn same_seed_same_choices_other_seed_other_choices() {
    for kind in [
        PolicyKind::LinUcb,
        PolicyKind::Ucb1,
        PolicyKind::LinTs,
        PolicyKind::BetaTs,
        PolicyKind::EpsilonGreedy,
        PolicyKind::Random,
    ] {
        let run = |seed: u64| {
            let mut p = with(kind, 3, &["a", "b", "c", "d"], |c| {
                c.seed = seed;
                c.epsilon = 0.5;
            });
            let mut s = Stream(5);
            (0..200)
                .map(|_| {
                    let x = s.vector(3);
                    let sel = p.select(&x, None).unwrap();
                    let arm = p.arm_name(sel.arm).to_owned();
                    p.update(&arm, &x, s.next_f64(), 1.0).unwrap();
                    sel.arm
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1), "{kind:?}");
        assert_ne!(run(1), run(2), "{kind:?}");
    }
}

#[test]
fn random_is_uniform_and_fixed_is_fixed() {
    let mut r = policy(PolicyKind::Random, 2, &["a", "b", "c", "d"]);
    let freq = frequencies(&mut r, &[1.0, 0.0], 40_000);
    assert!(freq.iter().all(|f| (f - 0.25).abs() < 0.01), "{freq:?}");
    let mut f = with(PolicyKind::Fixed, 2, &["a", "b", "c"], |c| {
        c.fixed_arm = Some("b".into())
    });
    for _ in 0..10 {
        let sel = f.select(&[1.0, 0.0], None).unwrap();
        assert_eq!((f.arm_name(sel.arm), sel.propensity), ("b", 1.0));
    }
    let sel = f.select(&[1.0, 0.0], Some(&["c", "a"])).unwrap();
    assert_eq!(
        f.arm_name(sel.arm),
        "c",
        "falls back to the first allowed arm"
    );
}

#[test]
fn ucb1_tries_unseen_arms_and_prefers_better_means() {
    let mut p = policy(PolicyKind::Ucb1, 2, &["a", "b"]);
    for _ in 0..50 {
        p.update("a", &[1.0, 0.0], 0.9, 1.0).unwrap();
    }
    let arm = p.select(&[1.0, 0.0], None).unwrap().arm;
    assert_eq!(p.arm_name(arm), "b");
    for _ in 0..50 {
        p.update("b", &[1.0, 0.0], 0.1, 1.0).unwrap();
    }
    let arm = p.select(&[1.0, 0.0], None).unwrap().arm;
    assert_eq!(p.arm_name(arm), "a");
}

#[test]
fn adding_and_removing_arms_leaves_the_others_untouched() {
    let mut p = policy(PolicyKind::LinUcb, 3, &["a", "b"]);
    let mut s = Stream(9);
    for _ in 0..50 {
        let x = s.vector(3);
        p.update(["a", "b"][s.below(2)], &x, s.next_f64(), 1.0)
            .unwrap();
    }
    let before = linear_state(&mut p, "a");
    let v = p.version();
    p.add_arm("c").unwrap();
    p.remove_arm("b").unwrap();
    assert_eq!(linear_state(&mut p, "a"), before);
    assert_eq!(p.arm_names().collect::<Vec<_>>(), ["a", "c"]);
    assert_eq!(p.version(), v + 2);
    let fresh = linear_state(&mut p, "c");
    assert!(fresh.2.iter().all(|b| *b == 0.0));
}

/// Discounting exists for drifting model quality, so it must forget what a policy learned
/// about an arm it stopped playing, not only about the arm it plays. Here "b" earns less than
/// "a" at first (0.4 vs 0.8), then more (0.95). Undiscounted UCB1 finds out (ln N keeps
/// growing). With discounting, "b"'s sums used to decay only with "b"'s own observations:
/// once "a"'s Σw saturated at 1/(1 − γ), N stopped growing, "b"'s bonus froze below "a"'s
/// score and "b" was never tried again (last at round 357, 0 of the last 10,000 choices):
/// strictly worse than no discount. Scalar arms now all decay with every new observation, so
/// a neglected arm's bonus grows back (and its Beta posterior widens back to the prior).
#[test]
fn discounting_forgets_arms_that_are_no_longer_played() {
    // Exact decay of an untouched scalar arm: γ per new observation of any arm.
    for kind in [
        PolicyKind::Ucb1,
        PolicyKind::BetaTs,
        PolicyKind::EpsilonGreedy,
    ] {
        let mut p = with(kind, 2, &["a", "b"], |c| c.discount = 0.5);
        p.update("b", &[1.0, 0.0], 1.0, 1.0).unwrap();
        for _ in 0..3 {
            p.update("a", &[1.0, 0.0], 0.2, 1.0).unwrap();
        }
        let b = p.arm_stats()[1].1;
        assert_eq!((b.weight_sum, b.reward_sum, b.updates), (0.125, 0.125, 1));
        // Re-rating a held observation is not a new observation: nothing decays.
        let a = p.arm_stats()[0].1;
        p.reapply("a", &[1.0, 0.0], 0.2, 1.0, 0.6, 1.0).unwrap();
        assert_eq!(p.arm_stats()[1].1, b, "{kind:?}");
        assert!((p.arm_stats()[0].1.reward_sum - (a.reward_sum + 0.4)).abs() < 1e-15);
    }
    // Deterministic rewards, so the run is exactly reproducible.
    for discount in [1.0, 0.99, 0.95] {
        let mut p = with(PolicyKind::Ucb1, 2, &["a", "b"], |c| c.discount = discount);
        let x = [1.0, 0.0];
        let mut b_late = 0;
        for t in 0..20_000 {
            let sel = p.select(&x, None).unwrap();
            let arm = p.arm_name(sel.arm).to_owned();
            let reward = match (arm.as_str(), t < 5_000) {
                ("a", _) => 0.8,
                (_, true) => 0.4,
                (_, false) => 0.95,
            };
            p.update(&arm, &x, reward, 1.0).unwrap();
            b_late += usize::from(t >= 10_000 && arm == "b");
        }
        assert!(
            b_late > 5_000,
            "discount {discount}: b chosen {b_late} of the last 10,000 times"
        );
    }
}
