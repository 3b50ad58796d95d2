//! Soak: many random operations on both sides while ferry watches, then a check that both
//! sides hold exactly what a model of those operations predicts.
//!
//! Alpha works under `a/`, beta under `b/` (so no conflicts can arise), and shared files are
//! handed over turn by turn (edited on one side only after the other side's edit arrived),
//! which exercises both directions on the same paths. The seed is in the failure message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::*;

/// A small deterministic generator (no extra dependency): xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Runs `ops` random operations on one side's own subtree, keeping `model` (relative path ->
/// content) in step with the disk.
fn random_ops(
    rng: &mut Rng,
    root: &Path,
    own: &str,
    model: &mut BTreeMap<String, Vec<u8>>,
    ops: usize,
) {
    for _ in 0..ops {
        let mine: Vec<String> = model
            .keys()
            .filter(|k| k.starts_with(own))
            .cloned()
            .collect();
        let dir = format!("{own}/d{}", rng.below(4));
        match rng.below(10) {
            // Create (also in a new nested directory now and then).
            0..=3 => {
                let sub = if rng.below(3) == 0 {
                    format!("{dir}/n{}", rng.below(3))
                } else {
                    dir.clone()
                };
                let rel = format!("{sub}/f{}.txt", rng.next() % 100_000);
                let data = pseudo_random(rng.next(), 1 + rng.below(6000));
                write(&root.join(&rel), &data);
                model.insert(rel, data);
            }
            // Modify in place (truncate + write) or by an editor's temp file + rename.
            4..=6 if !mine.is_empty() => {
                let rel = &mine[rng.below(mine.len())];
                let data = pseudo_random(rng.next(), 1 + rng.below(6000));
                if rng.below(2) == 0 {
                    write(&root.join(rel), &data);
                } else {
                    let tmp = root.join(format!("{rel}.tmp~"));
                    write(&tmp, &data);
                    rename(&tmp, &root.join(rel));
                }
                model.insert(rel.clone(), data);
            }
            // Rename a file within the side's subtree.
            7 if !mine.is_empty() => {
                let rel = mine[rng.below(mine.len())].clone();
                let to = format!("{dir}/r{}.txt", rng.next() % 100_000);
                if model.contains_key(&to) {
                    continue;
                }
                std::fs::create_dir_all(root.join(&dir)).expect("mkdir");
                rename(&root.join(&rel), &root.join(&to));
                let data = model.remove(&rel).expect("model");
                model.insert(to, data);
            }
            // Delete.
            8..=9 if !mine.is_empty() => {
                let rel = mine[rng.below(mine.len())].clone();
                remove(&root.join(&rel));
                model.remove(&rel);
            }
            _ => {}
        }
    }
}

/// Every regular file under `root`, relative path -> content (directories are compared by the
/// tree check; this is the content model).
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p: PathBuf = e.expect("entry").path();
            let ft = std::fs::symlink_metadata(&p).expect("lstat").file_type();
            if ft.is_dir() {
                go(root, &p, out);
            } else if ft.is_file() {
                let rel = p
                    .strip_prefix(root)
                    .expect("prefix")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, read(&p));
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, root, &mut out);
    out
}

#[test]
fn random_operations_on_both_sides_while_watching_converge_to_the_model() {
    for seed in [0x5eed_0001_u64, 0xfe22_7777, 0x0dd_ba11, 0xc0ff_ee00] {
        let fx = Fixture::new();
        let mut rng = Rng(seed);
        let mut model = BTreeMap::new();
        // A starting tree on each side, synced by the session's first cycle.
        random_ops(&mut rng, &fx.alpha, "a", &mut model, 60);
        random_ops(&mut rng, &fx.beta, "b", &mut model, 60);
        write(&fx.a("shared.txt"), "start");
        model.insert("shared.txt".into(), b"start".to_vec());
        // A first sync that merges into alpha needs --yes (issue 9, item 6).
        let mut s = fx.watch(&["--yes"]);
        for round in 0..15 {
            // Both sides at once, in their own subtrees.
            random_ops(&mut rng, &fx.alpha, "a", &mut model, 25);
            random_ops(&mut rng, &fx.beta, "b", &mut model, 25);
            // The shared file changes hands: edit on one side once the other's edit arrived.
            let (from, to) = if round % 2 == 0 {
                (&fx.alpha, &fx.beta)
            } else {
                (&fx.beta, &fx.alpha)
            };
            let data = format!("round {round} seed {seed:#x}").into_bytes();
            write(&from.join("shared.txt"), &data);
            model.insert("shared.txt".into(), data.clone());
            let target = to.join("shared.txt");
            s.wait_until(
                &format!("round {round} of seed {seed:#x}: shared.txt handed over"),
                || std::fs::read(&target).is_ok_and(|c| c == data),
            );
        }
        s.wait_synced(
            &fx,
            &format!("seed {seed:#x}: the end of the random operations"),
        );
        s.stop();
        assert_eq!(
            files(&fx.alpha),
            model,
            "seed {seed:#x}: alpha differs from the model"
        );
        assert_eq!(
            files(&fx.beta),
            model,
            "seed {seed:#x}: beta differs from the model"
        );
        fx.assert_converged(&[]);
        // Nothing was ever overwritten or deleted behind a side's back: no backup was needed.
        assert_eq!(
            fx.backup_files(),
            Vec::<PathBuf>::new(),
            "seed {seed:#x}: unexpected backups"
        );
    }
}
