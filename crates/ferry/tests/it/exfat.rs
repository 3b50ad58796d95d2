//! A real exFAT filesystem as beta (issue 12 part 4, placement): no permission bits (every file
//! shows `0777`), no symlinks, no hard links, no `O_TMPFILE`, no `renameat2` flags. Ferry must
//! place what it can hold, say once what it cannot keep, never let exFAT's `0777` travel back
//! as a change, and not retry forever. Needs root, `/dev/fuse`, a loop device and Debian's
//! `exfat-fuse` + `exfatprogs` (scripts/test.sh installs them).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A 64 MiB exFAT image mounted (FUSE, through a loop device) at a directory; unmounted and
/// detached when dropped.
struct ExfatMount {
    dir: PathBuf,
    loopdev: String,
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl ExfatMount {
    fn new(image: &Path, dir: &Path) -> ExfatMount {
        for (tool, pkg) in [
            ("mkfs.exfat", "exfatprogs"),
            ("mount.exfat-fuse", "exfat-fuse"),
            ("losetup", "mount"),
        ] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                found,
                "{tool} is missing: apt-get install {pkg} (scripts/test.sh does)"
            );
        }
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the exFAT test mounts a filesystem: run it as root (scripts/test.sh under .ci/run is)"
        );
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: modprobe fuse (or give the container --device /dev/fuse)"
        );
        let f = fs::File::create(image).expect("creating the image");
        f.set_len(64 << 20).expect("sizing the image");
        drop(f);
        run_ok(Command::new("mkfs.exfat").arg(image), "mkfs.exfat");
        // exfat-fuse run by root asks FUSE for a block device: a loop device over the image.
        let loopdev = run_ok(
            Command::new("losetup").args(["-f", "--show"]).arg(image),
            "losetup (a free loop device)",
        );
        let m = ExfatMount {
            dir: dir.to_path_buf(),
            loopdev,
        };
        run_ok(
            Command::new("mount.exfat-fuse").arg(&m.loopdev).arg(dir),
            "mount.exfat-fuse",
        );
        m
    }
}

impl Drop for ExfatMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn count(s: &Session, pred: impl Fn(&serde_json::Value) -> bool) -> usize {
    s.log.iter().filter(|e| pred(e)).count()
}

#[test]
fn an_exfat_beta_gets_what_it_can_hold_and_hears_once_what_it_cannot() {
    let fx = Fixture::new();
    let _mnt = ExfatMount::new(&fx.root.join("exfat.img"), &fx.beta);
    write(&fx.a("notes.txt"), "plain\n");
    write(&fx.a("sub/deep.txt"), "deep\n");
    write(&fx.a("run.sh"), "#!/bin/sh\necho hi\n");
    fs::set_permissions(fx.a("run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("notes.txt", fx.a("link")).expect("symlink");

    let mut s = fx.watch(&[]);
    s.wait_until("the files to reach the exFAT beta", || {
        fs::read(fx.b("notes.txt")).is_ok_and(|d| d == b"plain\n")
            && fs::read(fx.b("sub/deep.txt")).is_ok_and(|d| d == b"deep\n")
            && fs::read(fx.b("run.sh")).is_ok_and(|d| d == b"#!/bin/sh\necho hi\n")
    });
    // Edits both ways still travel (a replacement on exFAT moves the old version aside: no
    // RENAME_EXCHANGE there).
    write(&fx.a("notes.txt"), "edited on alpha\n");
    s.wait_until("alpha's edit to reach beta", || {
        fs::read(fx.b("notes.txt")).is_ok_and(|d| d == b"edited on alpha\n")
    });
    write(&fx.b("sub/deep.txt"), "edited on beta\n");
    s.wait_until("beta's edit to reach alpha", || {
        fs::read(fx.a("sub/deep.txt")).is_ok_and(|d| d == b"edited on beta\n")
    });
    write(&fx.b("new-on-beta.txt"), "made on exFAT\n");
    s.wait_until("beta's new file to reach alpha", || {
        fs::read(fx.a("new-on-beta.txt")).is_ok_and(|d| d == b"made on exFAT\n")
    });
    s.drain();
    let st = s.signal_and_wait(libc::SIGTERM);
    let log = format!("{:#?}\nstderr:\n{}", s.log, s.stderr());

    // exFAT's 0777 never travelled back to alpha as a mode change.
    assert_eq!(mode(&fx.a("run.sh")), 0o755, "{log}");
    assert_eq!(mode(&fx.a("notes.txt")) & 0o111, 0, "{log}");
    assert_eq!(mode(&fx.a("new-on-beta.txt")) & 0o111, 0, "{log}");
    assert!(
        fs::symlink_metadata(fx.a("link")).is_ok_and(|m| m.file_type().is_symlink()),
        "alpha's symlink is kept\n{log}"
    );
    assert!(fs::symlink_metadata(fx.b("link")).is_err(), "{log}");
    // Said once: what the filesystem cannot keep, and the symlink it could not place.
    let notes = count(&s, |e| {
        is(e, "problem")
            && e["side"] == "beta"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot keep permission bits, symlinks, hard links"))
    });
    assert_eq!(notes, 1, "the 'cannot keep' note, once\n{log}");
    let link_errors = count(&s, |e| is(e, "error") && e["path"] == "link");
    assert_eq!(link_errors, 1, "the symlink's error, once\n{log}");
    // No other error, and nothing ever retried forever: every change is one we made.
    let errors = count(&s, |e| is(e, "error"));
    assert_eq!(errors, 1, "{log}");
    let to_alpha: Vec<_> = s
        .log
        .iter()
        .filter(|e| is(e, "change") && e["direction"] == "beta->alpha")
        .map(|e| e["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut to_alpha_sorted = to_alpha.clone();
    to_alpha_sorted.sort();
    assert_eq!(
        to_alpha_sorted,
        ["new-on-beta.txt", "sub/deep.txt"],
        "only beta's own edits travel to alpha\n{log}"
    );
    assert!(matches!(st.code(), Some(0 | 1)), "{st:?}\n{log}");
}
