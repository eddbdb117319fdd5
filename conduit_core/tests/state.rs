//! Snapshots and replica deltas: bit-exact round trips, refusal of corrupt or mismatched
//! bytes without side effects, and merge(a, b) equal to one policy fed both streams.

mod common;

use common::*;
use conduit_core::{Bandit, PolicyConfig, PolicyKind};
use proptest::prelude::*;

fn feed(p: &mut Bandit, arms: &[&str], s: &mut Stream, n: usize, dim: usize) {
    for _ in 0..n {
        let arm = arms[s.below(arms.len())];
        let x = s.vector(dim);
        p.update(arm, &x, s.next_f64(), s.next_f64()).unwrap();
    }
}

const KINDS: [PolicyKind; 7] = PolicyKind::ALL;

/// One applied observation: arm index, x, reward, weight.
type Observation = (usize, Vec<f64>, f64, f64);

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_round_trips_bit_exactly(seed in 1u64..u64::MAX, kind_idx in 0usize..7, n in 0usize..300) {
        let kind = KINDS[kind_idx];
        let dim = 5;
        let mut cfg = PolicyConfig::new(kind, dim);
        cfg.seed = seed;
        cfg.fixed_arm = Some("b".into());
        cfg.refactor_every = 37;
        cfg.reward_offset = 0.25;
        let mut p = Bandit::new(cfg, &["a", "b", "c"]).unwrap();
        let mut s = Stream(seed);
        feed(&mut p, &["a", "b", "c"], &mut s, n, dim);
        let x = s.vector(dim);
        p.select(&x, None).unwrap();
        let bytes = p.to_bytes();
        let mut q = Bandit::from_bytes(&bytes).unwrap();
        prop_assert_eq!(q.to_bytes(), bytes.clone());
        prop_assert_eq!(q.version(), p.version());
        // Same statistics and the same random stream: identical decisions from here on.
        for _ in 0..5 {
            let x = s.vector(dim);
            prop_assert_eq!(p.select(&x, None).unwrap(), q.select(&x, None).unwrap());
            p.update("a", &x, 0.5, 0.5).unwrap();
            q.update("a", &x, 0.5, 0.5).unwrap();
        }
        prop_assert_eq!(p.to_bytes(), q.to_bytes());
    }

    #[test]
    fn corrupt_snapshots_are_refused(seed in 1u64..u64::MAX, pos_frac in 0.0f64..1.0, bit in 0u8..8) {
        let mut p = policy(PolicyKind::LinUcb, 4, &["a", "b"]);
        let mut s = Stream(seed);
        feed(&mut p, &["a", "b"], &mut s, 20, 4);
        let mut bytes = p.to_bytes();
        let pos = ((bytes.len() - 1) as f64 * pos_frac) as usize;
        bytes[pos] ^= 1 << bit;
        prop_assert!(Bandit::from_bytes(&bytes).is_err());
        let full = p.to_bytes();
        prop_assert!(Bandit::from_bytes(&full[..pos]).is_err());
    }

    #[test]
    fn merge_equals_one_policy_fed_both_streams(seed in 1u64..u64::MAX, kind_idx in 0usize..5) {
        let kind = KINDS[kind_idx];
        let dim = 4;
        let arms = ["a", "b", "c"];
        let mut one = policy(kind, dim, &arms);
        let mut left = policy(kind, dim, &arms);
        let mut right = policy(kind, dim, &["a", "b"]);
        right.add_arm("d").unwrap(); // unknown to `left`: added fresh by the merge
        let mut s1 = Stream(seed);
        let mut s2 = Stream(seed ^ 0x5555);
        let mut both = Stream(seed);
        feed(&mut left, &arms, &mut s1, 150, dim);
        feed(&mut one, &arms, &mut both, 150, dim);
        let mut both2 = Stream(seed ^ 0x5555);
        feed(&mut right, &["a", "b", "d"], &mut s2, 120, dim);
        one.add_arm("d").unwrap();
        feed(&mut one, &["a", "b", "d"], &mut both2, 120, dim);

        let left_own = left.take_delta();
        left.merge_delta(&right.take_delta()).unwrap();
        for arm in ["a", "b", "c", "d"] {
            let got = left.arm_stats().into_iter().find(|(n, _)| *n == arm).unwrap().1;
            let want = one.arm_stats().into_iter().find(|(n, _)| *n == arm).unwrap().1;
            prop_assert!((got.weight_sum - want.weight_sum).abs() < 1e-9);
            prop_assert!((got.reward_sum - want.reward_sum).abs() < 1e-9);
            prop_assert_eq!(got.updates, want.updates);
            if kind.is_linear() {
                let (a1, ai1, b1, t1) = linear_state(&mut left, arm);
                let (a2, ai2, b2, t2) = linear_state(&mut one, arm);
                prop_assert!(max_rel_diff(&a1, &a2) < 1e-12);
                prop_assert!(max_rel_diff(&b1, &b2) < 1e-12);
                prop_assert!(max_rel_diff(&ai1, &ai2) < 1e-9);
                prop_assert!(max_rel_diff(&t1, &t2) < 1e-9);
            }
        }
        // No echo: what `left` sends next holds only its own later updates.
        let mut fresh = policy(kind, dim, &arms);
        fresh.merge_delta(&left_own).unwrap();
        let empty = left.take_delta();
        let mut probe = fresh.clone();
        probe.merge_delta(&empty).unwrap();
        prop_assert_eq!(probe.arm_stats().len(), 3);
        for ((_, x), (_, y)) in probe.arm_stats().iter().zip(fresh.arm_stats().iter()) {
            prop_assert_eq!(x, y);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// The merge the binding runs (re-factorising outside the policy's lock) leaves exactly
    /// the bytes of the merge under one hold, for every kind, with and without discounting,
    /// adding or skipping the arms the receiver lacks.
    #[test]
    fn the_shared_merge_is_the_plain_merge(
        seed in 1u64..u64::MAX,
        kind_idx in 0usize..7,
        discounted in any::<bool>(),
        skip_unknown in any::<bool>(),
    ) {
        use conduit_core::merge::merge_delta_shared;
        use std::sync::Mutex;
        let dim = 5;
        let mut cfg = PolicyConfig::new(KINDS[kind_idx], dim);
        cfg.fixed_arm = Some("a".into());
        cfg.discount = if discounted { 0.97 } else { 1.0 };
        cfg.refactor_every = 23;
        let mut sender = Bandit::new(cfg.clone(), &["a", "b", "e"]).unwrap();
        let mut receiver = Bandit::new(cfg, &["a", "b", "c"]).unwrap();
        let mut s = Stream(seed);
        feed(&mut sender, &["a", "b", "e"], &mut s, 60, dim);
        feed(&mut receiver, &["a", "b", "c"], &mut s, 40, dim);
        let x = s.vector(dim);
        sender.reapply("b", &x, 0.0, 0.0, 0.5, 0.5).unwrap();
        sender.reapply("b", &x, 0.5, 0.5, 1.0, 0.25).unwrap();
        let delta = sender.take_delta();
        let shared = Mutex::new(receiver.clone());
        let want = receiver.merge_delta_filtered(&delta, skip_unknown).unwrap();
        let got = merge_delta_shared(&shared, &delta, skip_unknown).unwrap();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(got.is_empty(), !skip_unknown);
        let mut merged = shared.into_inner().unwrap();
        prop_assert_eq!(merged.to_bytes(), receiver.to_bytes());
        prop_assert_eq!(merged.local_version(), receiver.local_version());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Three replicas, each applying its own stream of new observations and re-applications
    /// (rewards and weights on a coarse grid, so that sums cancel exactly now and then),
    /// exchanging deltas at random points: once every delta has been merged everywhere, each
    /// replica holds the statistics of one process that applied every operation.
    #[test]
    fn replicas_exchanging_deltas_converge_to_one_process(seed in 1u64..u64::MAX, kind_idx in 0usize..5) {
        let kind = KINDS[kind_idx];
        let (dim, arms) = (3, ["a", "b", "c"]);
        let grid = |s: &mut Stream, lo: usize| (lo + s.below(5 - lo)) as f64 / 4.0;
        let mut replicas: Vec<Bandit> = (0..3).map(|_| policy(kind, dim, &arms)).collect();
        let mut one = policy(kind, dim, &arms);
        // Per replica: its observations as (arm, x, reward, weight).
        let mut seen: Vec<Vec<Observation>> = vec![Vec::new(); 3];
        let mut s = Stream(seed);
        for _ in 0..120 {
            let r = s.below(3);
            let roll = s.next_f64();
            if roll < 0.3 {
                let delta = replicas[r].take_delta();
                for (j, other) in replicas.iter_mut().enumerate() {
                    if j != r {
                        other.merge_delta(&delta).unwrap();
                    }
                }
            } else if roll < 0.45 && seen[r].len() >= 2 {
                // Two re-ratings of equal weight moving in opposite directions: the arm's
                // scalar sums do not change, its vector part does.
                let (i, j) = (s.below(seen[r].len()), s.below(seen[r].len()));
                let (ai, xi, ri, wi) = seen[r][i].clone();
                let (aj, xj, rj, wj) = seen[r][j].clone();
                if i != j && ai == aj && wi == wj && ri <= 0.75 && rj >= 0.25 {
                    for (x, old_r, new_r) in [(&xi, ri, ri + 0.25), (&xj, rj, rj - 0.25)] {
                        replicas[r].reapply(arms[ai], x, old_r, wi, new_r, wi).unwrap();
                        one.reapply(arms[ai], x, old_r, wi, new_r, wi).unwrap();
                    }
                    seen[r][i].2 = ri + 0.25;
                    seen[r][j].2 = rj - 0.25;
                }
            } else if roll < 0.7 || seen[r].is_empty() {
                let (arm, x) = (s.below(3), s.vector(dim));
                let (reward, weight) = (grid(&mut s, 0), grid(&mut s, 2));
                replicas[r].update(arms[arm], &x, reward, weight).unwrap();
                one.update(arms[arm], &x, reward, weight).unwrap();
                seen[r].push((arm, x, reward, weight));
            } else {
                let k = s.below(seen[r].len());
                let (arm, x, old_r, old_w) = seen[r][k].clone();
                // The router never lowers a weight; the reward may move either way.
                let (new_r, new_w) = (grid(&mut s, 0), old_w.max(grid(&mut s, 2)));
                replicas[r].reapply(arms[arm], &x, old_r, old_w, new_r, new_w).unwrap();
                one.reapply(arms[arm], &x, old_r, old_w, new_r, new_w).unwrap();
                seen[r][k] = (arm, x, new_r, new_w);
            }
        }
        let deltas: Vec<Vec<u8>> = replicas.iter_mut().map(Bandit::take_delta).collect();
        for (r, delta) in deltas.iter().enumerate() {
            for (j, other) in replicas.iter_mut().enumerate() {
                if j != r {
                    other.merge_delta(delta).unwrap();
                }
            }
        }
        for replica in &mut replicas {
            for arm in arms {
                let got = replica.arm_stats().into_iter().find(|(n, _)| *n == arm).unwrap().1;
                let want = one.arm_stats().into_iter().find(|(n, _)| *n == arm).unwrap().1;
                prop_assert!((got.weight_sum - want.weight_sum).abs() < 1e-9);
                prop_assert!((got.reward_sum - want.reward_sum).abs() < 1e-9);
                prop_assert_eq!(got.updates, want.updates);
                if kind.is_linear() {
                    let (a1, _, b1, t1) = linear_state(replica, arm);
                    let (a2, _, b2, t2) = linear_state(&mut one, arm);
                    prop_assert!(max_rel_diff(&a1, &a2) < 1e-12);
                    prop_assert!(max_rel_diff(&b1, &b2) < 1e-12, "{:?} vs {:?}", b1, b2);
                    prop_assert!(max_rel_diff(&t1, &t2) < 1e-9);
                }
            }
        }
    }
}

#[test]
fn a_delta_carries_reapplied_rewards_whose_sums_cancel() {
    // Two re-applications moving +0.25 and -0.25 of reward: Σc and Σdw are 0, but b moved.
    // The arm used to be left out of the delta, so another replica never saw the change.
    for kind in [PolicyKind::LinUcb, PolicyKind::LinTs] {
        let mut p = policy(kind, 4, &["a", "b"]);
        let (x1, x2) = ([1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]);
        p.update("b", &x1, 0.25, 1.0).unwrap();
        p.update("b", &x2, 0.75, 1.0).unwrap();
        let mut replica = policy(kind, 4, &["a", "b"]);
        replica.merge_delta(&p.take_delta()).unwrap();
        p.reapply("b", &x1, 0.25, 1.0, 0.5, 1.0).unwrap();
        p.reapply("b", &x2, 0.75, 1.0, 0.5, 1.0).unwrap();
        replica.merge_delta(&p.take_delta()).unwrap();
        let (_, _, b_local, theta_local) = linear_state(&mut p, "b");
        let (_, _, b_replica, theta_replica) = linear_state(&mut replica, "b");
        assert!(
            max_rel_diff(&b_local, &b_replica) < 1e-12,
            "{b_local:?} vs {b_replica:?}"
        );
        assert!(max_rel_diff(&theta_local, &theta_replica) < 1e-12);
        // Nothing pending afterwards: the next delta holds no arm.
        let mut probe = replica.clone();
        probe.merge_delta(&p.take_delta()).unwrap();
        assert_eq!(probe.to_bytes(), replica.to_bytes());
    }
}

#[test]
fn delta_of_another_dimension_or_family_is_refused_without_change() {
    let mut p = policy(PolicyKind::LinUcb, 4, &["a"]);
    p.update("a", &[1.0, 0.0, 0.0, 0.0], 1.0, 1.0).unwrap();
    let before = p.to_bytes();
    let mut other_dim = policy(PolicyKind::LinUcb, 5, &["a"]);
    other_dim
        .update("a", &[1.0, 0.0, 0.0, 0.0, 0.0], 1.0, 1.0)
        .unwrap();
    let err = p.merge_delta(&other_dim.take_delta()).unwrap_err();
    assert!(err.to_string().contains("dimension 5"), "{err}");
    let mut scalar = policy(PolicyKind::Ucb1, 4, &["a"]);
    scalar.update("a", &[1.0, 0.0, 0.0, 0.0], 1.0, 1.0).unwrap();
    assert!(p.merge_delta(&scalar.take_delta()).is_err());
    assert!(p.merge_delta(b"garbage").is_err());
    assert!(
        p.merge_delta(&p.clone().to_bytes()).is_err(),
        "a snapshot is not a delta"
    );
    assert_eq!(p.to_bytes(), before);
}

#[test]
fn merge_with_a_reward_offset_equals_one_process_and_offsets_must_match() {
    let dim = 4;
    let make = |offset: f64| {
        let mut cfg = PolicyConfig::new(PolicyKind::LinUcb, dim);
        cfg.reward_offset = offset;
        Bandit::new(cfg, &["a", "b"]).unwrap()
    };
    let (mut left, mut right, mut one) = (make(0.5), make(0.5), make(0.5));
    let (mut s1, mut s2) = (Stream(31), Stream(77));
    let (mut t1, mut t2) = (Stream(31), Stream(77));
    feed(&mut left, &["a", "b"], &mut s1, 80, dim);
    feed(&mut right, &["a", "b"], &mut s2, 90, dim);
    feed(&mut one, &["a", "b"], &mut t1, 80, dim);
    feed(&mut one, &["a", "b"], &mut t2, 90, dim);
    left.merge_delta(&right.take_delta()).unwrap();
    for arm in ["a", "b"] {
        let (a1, _, b1, th1) = linear_state(&mut left, arm);
        let (a2, _, b2, th2) = linear_state(&mut one, arm);
        assert!(max_rel_diff(&a1, &a2) < 1e-12);
        assert!(max_rel_diff(&b1, &b2) < 1e-12);
        assert!(max_rel_diff(&th1, &th2) < 1e-9);
    }
    // A delta centred on another offset is refused, naming both, and changes nothing.
    let mut other = make(0.0);
    feed(&mut other, &["a"], &mut s1, 5, dim);
    let before = left.to_bytes();
    let err = left
        .merge_delta(&other.take_delta())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("delta") && err.contains("reward_offset 0"),
        "{err}"
    );
    assert_eq!(left.to_bytes(), before);
}

#[test]
fn format_1_snapshots_and_deltas_still_load_with_offset_zero() {
    // Format 1 had no reward_offset; rebuild such bytes from today's by dropping the field.
    let reseal = |mut body: Vec<u8>| {
        let crc = crc32(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    };
    let mut p = policy(PolicyKind::LinUcb, 3, &["a", "b"]);
    let mut s = Stream(5);
    feed(&mut p, &["a", "b"], &mut s, 30, 3);
    let v2 = p.to_bytes();
    // magic 8, format 2, kind 1, dim 8, seven f64 56, refactor_every 8, mc_samples 4,
    // seed 8, fixed_arm flag 1 (None): the offset follows at byte 96.
    let mut body = v2[..v2.len() - 4].to_vec();
    assert_eq!(body[95], 0);
    body.drain(96..104);
    body[8] = 1;
    let mut q = Bandit::from_bytes(&reseal(body)).unwrap();
    assert_eq!(q.config().reward_offset, 0.0);
    assert_eq!(q.to_bytes(), v2);

    let delta = p.take_delta();
    // magic 8, format 2, linear flag 1, dim 8: the offset follows at byte 19.
    let mut body = delta[..delta.len() - 4].to_vec();
    body.drain(19..27);
    body[8] = 1;
    let mut from_v2 = policy(PolicyKind::LinUcb, 3, &["a", "b"]);
    from_v2.merge_delta(&delta).unwrap();
    let mut from_v1 = policy(PolicyKind::LinUcb, 3, &["a", "b"]);
    from_v1.merge_delta(&reseal(body)).unwrap();
    for arm in ["a", "b"] {
        assert_eq!(
            linear_state(&mut from_v1, arm),
            linear_state(&mut from_v2, arm)
        );
    }
}

#[test]
fn snapshot_from_a_future_format_is_refused() {
    let mut p = policy(PolicyKind::BetaTs, 3, &["a"]);
    let mut bytes = p.to_bytes();
    bytes[8] = 99; // format version, low byte
    let n = bytes.len();
    let crc = crc32(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    let err = Bandit::from_bytes(&bytes).unwrap_err().to_string();
    assert!(err.contains("format version 99"), "{err}");
}

fn crc32(data: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE), independent of the implementation under test.
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
