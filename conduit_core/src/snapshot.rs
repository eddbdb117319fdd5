//! Versioned binary snapshot of a whole policy (`to_bytes` / `from_bytes`).
//!
//! Layout (little-endian): magic `CNDTSNAP`, format version u16, kind u8, the config, the
//! policy version (format 2: the config ends with `reward_offset`), the random stream's position, the arms (name, sums, pending delta sums,
//! then for linear arms `A`, `A⁻¹` packed, `b`, `θ`, the lazy scale, the re-factorisation
//! counter and the pending delta's base matrix and vector), and a CRC-32 of all of it. Loading checks the
//! checksum and every dimension before building anything, so a snapshot is never half-loaded.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::arm::{Arm, ScalarSums};
use crate::bandit::{check_arm_name, Bandit};
use crate::codec::{Reader, Writer};
use crate::error::{CoreError, CoreResult};
use crate::kernels::packed_len;
use crate::linear::{LinearStats, PENDING};
use crate::policy::{PolicyConfig, PolicyKind};

const MAGIC: &[u8; 8] = b"CNDTSNAP";
/// Bumped on any layout change; older readers refuse newer snapshots. Version 2 added
/// `reward_offset` after `fixed_arm`; version 1 snapshots still load (offset 0).
pub const FORMAT_VERSION: u16 = 2;

fn write_sums(w: &mut Writer, s: &ScalarSums) {
    w.f64(s.weight_sum);
    w.f64(s.reward_sum);
    w.u64(s.updates);
}

fn read_sums(r: &mut Reader<'_>) -> CoreResult<ScalarSums> {
    Ok(ScalarSums {
        weight_sum: r.f64("weight_sum")?,
        reward_sum: r.f64("reward_sum")?,
        updates: r.u64()?,
    })
}

impl Bandit {
    /// Serialises the whole policy. Pending rank-1 terms are folded first (which does not
    /// change any value the policy computes).
    pub fn to_bytes(&mut self) -> Vec<u8> {
        let c = &self.config;
        let per_arm = c.dim
            * 8
            * if c.kind.is_linear() {
                3 * (c.dim + 1) + 3
            } else {
                0
            };
        let mut w = Writer::with_capacity(256 + self.arms.len() * (64 + per_arm));
        w.bytes(MAGIC);
        w.u16(FORMAT_VERSION);
        w.u8(c.kind.code());
        w.u64(c.dim as u64);
        for v in [
            c.alpha,
            c.ridge,
            c.epsilon,
            c.ts_scale,
            c.prior_alpha,
            c.prior_beta,
            c.discount,
        ] {
            w.f64(v);
        }
        w.u64(c.refactor_every);
        w.u32(c.mc_samples);
        w.u64(c.seed);
        match &c.fixed_arm {
            Some(name) => {
                w.u8(1);
                w.str(name);
            }
            None => w.u8(0),
        }
        w.f64(c.reward_offset);
        w.u64(self.version);
        w.bytes(&self.rng.get_seed());
        w.u64(self.rng.get_stream());
        let pos = self.rng.get_word_pos();
        w.u64(pos as u64);
        w.u64((pos >> 64) as u64);
        w.u32(self.arms.len() as u32);
        for arm in &mut self.arms {
            w.str(&arm.name);
            write_sums(&mut w, &arm.sums);
            write_sums(&mut w, &arm.delta);
            match &mut arm.linear {
                Some(lin) => {
                    lin.flush();
                    w.u8(1);
                    w.f64s(&lin.a);
                    w.f64s(&lin.a_inv);
                    w.f64s(&lin.b);
                    w.f64s(&lin.theta);
                    w.f64(lin.scale);
                    w.u64(lin.since_refactor);
                    w.f64s(&lin.delta_base);
                    w.f64s(&lin.delta_rx);
                }
                None => w.u8(0),
            }
        }
        w.finish()
    }

    /// Rebuilds a policy from [`Bandit::to_bytes`] output; refuses anything inconsistent.
    pub fn from_bytes(data: &[u8]) -> CoreResult<Bandit> {
        let mut r = Reader::open(data, MAGIC, "snapshot")?;
        let format = r.u16()?;
        if !(1..=FORMAT_VERSION).contains(&format) {
            return Err(CoreError::corrupt(
                "snapshot",
                format!(
                    "format version {format} is not supported (this build reads {FORMAT_VERSION})"
                ),
            ));
        }
        let kind = PolicyKind::from_code(r.u8()?)?;
        let dim = usize::try_from(r.u64()?)
            .ok()
            .filter(|d| (1..=65_536).contains(d))
            .ok_or_else(|| CoreError::corrupt("dim", "out of range"))?;
        let mut config = PolicyConfig::new(kind, dim);
        config.alpha = r.f64("alpha")?;
        config.ridge = r.f64("ridge")?;
        config.epsilon = r.f64("epsilon")?;
        config.ts_scale = r.f64("ts_scale")?;
        config.prior_alpha = r.f64("prior_alpha")?;
        config.prior_beta = r.f64("prior_beta")?;
        config.discount = r.f64("discount")?;
        config.refactor_every = r.u64()?;
        config.mc_samples = r.u32()?;
        config.seed = r.u64()?;
        config.fixed_arm = match r.u8()? {
            0 => None,
            1 => Some(r.str("fixed_arm")?),
            _ => return Err(CoreError::corrupt("fixed_arm", "bad flag")),
        };
        if format >= 2 {
            config.reward_offset = r.f64("reward_offset")?;
        }
        config
            .validate()
            .map_err(|e| CoreError::corrupt("snapshot", format!("invalid config: {e}")))?;
        let version = r.u64()?;
        let seed = r.array32()?;
        let stream = r.u64()?;
        let pos = u128::from(r.u64()?) | (u128::from(r.u64()?) << 64);
        let n_arms = r.u32()? as usize;
        if n_arms == 0 {
            return Err(CoreError::corrupt("arms", "snapshot has no arms"));
        }
        let mut arms: Vec<Arm> = Vec::with_capacity(n_arms.min(4096));
        let mut names = std::collections::HashSet::new();
        for _ in 0..n_arms {
            let name = r.str("arm")?;
            check_arm_name(&name).map_err(|e| CoreError::corrupt("arm", e.to_string()))?;
            if !names.insert(name.clone()) {
                return Err(CoreError::corrupt("arm", format!("duplicate arm {name:?}")));
            }
            let sums = read_sums(&mut r)?;
            let delta = read_sums(&mut r)?;
            let linear = match (r.u8()?, kind.is_linear()) {
                (1, true) => {
                    let p = packed_len(dim);
                    let mut lin = LinearStats {
                        dim,
                        a_inv_f32: Vec::new(),
                        a: r.f64s(p, "A")?,
                        a_inv: r.f64s(p, "A_inv")?,
                        b: r.f64s(dim, "b")?,
                        theta: r.f64s(dim, "theta")?,
                        scale: r.f64("scale")?,
                        ridge: config.ridge,
                        since_refactor: r.u64()?,
                        pending_w: Vec::with_capacity(PENDING),
                        pending_x: Vec::with_capacity(PENDING * dim),
                        pending_raw: Vec::with_capacity(PENDING),
                        inv_pending_c: Vec::new(),
                        inv_pending_u: Vec::new(),
                        explicit_delta: config.discount < 1.0,
                        delta_base: r.f64s(p, "delta")?,
                        delta_rx: r.f64s(dim, "delta")?,
                    };
                    if lin.scale <= 0.0 {
                        return Err(CoreError::corrupt("scale", "must be > 0"));
                    }
                    lin.refresh_mirror();
                    Some(lin)
                }
                (0, false) => None,
                _ => {
                    return Err(CoreError::corrupt(
                        "arms",
                        "arm statistics do not match the policy kind",
                    ))
                }
            };
            arms.push(Arm {
                name,
                sums,
                linear,
                delta,
            });
        }
        r.end()?;
        let mut bandit = Bandit::with_arms(config, arms);
        bandit.version = version;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(stream);
        rng.set_word_pos(pos);
        bandit.rng = rng;
        Ok(bandit)
    }
}
